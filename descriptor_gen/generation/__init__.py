"""Stage 2: language-model backends (openai, hf) and the layers around them: response cache,
retries, concurrency, resumable output, the Batch API, and a local dev server for tests."""
