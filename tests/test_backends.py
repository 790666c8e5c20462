from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from descriptor_gen.generation.backends import GenerationParams, HFBackend, Query, make_backend
from descriptor_gen.generation.cache import ResponseCache
from descriptor_gen.errors import DescgenError
from descriptor_gen.generation.generate import GenerationJob, generate
from descriptor_gen.describe.prompts import PromptLibrary, PromptOptions, build_prompt
from descriptor_gen.paths import CachePaths
from descriptor_gen.describe.store import read_store


@pytest.fixture(scope="module")
def library() -> PromptLibrary:
    return PromptLibrary(CachePaths.resolve().prompts_dir)


def _hf(tiny_lm: Path, **kw) -> HFBackend:
    params = GenerationParams(**{"backend": "hf", "model": str(tiny_lm), "device": "cpu",
                                 "max_tokens": 12, **kw})
    return make_backend(params)  # type: ignore[return-value]


def test_hf_batched_left_padded_matches_one_by_one(tiny_lm: Path, library: PromptLibrary) -> None:
    backend = _hf(tiny_lm, temperature=0.0)
    assert backend.tokenizer.padding_side == "left"
    prompts = [build_prompt(c, PromptOptions(examples=n), library).text
               for c, n in (("tench", 2), ("great white shark", 0), ("axolotl", 1))]
    together = asyncio.run(backend.complete([Query(p) for p in prompts]))
    alone = [asyncio.run(backend.complete([Query(p)]))[0] for p in prompts]
    assert [c.texts for c in together] == [c.texts for c in alone]
    assert all(len(c.texts) == 1 for c in together)
    assert together[0].tokens > 0


def test_hf_samples_and_chat_template(tiny_lm: Path, library: PromptLibrary) -> None:
    backend = _hf(tiny_lm, temperature=1.0, api="chat")
    assert backend.chat
    rendered = backend._render(build_prompt("tench", PromptOptions(instruction="role"), library).messages)
    assert rendered.startswith("<|system|>\nYou are a visual description generator.")
    assert rendered.endswith("<|assistant|>\n")
    out = asyncio.run(backend.complete([Query("Q: hello", n=3, seed=1), Query("Q: x", n=3, seed=1)]))
    assert [len(c.texts) for c in out] == [3, 3]


def test_hf_generate_end_to_end_records_noise_as_error(tiny_lm: Path, tmp_path: Path,
                                                       library: PromptLibrary) -> None:
    job = GenerationJob(
        classes=["tench", "goldfish", "axolotl"], out=tmp_path / "o.jsonl", options=PromptOptions(),
        params=GenerationParams(backend="hf", model=str(tiny_lm), device="cpu", max_tokens=16,
                                temperature=0.0, batch_size=2),
        library=library, cache=ResponseCache(tmp_path / "c.sqlite"), max_attempts=2, progress=False,
    )
    summary = generate(job)
    records = read_store(tmp_path / "o.jsonl")
    assert sorted(r.class_index for r in records) == [0, 1, 2]
    assert all(len(r.raw) >= 1 for r in records)
    for record in records:
        assert (record.error is None) == bool(record.descriptors)
    assert summary.requests == sum(len(r.raw) for r in records)
    again = generate(GenerationJob(**{**job.__dict__, "out": tmp_path / "o2.jsonl"}))
    assert again.requests == 0


def test_hf_missing_model_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(DescgenError, match="cannot load Hugging Face model"):
        make_backend(GenerationParams(backend="hf", model=str(tmp_path / "nothing"), device="cpu"))


def test_hf_refuses_cuda_without_gpu(tiny_lm: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(DescgenError, match="CUDA is not available"):
        _hf(tiny_lm, device="cuda")


def test_hf_reports_why_each_answer_ended(tiny_lm: Path, library: PromptLibrary) -> None:
    backend = _hf(tiny_lm, temperature=0.0, max_tokens=6, stop=[])
    prompt = build_prompt("tench", PromptOptions(), library).text
    completion = asyncio.run(backend.complete([Query(prompt)]))[0]
    tokens = backend.tokenizer(completion.texts[0], add_special_tokens=False)["input_ids"]
    # cut at the limit after six tokens; a random model that says its end-of-text token
    # sooner (its weights differ between transformers versions) stopped by itself
    assert 1 <= completion.tokens <= 6
    assert completion.finish_reasons == ["length" if completion.tokens == 6 else "stop"]
    assert 1 <= len(tokens) <= 6


def test_hf_finish_and_lengths() -> None:
    import torch

    from descriptor_gen.generation.backends import _finish, _generated_lengths

    assert _generated_lengths(torch.tensor([[5, 6, 0, 0], [5, 6, 7, 8]]), 0) == [2, 4]
    assert _finish(" a\n- b\nQ: next", ["\nQ:"], 4, 4) == (" a\n- b", "stop")
    assert _finish(" a\n- b", ["\nQ:"], 4, 4) == (" a\n- b", "length")
    assert _finish(" a\n- b", ["\nQ:"], 3, 4) == (" a\n- b", "stop")


def test_hf_identity_changes_when_the_model_folder_changes(tiny_lm: Path, tmp_path: Path) -> None:
    import os
    import shutil

    copy = tmp_path / "lm"
    shutil.copytree(tiny_lm, copy)
    before = _hf(copy).identity()
    config = copy / "config.json"
    os.utime(config, ns=(config.stat().st_atime_ns, config.stat().st_mtime_ns + 10**9))
    after = _hf(copy).identity()
    assert before["files"] and before["files"] != after["files"]
    assert _hf(copy, dtype="bf16").identity()["dtype"] != after["dtype"]
