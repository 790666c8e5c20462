from __future__ import annotations

from pathlib import Path

import pytest
from descriptor_gen.score.tiny import TINY_CLIP_CONFIG  # noqa: F401 - the tests' tiny CLIP

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """Published descriptor files beside the checkout (never copied into the project)."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not beside this checkout")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DESCRIPTOR_GEN_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("DESCRIPTOR_GEN_RESULTS", str(tmp_path_factory.mktemp("results")))


CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def build_tiny_lm(folder: Path, chat_template: bool = True) -> Path:
    """A random 2-layer GPT-2 with a byte-level BPE tokenizer trained here on prompt text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    corpus = [p.read_text() for p in (REPO / "prompts").rglob("*.yaml")]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>", bos_token="<|endoftext|>")
    if chat_template:
        fast.chat_template = CHAT_TEMPLATE
    config = GPT2Config(vocab_size=fast.vocab_size, n_positions=1024, n_embd=32, n_layer=2,
                        n_head=2, bos_token_id=fast.eos_token_id, eos_token_id=fast.eos_token_id)
    import torch

    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_lm(tmp_path_factory.mktemp("tiny-lm"))


def make_clip_checkpoint(folder: Path, name: str, config: dict, seed: int = 0) -> tuple[Path, Path]:
    """An open_clip model config registered as `name` and a random checkpoint for it, in
    `folder`: (config JSON, checkpoint); `descgen tiny-clip` writes its model the same way."""
    from descriptor_gen.score.tiny import write_clip_checkpoint

    return write_clip_checkpoint(folder, name, config, seed)


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny open_clip config and a random checkpoint for it: (config JSON, checkpoint)."""
    return make_clip_checkpoint(tmp_path_factory.mktemp("tiny-clip"), "tiny-clip-test", TINY_CLIP_CONFIG)


def make_image_folder(root: Path, classes: dict[str, int], seed: int = 0) -> Path:
    """Sub-folders of small generated images, one colour family per class."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c, (name, count) in enumerate(classes.items()):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            base = np.array([(c * 80) % 256, (c * 150) % 256, (c * 40 + 60) % 256])
            pixels = np.clip(base + rng.integers(-40, 40, (40, 48, 3)), 0, 255).astype("uint8")
            Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    return root


def write_classes_and_store(folder: Path, classes: list[str], descriptors: dict[int, list[str]],
                            **fields: object) -> tuple[Path, Path]:
    """A class list and a descriptor store of those descriptors, in `folder`."""
    from descriptor_gen.describe.store import DescriptorRecord, write_store

    class_file = folder / "classes.txt"
    class_file.write_text("\n".join(classes) + "\n")
    store = folder / "d.jsonl"
    write_store(store, [DescriptorRecord(class_index=i, class_name=classes[i], descriptors=d,
                                         **{"backend": "test", **fields})
                        for i, d in descriptors.items()])
    return class_file, store


def interrupt_encoding_at(monkeypatch: pytest.MonkeyPatch, batch: int) -> None:
    """Ctrl-C when the image encoder is given its `batch`-th batch (in this process)."""
    import descriptor_gen.score.features as features

    real, calls = features.encode_batch, []

    def interrupted(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        if len(calls) == batch:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(features, "encode_batch", interrupted)


def assert_same_metrics(ours: dict, theirs: dict) -> None:
    """Two engines' metrics: counts and absent values equal, the rest within 1e-5 (fp32
    features of the two engines agree within 1e-5, not bit for bit)."""
    from descriptor_gen.score.result_file import benchmark_metrics

    ours, theirs = benchmark_metrics(ours), benchmark_metrics(theirs)  # a result file's or evaluate's
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        if value is None or isinstance(value, int):
            assert ours[key] == value, key
        else:
            assert ours[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
