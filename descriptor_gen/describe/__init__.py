"""Stage 1 and 3: prompts (options, banks, presets), answers -> descriptors (parsers), and the
descriptor store (records, class lists, imports of published files)."""
