"""Tiny copies of each benchmark dataset in the layout its own download unpacks to, built in
the test session: the label files in their real formats, a few small images, and the answers
(label index of each image) the loaders must give."""

from __future__ import annotations

import io
import json
import pickle
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

Built = list[tuple[str, int]]  # (image file name, expected label) of each image


def image(path: Path, seed: int, fmt: str = "JPEG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).save(path, fmt)
    return path


def imagenet1k(root: Path) -> Built:
    """Three of the 1000 WordNet-id folders, scattered over the canonical order."""
    from descriptor_gen.data.wordnet import imagenet_wnids

    wnids = imagenet_wnids()
    out = []
    for seed, index in enumerate((999, 407, 2)):
        for k in range(2):
            name = f"ILSVRC2012_val_{seed * 10 + k:08d}.JPEG"
            image(root / "val" / wnids[index] / name, seed * 10 + k)
            out.append((name, index))
    return out


def imagenetv2(root: Path) -> Built:
    base = root / "imagenetv2-matched-frequency-format-val"
    out = []
    for index in (500, 3, 999):
        name = f"{index}-a.jpeg"
        image(base / str(index) / name, index)
        out.append((name, index))
    return out


def cub(root: Path) -> Built:
    base = root / "CUB_200_2011"
    base.mkdir(parents=True)
    classes = [f"{i:03d}.Species_{i}_Bird" if i > 1 else "001.Black_footed_Albatross"
               for i in range(1, 201)]
    (base / "classes.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(classes, 1)))
    images = [(1, 1, 0), (2, 1, 1), (3, 57, 0), (4, 200, 0), (5, 200, 1)]  # id, class id, is_train
    files = {i: f"{classes[c - 1]}/{classes[c - 1].split('.')[1]}_{i:04d}.jpg" for i, c, _ in images}
    (base / "images.txt").write_text("".join(f"{i} {files[i]}\n" for i, _, _ in images))
    (base / "image_class_labels.txt").write_text("".join(f"{i} {c}\n" for i, c, _ in images))
    (base / "train_test_split.txt").write_text("".join(f"{i} {t}\n" for i, _, t in images))
    for i, _, _ in images:
        image(base / "images" / files[i], i)
    return [(files[i].split("/")[1], c - 1) for i, c, t in images if t == 0]


def food101(root: Path) -> Built:
    base = root / "food-101"
    classes = ["apple_pie", "baby_back_ribs", "waffles"]
    test = {"waffles": ["waffles/1001"], "apple_pie": ["apple_pie/2001", "apple_pie/2002"],
            "baby_back_ribs": []}
    train = {c: [f"{c}/9{i}" for i in range(1)] for c in classes}
    (base / "meta").mkdir(parents=True)
    (base / "meta" / "classes.txt").write_text("\n".join(classes) + "\n")
    (base / "meta" / "test.json").write_text(json.dumps(test))
    (base / "meta" / "train.json").write_text(json.dumps(train))
    out = []
    for seed, (cls, ids) in enumerate(test.items()):
        for rel in ids:
            image(base / "images" / f"{rel}.jpg", seed)
            out.append((f"{rel.split('/')[1]}.jpg", classes.index(cls)))
    return out


def pets(root: Path) -> Built:
    base = root / "oxford-iiit-pet"
    rows = [("Abyssinian_100", 1, 1, 1), ("yorkshire_terrier_12", 37, 2, 25), ("Bengal_3", 6, 1, 2)]
    (base / "annotations").mkdir(parents=True)
    (base / "annotations" / "test.txt").write_text("".join(f"{a} {b} {c} {d}\n" for a, b, c, d in rows))
    (base / "annotations" / "trainval.txt").write_text("Abyssinian_1 1 1 1\n")
    for seed, (name, *_rest) in enumerate(rows):
        image(base / "images" / f"{name}.jpg", seed)
    return [(f"{name}.jpg", label - 1) for name, label, *_ in rows]


def dtd(root: Path) -> Built:
    base = root / "dtd" / "dtd"
    lines = ["zigzagged/zigzagged_0001.jpg", "banded/banded_0002.jpg", "braided/braided_0003.jpg"]
    (base / "labels").mkdir(parents=True)
    (base / "labels" / "test1.txt").write_text("\n".join(lines) + "\n")
    for seed, line in enumerate(lines):
        image(base / "images" / line, seed)
    order = sorted({line.split("/")[0] for line in lines})  # torchvision: sorted folder names
    return [(line.split("/")[1], order.index(line.split("/")[0])) for line in lines]


EUROSAT = ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture",
           "PermanentCrop", "Residential", "River", "SeaLake"]


def eurosat(root: Path) -> Built:
    out = []
    for index, folder in enumerate(EUROSAT):
        name = f"{folder}_1.jpg"
        image(root / "eurosat" / "2750" / folder / name, index)
        out.append((name, index))
    return out


def places365(root: Path) -> Built:
    categories = ["/a/airfield", "/a/apartment_building/outdoor", "/b/bathroom"]
    (root / "val_256").mkdir(parents=True)
    (root / "categories_places365.txt").write_text("".join(f"{c} {i}\n" for i, c in enumerate(categories)))
    files = [("Places365_val_00000001.jpg", 2), ("Places365_val_00000002.jpg", 0)]
    (root / "places365_val.txt").write_text("".join(f"{f} {i}\n" for f, i in files))
    for seed, (name, _) in enumerate(files):
        image(root / "val_256" / name, seed)
    return files


def cars(root: Path) -> Built:
    from scipy.io import savemat

    base = root / "stanford_cars"
    (base / "devkit").mkdir(parents=True)
    names = np.array(["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "smart fortwo Convertible 2012"], dtype=object)
    savemat(base / "devkit" / "cars_meta.mat", {"class_names": names})
    annos = np.zeros(2, dtype=[("fname", "O"), ("class", "O")])
    annos[0] = ("00001.jpg", 3)
    annos[1] = ("00002.jpg", 1)
    savemat(base / "cars_test_annos_withlabels.mat", {"annotations": annos})
    for seed, name in enumerate(("00001.jpg", "00002.jpg")):
        image(base / "cars_test" / name, seed)
    return [("00001.jpg", 2), ("00002.jpg", 0)]


def _aircraft(root: Path, level: str, classes: list[str], rows: list[tuple[str, str]]) -> Built:
    data = root / "fgvc-aircraft-2013b" / "data"
    (data / "images").mkdir(parents=True, exist_ok=True)
    (data / ("variants.txt" if level == "variant" else "families.txt")).write_text("\n".join(classes) + "\n")
    (data / f"images_{level}_test.txt").write_text("".join(f"{i} {c}\n" for i, c in rows))
    for seed, (i, _) in enumerate(rows):
        image(data / "images" / f"{i}.jpg", seed)
    return [(f"{i}.jpg", classes.index(c)) for i, c in rows]


def fgvc_aircraft(root: Path) -> Built:
    return _aircraft(root, "variant", ["707-320", "727-200", "A300B4"],
                     [("0034309", "A300B4"), ("0034958", "707-320")])


def fgvc_aircraft_family(root: Path) -> Built:
    return _aircraft(root, "family", ["A300", "Boeing 707", "Cessna 172"],
                     [("1001", "Cessna 172"), ("1002", "A300")])


def flowers(root: Path) -> Built:
    from scipy.io import savemat

    base = root / "flowers-102"
    base.mkdir(parents=True)
    labels = np.array([1, 102, 50, 3])  # image_00001 .. image_00004, labels from 1
    savemat(base / "imagelabels.mat", {"labels": labels})
    savemat(base / "setid.mat", {"trnid": np.array([1]), "valid": np.array([3]), "tstid": np.array([2, 4])})
    for i in range(1, 5):
        image(base / "jpg" / f"image_{i:05d}.jpg", i)
    return [("image_00002.jpg", 101), ("image_00004.jpg", 2)]


def _cifar(root: Path, folder: str, test: str, train: list[str], meta: str, key: str,
           label_key: str, names: list[str]) -> Built:
    base = root / folder
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    labels = [2, 0, 1]
    data = rng.integers(0, 255, (3, 3072), dtype=np.uint8)
    for name in (test, *train):  # torchvision wants every batch of the download present
        with open(base / name, "wb") as handle:
            pickle.dump({"data": data, label_key: labels}, handle)
    with open(base / meta, "wb") as handle:
        pickle.dump({key: names}, handle)
    return [(f"{test}#{i}", y) for i, y in enumerate(labels)]


def cifar10(root: Path) -> Built:
    return _cifar(root, "cifar-10-batches-py", "test_batch", [f"data_batch_{i}" for i in range(1, 6)],
                  "batches.meta", "label_names", "labels", ["airplane", "automobile", "bird"])


def cifar100(root: Path) -> Built:
    return _cifar(root, "cifar-100-python", "test", ["train"], "meta", "fine_label_names",
                  "fine_labels", ["apple", "aquarium_fish", "baby"])


def sun397(root: Path) -> Built:
    base = root / "SUN397"
    base.mkdir(parents=True)
    classes = ["/a/abbey", "/a/airplane_cabin", "/b/bakery/shop"]
    (base / "ClassName.txt").write_text("\n".join(classes) + "\n")
    out = []
    for seed, (cls, name) in enumerate([("/b/bakery/shop", "sun_aaa.jpg"), ("/a/abbey", "sun_bbb.jpg")]):
        image(base / cls.lstrip("/") / name, seed)
        out.append((name, classes.index(cls)))
    return out


def caltech101(root: Path) -> Built:
    """All 102 category folders (the real names sort in the card's order; here numbered)."""
    base = root / "caltech101" / "101_ObjectCategories"
    out = []
    for index in range(102):
        folder = base / f"c{index:03d}"
        folder.mkdir(parents=True)
        if index in (0, 37, 101):
            image(folder / "image_0001.jpg", index)
            out.append(("image_0001.jpg", index))
    return out


def _subset(root: Path, folder: str, wnid_file: str) -> Built:
    """Three of a 200-class subset's WordNet-id folders: labels are positions in the subset."""
    from descriptor_gen.data.wordnet import imagenet_wnids

    repo = Path(__file__).resolve().parent.parent
    ids = [x for x in (repo / "data" / "classes" / wnid_file).read_text().split("\n")
           if x.strip() and not x.startswith("#")]
    ids = sorted(ids, key=imagenet_wnids().index)
    out = []
    for position in (0, 57, 199):
        name = f"{position}.jpg"
        image(root / folder / ids[position] / name, position)
        out.append((name, position))
    return out


def imagenet_a(root: Path) -> Built:
    return _subset(root, "imagenet-a", "imagenet_a_wnids.txt")


def imagenet_r(root: Path) -> Built:
    return _subset(root, "imagenet-r", "imagenet_r_wnids.txt")


def imagenet_sketch(root: Path) -> Built:
    from descriptor_gen.data.wordnet import imagenet_wnids

    wnids = imagenet_wnids()
    out = []
    for index in (0, 409, 999):
        image(root / "sketch" / wnids[index] / f"sketch_{index}.JPEG", index)
        out.append((f"sketch_{index}.JPEG", index))
    return out


OBJECTNET_FOLDERS = {"air_freshener": "Air freshener", "alarm_clock": "Alarm clock",
                     "backpack": "Backpack", "bench": "Bench"}


def objectnet(root: Path) -> Built:
    """Four ObjectNet folders, three of them covered by ImageNet (the mappings as shipped)."""
    base = root / "objectnet-1.0"
    (base / "mappings").mkdir(parents=True)
    (base / "mappings" / "folder_to_objectnet_label.json").write_text(json.dumps(OBJECTNET_FOLDERS))
    (base / "mappings" / "objectnet_to_imagenet_1k.json").write_text(json.dumps(
        {"Backpack": "backpack, back pack, knapsack, packsack, rucksack, haversack",
         "Alarm clock": "analog clock; digital clock", "Bench": "park bench"}))
    out = []
    for folder in OBJECTNET_FOLDERS:
        name = f"{folder}_1.png"
        image(base / "images" / folder / name, len(out), "PNG")
        if folder != "air_freshener":  # not an ImageNet class: left out, as CLIP_benchmark does
            out.append((name, ["alarm_clock", "backpack", "bench"].index(folder)))
    return out


LAYOUTS: dict[str, Callable[[Path], Built]] = {
    "imagenet-a": imagenet_a, "imagenet-r": imagenet_r, "imagenet_sketch": imagenet_sketch,
    "objectnet": objectnet,
    "imagenet1k": imagenet1k, "imagenetv2": imagenetv2, "cub": cub, "food101": food101,
    "pets": pets, "dtd": dtd, "eurosat": eurosat, "places365": places365, "cars": cars,
    "fgvc_aircraft": fgvc_aircraft, "fgvc_aircraft_family": fgvc_aircraft_family,
    "flowers": flowers, "cifar10": cifar10, "cifar100": cifar100, "sun397": sun397,
    "caltech101": caltech101,
}


def webdataset_folder(folder: Path, shards: list[list[tuple[str, int]]], classes: list[str],
                      split: str = "test") -> list[tuple[str, int]]:
    """A CLIP_benchmark webdataset folder; each shard a list of (key, label)."""
    (folder / split).mkdir(parents=True)
    (folder / "classnames.txt").write_text("\n".join(classes) + "\n")
    (folder / "zeroshot_classification_templates.txt").write_text("a photo of a {c}.\nitap of a {c}.\n")
    (folder / split / "nshards.txt").write_text(f"{len(shards)}\n")
    out = []
    for number, samples in enumerate(shards):
        with tarfile.open(folder / split / f"{number}.tar", "w") as tar:
            for key, label in samples:
                buffer = io.BytesIO()
                rng = np.random.default_rng(abs(hash(key)) % 2**32)
                Image.fromarray(rng.integers(0, 255, (10, 10, 3), dtype=np.uint8)).save(buffer, "PNG")
                for name, payload in ((f"{key}.png", buffer.getvalue()), (f"{key}.cls", str(label).encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
                out.append((key, label))
    return out
