"""CLIP_benchmark's webdataset folders (`clip-benchmark/wds_*`), streamed with `webdataset`.

    DIR/classnames.txt                              class names, one a line, in label order
    DIR/zeroshot_classification_templates.txt       templates with {c}
    DIR/SPLIT/nshards.txt                           the number of shards
    DIR/SPLIT/0.tar, 1.tar, ...                     samples: KEY.{webp,png,jpg,jpeg} + KEY.cls

Shards are read in order, never unpacked to disk; images are decoded in the DataLoader's
workers, each worker taking every n-th shard, and features are put back in shard order.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import IterableDataset

from descriptor_gen.data.images import LabelledImages
from descriptor_gen.errors import DescgenError
from descriptor_gen.hashing import files_fingerprint
from descriptor_gen.inputs import lines_of, read_text

IMAGE_KEYS = ("webp", "png", "jpg", "jpeg")


def load_wds(spec: str) -> LabelledImages:
    """`wds:DIR[:SPLIT]` (split `test` by default): its shards, class names and templates."""
    folder, _, split = spec[4:].partition(":") if not Path(spec[4:]).is_dir() else (spec[4:], "", "")
    root, split = Path(folder), split or "test"
    names_file = root / "classnames.txt"
    if not names_file.is_file():
        raise DescgenError(f"{spec}: no {names_file} (a CLIP_benchmark webdataset folder holds"
                           " classnames.txt and SPLIT/0.tar ...)")
    classes = [n.strip() for n in lines_of(read_text(names_file, "class list")) if n.strip()]
    count_file = root / split / "nshards.txt"
    if not count_file.is_file():
        raise DescgenError(f"{spec}: no {count_file} (split {split!r})")
    text = read_text(count_file, "shard count").strip()
    if not text.isdigit() or int(text) < 1:
        raise DescgenError(f"{count_file}: expected the number of shards, got {text[:40]!r}")
    shards = [str(root / split / f"{i}.tar") for i in range(int(text))]
    absent = [s for s in shards if not Path(s).is_file()]
    if absent:
        raise DescgenError(f"{spec}: nshards.txt says {text} shards but {absent[0]} is missing")
    for shard in shards:
        check_shard(Path(shard))
    return LabelledImages(spec, [], None, classes=classes, shards=shards,
                          fingerprint=f"wds:{files_fingerprint(shards)}")


def check_shard(path: Path) -> None:
    """A shard is a whole tar file: every member's data within the file. Reads the headers
    only (a seek past each member's data). A shard that is not a tar, or was cut off, is
    refused naming it and what was lost, before any image is encoded or trained on."""
    import tarfile

    size = path.stat().st_size
    try:
        with tarfile.open(path, mode="r:") as archive:
            last = None
            for member in archive:
                end = member.offset_data + member.size
                if end > size:
                    raise DescgenError(f"{path}: cut off in {member.name} ({end - size} bytes of it"
                                       " missing, and every sample after it); fetch the shard again")
                last = member.name
            if size - archive.offset < 2 * tarfile.BLOCKSIZE:
                raise DescgenError(f"{path}: cut off after {last or 'its start'} (no end-of-archive"
                                   " marker: the samples after it are lost); fetch the shard again")
    except tarfile.TarError as exc:
        raise DescgenError(f"{path}: not a whole tar file ({exc}); fetch the shard again") from exc


def wds_templates(spec: str) -> list[str] | None:
    """The folder's zero-shot templates (`{c}` becomes `{}`), if it has them."""
    folder = Path(spec[4:].partition(":")[0] if not Path(spec[4:]).is_dir() else spec[4:])
    path = folder / "zeroshot_classification_templates.txt"
    if not path.is_file():
        return None
    return [t.replace("{c}", "{}") for t in lines_of(read_text(path, "template file")) if t.strip()]


class ShardStream(IterableDataset):
    """(image tensor, readable?, error, label, shard, position, key) for every sample."""

    def __init__(self, shards: list[str], preprocess: Any, size: int) -> None:
        self.shards, self.preprocess, self.size = shards, preprocess, size

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        import webdataset as wds

        worker = torch.utils.data.get_worker_info()
        mine = list(enumerate(self.shards))
        if worker is not None:
            mine = mine[worker.id :: worker.num_workers]
        for shard_index, shard in mine:
            samples = wds.WebDataset(shard, shardshuffle=False, nodesplitter=None,
                                     workersplitter=None, empty_check=False)
            for position, sample in enumerate(samples):
                yield (*decode_sample(sample, self.preprocess, self.size), shard_index, position,
                       f"{shard}#{sample['__key__']}")


def decode_sample(sample: dict[str, Any], preprocess: Any, size: int) -> tuple[Any, bool, str, int]:
    """(image tensor, readable?, error, label) of one sample; the label is -1 when missing."""
    label = _label(sample)
    data = next((sample[k] for k in IMAGE_KEYS if k in sample), None)
    try:
        if data is None:
            raise ValueError(f"no image ({', '.join(IMAGE_KEYS)}) in the sample")
        with Image.open(io.BytesIO(data)) as image:
            return preprocess(image.convert("RGB")), True, "", label
    except Exception as exc:  # noqa: BLE001 - any decoder failure marks the sample unreadable
        return torch.zeros(3, size, size), False, f"{type(exc).__name__}: {exc}", label


def _label(sample: dict[str, Any]) -> int:
    raw = sample.get("cls")
    try:
        return int(raw.decode() if isinstance(raw, bytes) else raw)
    except (TypeError, ValueError):
        return -1  # counted as unreadable by the caller
