"""Every subcommand, run as a user would, over a catalogue of bad inputs: each must end in one
line `descgen: error: ...` and exit status 2, never a traceback, and leave what was already done
as it was. New commands join the table when they are added."""

from __future__ import annotations

import json
import pickle
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import make_image_folder
from descriptor_gen.cli import COMMANDS, main

# A path no one can write, root included: /proc takes no new folders.
UNWRITABLE = Path("/proc/descgen-cannot-write-here/out.json")


@dataclass
class World:
    """Good inputs for every command, and bad files of every kind beside them."""

    root: Path
    config: Path
    checkpoint: Path

    def __getattr__(self, name: str) -> Path:  # w.classes, w.latin1, ... are files under root
        return self.root / FILES[name]


FILES = {
    "classes": "classes.txt", "images": "images", "store": "store.jsonl", "spec": "spec.yaml",
    "annotations": "refer/annotations.jsonl", "refer_images": "refer/images",
    "refer_spec": "refer/spec.yaml", "refs": "refer/refs.p", "instances": "refer/instances.json",
    "results": "results", "published": "published.json", "csv": "manifest.csv",
    "latin1": "latin1.txt", "binary": "binary.bin", "empty": "empty.txt", "folder": "a-folder",
    "missing": "no-such-file.txt", "plain": "plain-file", "under_file": "plain-file/sub/out.json",
    "corrupt_pt": "corrupt.pt", "text_pt": "text.pt", "bad_yaml": "bad.yaml",
    "list_yaml": "list.yaml", "bad_json": "bad.json", "cache": "cache",
    "empty_store": "empty-store.jsonl",
}


def _write_yaml(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, tiny_clip: tuple[Path, Path]) -> World:
    root = tmp_path_factory.mktemp("bad-inputs")
    config, checkpoint = tiny_clip
    w = World(root, config, checkpoint)
    w.classes.write_text("tench\ngoldfish\n")
    make_image_folder(w.images, {"tench": 2, "goldfish": 2})
    w.store.write_text("".join(json.dumps({"class_index": i, "class_name": n, "descriptors": ["fin"],
                                           "backend": "t"}) + "\n"
                               for i, n in enumerate(["tench", "goldfish"])))
    w.published.write_text(json.dumps({"tench": ["fin"], "goldfish": ["orange"]}))
    w.empty_store.write_text("".join(json.dumps({"class_index": i, "class_name": n, "descriptors": [],
                                                 "error": "empty list", "backend": "t"}) + "\n"
                                     for i, n in enumerate(["tench", "goldfish"])))
    w.csv.write_text("path,label\nimages/tench/000.png,tench\n")
    _write_yaml(w.spec, {
        "name": "bad-inputs", "classes": str(w.classes), "dataset": str(w.images),
        "generation": {"base_url": "http://127.0.0.1:9/v1", "model": "dev"},
        "clip": {"model": str(config), "pretrained": str(checkpoint), "device": "cpu", "workers": 0},
        "grid": {"per_example": [1]}, "methods": ["classname"]})
    w.refer_images.mkdir(parents=True)
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(w.refer_images / "scene.png")
    w.annotations.write_text(json.dumps({"image": "scene.png", "expression": "a dog",
                                         "proposals": [[1, 1, 10, 10], [20, 5, 10, 10]],
                                         "target": [1, 1, 10, 10]}) + "\n")
    _write_yaml(w.refer_spec, {
        "name": "markers", "annotations": str(w.annotations), "images": str(w.refer_images),
        "clip": {"model": str(config), "pretrained": str(checkpoint), "device": "cpu"},
        "grid": {"marker": ["circle"]}})
    w.refs.write_bytes(pickle.dumps([{"ref_id": 1, "image_id": 7, "ann_id": 70, "split": "val",
                                      "sentences": [{"sent": "left"}]}], protocol=2))
    w.instances.write_text(json.dumps({"images": [{"id": 7, "file_name": "scene.png"}],
                                       "annotations": [{"id": 70, "image_id": 7, "bbox": [1, 2, 3, 4]}]}))
    w.results.mkdir()
    (w.results / "results.jsonl").write_text(json.dumps(
        {"experiment": "e", "setting": {}, "method": "classname",
         "metrics": {"top1": 0.5, "top5": None, "mean_per_class_recall": 0.5, "mean_entropy": 0.1,
                     "n_images": 2}}) + "\n")
    w.latin1.write_bytes("tench\ncafé\n".encode("latin-1"))
    w.binary.write_bytes(bytes(range(256)) * 4)
    w.empty.write_text("")
    w.folder.mkdir()
    w.plain.write_text("just a file\n")
    w.corrupt_pt.write_bytes(b"PK\x03\x04 this is not a checkpoint" + bytes(64))
    w.text_pt.write_text("hello\n")
    w.bad_yaml.write_text("name: [unclosed\n  - x: {\n")
    w.list_yaml.write_text("- a\n- b\n")
    w.bad_json.write_text("{not json")
    # outputs of earlier runs that the refused runs below point at: they must stay as they are
    shutil.copy(w.store, root / "gen.jsonl")
    shutil.copy(w.store, root / "imported.jsonl")
    shutil.copy(w.annotations, root / "converted.jsonl")
    for folder in ("sweep-out", "refer-out"):
        (root / folder).mkdir()
        shutil.copy(w.results / "results.jsonl", root / folder / "results.jsonl")
    return w


Args = Callable[[World], list[str]]


def _prompt(*extra: str) -> Args:
    return lambda w: ["prompt", "tench", *[e.format(w=w) for e in extra]]


def _parse(*extra: str) -> Args:
    return lambda w: ["parse", *[e.format(w=w) for e in extra]]


def _import(**over: str) -> Args:
    def build(w: World) -> list[str]:
        args = {"src": str(w.published), "--format": "dclip", "--classes": str(w.classes),
                "--out": str(w.root / "imported.jsonl"), **{k: v.format(w=w) for k, v in over.items()}}
        src = args.pop("src")
        return ["import", src, *[x for kv in args.items() for x in kv]]
    return build


def _learn_args(method: str, *extra: str) -> Args:
    def build(w: World) -> list[str]:
        args = {"--dataset": str(w.images), "--classes": str(w.classes), "--shots": "1",
                "--epochs": "1", "--out": str(w.root / "learn-out"), "--model": str(w.config),
                "--pretrained": str(w.checkpoint), "--device": "cpu", "--workers": "0",
                "--cache-dir": str(w.cache)}
        flags = [e.format(w=w) for e in extra]
        pairs = [x for k, v in args.items() if k not in flags for x in (k, v)]
        return ["learn", method, *pairs, "--no-progress", *flags]
    return build


def _one_class(w: World) -> Path:
    folder = w.root / "one-class"
    if not folder.exists():
        make_image_folder(folder, {"tench": 2})
    return folder


def _wds(w: World) -> Path:
    folder = w.root / "wds"
    if not folder.exists():
        import dataset_layouts

        dataset_layouts.webdataset_folder(folder, [[("a", 0), ("b", 1)]], ["tench", "goldfish"])
    return folder


def _b2n(**over: object) -> Args:
    """`descgen base2novel` on a spec over the world's images, with keys replaced."""
    def build(w: World) -> list[str]:
        spec = {"name": "b2n-bad", "datasets": [{"name": "fish", "train": str(w.images),
                                                 "test": str(w.images), "classes": str(w.classes)}],
                "clip": {"model": str(w.config), "pretrained": str(w.checkpoint), "device": "cpu"},
                "shots": 1, "seeds": [1], "columns": {"clip": {"method": "classname"}}, **over}
        path = w.root / "b2n-spec.yaml"
        path.write_text(yaml.safe_dump(spec))
        return ["base2novel", str(path), "--out", str(w.root / "b2n-out"), "--cache-dir", str(w.cache)]
    return build


def _show(*extra: str) -> Args:
    return lambda w: ["show", *[e.format(w=w) for e in extra]]


def _generate(*extra: str) -> Args:
    return lambda w: ["generate", "--classes", str(w.classes), "--out", str(w.root / "gen.jsonl"),
                      "--base-url", "http://127.0.0.1:9/v1", "--no-progress", "--max-attempts", "1",
                      "--cache-dir", str(w.cache), *[e.format(w=w) for e in extra]]


def _flags(command: str, base: Callable[[World], dict[str, str]], *extra: str) -> Args:
    """`command` with good flags from `base`, each replaced by the same flag in `extra`."""
    def build(w: World) -> list[str]:
        given = [e.format(w=w) for e in extra]
        kept = {flag: value for flag, value in base(w).items() if flag not in given}
        return [command, *[x for kv in kept.items() for x in kv], *given]
    return build


def _eval(*extra: str) -> Args:
    return _flags("eval", lambda w: {
        "--dataset": str(w.images), "--classes": str(w.classes), "--descriptors": str(w.store),
        "--model": str(w.config), "--pretrained": str(w.checkpoint), "--device": "cpu",
        "--workers": "0", "--cache-dir": str(w.cache)}, *extra)


def _sweep(*extra: str, spec: str = "{w.spec}") -> Args:
    return lambda w: ["sweep", spec.format(w=w), "--dry-run", "--out", str(w.root / "sweep-out"),
                      "--cache-dir", str(w.cache), *[e.format(w=w) for e in extra]]


def _patched(spec: Callable[[World], Path], patch: dict[str, object],
             then: Callable[[World, Path], list[str]], prefix: str) -> Args:
    """A copy of a spec with keys replaced (`a__b` is key b under a), run by `then`."""
    def build(w: World) -> list[str]:
        data = yaml.safe_load(spec(w).read_text())
        for dotted, value in patch.items():
            keys = dotted.split("__")
            target = data
            for key in keys[:-1]:
                target = target.setdefault(key, {})
            target[keys[-1]] = _formatted(value, w)
        name = f"{prefix}-{abs(hash(json.dumps(patch, sort_keys=True)))}.yaml"
        return then(w, _write_yaml(w.root / "patched" / name, data))
    return build


def _spec_with(**patch: object) -> Args:
    """A sweep spec with keys replaced, run with --dry-run."""
    return _patched(lambda w: w.spec, patch, lambda w, path: [
        "sweep", str(path), "--dry-run", "--out", str(w.root / "sweep-out"),
        "--cache-dir", str(w.cache)], "sweep")


def _formatted(value: object, w: World) -> object:
    if isinstance(value, str):
        return value.format(w=w)
    if isinstance(value, dict):
        return {k: _formatted(v, w) for k, v in value.items()}
    return value


def _suite(w: World, **patch: object) -> list[str]:
    """A suite spec over the food101 card (not under the data root), with keys replaced."""
    data = {"name": "suite", "datasets": ["food101"], "clip": {"model": str(w.config),
            "pretrained": str(w.checkpoint), "device": "cpu"},
            "methods": {"clip": {"method": "classname"}}, **patch}
    path = _write_yaml(w.root / "suites" / f"{abs(hash(json.dumps(data, sort_keys=True)))}.yaml", data)
    return ["suite", str(path), "--out", str(w.root / "suite-out"), "--cache-dir", str(w.cache),
            "--data-root", str(w.folder)]


def _report(folder: str) -> Args:
    return lambda w: ["report", folder.format(w=w)]


def _results_with(content: bytes | str) -> Args:
    def build(w: World) -> list[str]:
        folder = w.root / "reports" / str(abs(hash(content)))
        folder.mkdir(parents=True, exist_ok=True)
        data = content.encode() if isinstance(content, str) else content
        (folder / "results.jsonl").write_bytes(data)
        return ["report", str(folder)]
    return build


def _refer(*extra: str) -> Args:
    return _flags("refer", lambda w: {
        "--annotations": str(w.annotations), "--images": str(w.refer_images),
        "--model": str(w.config), "--pretrained": str(w.checkpoint), "--device": "cpu",
        "--cache-dir": str(w.cache)}, *extra)


def _convert(*extra: str) -> Args:
    return _flags("refer-convert", lambda w: {
        "--refs": str(w.refs), "--instances": str(w.instances),
        "--out": str(w.root / "converted.jsonl")}, *extra)


def _file_then(folder: str, suffix: str, content: object, then: Callable[[str], Args]) -> Args:
    """Write `content` (text, or data to pickle or dump as JSON) to a file, then run `then`."""
    def build(w: World) -> list[str]:
        path = w.root / folder / f"{abs(hash(repr(content)))}{suffix}"
        path.parent.mkdir(exist_ok=True)
        if suffix == ".p":
            path.write_bytes(pickle.dumps(content, protocol=2))
        else:
            path.write_text(content if isinstance(content, str) else json.dumps(content))
        return then(str(path))(w)
    return build


def _annotations(line: str) -> Args:
    return _file_then("anns", ".jsonl", line + "\n", lambda p: _refer("--annotations", p))


def _refs(data: object) -> Args:
    return _file_then("refs", ".p", data, lambda p: _convert("--refs", p))


def _instances(data: object) -> Args:
    return _file_then("inst", ".json", data, lambda p: _convert("--instances", p))


def _refer_sweep(**patch: object) -> Args:
    return _patched(lambda w: w.refer_spec, patch, lambda w, path: [
        "refer-sweep", str(path), "--out", str(w.root / "refer-out"), "--cache-dir", str(w.cache)],
        "refer")


FILE_KINDS = {"latin1": "{w.latin1}", "binary": "{w.binary}", "folder": "{w.folder}",
              "missing": "{w.missing}"}

CASES: dict[str, Args] = {
    # prompt
    "prompt per-example 0": _prompt("--per-example", "0"),
    "prompt per-example -1": _prompt("-k", "-1"),
    "prompt per-example word": _prompt("-k", "seven"),
    "prompt examples -1": _prompt("--examples", "-1"),
    "prompt examples too many": _prompt("--examples", "99"),
    "prompt unknown bank": _prompt("--bank", "nope"),
    "prompt bank bad yaml": _prompt("--bank", "{w.bad_yaml}"),
    "prompt bank list yaml": _prompt("--bank", "{w.list_yaml}"),
    "prompt unknown instruction": _prompt("--instruction", "rol"),
    "prompt instruction empty file": _prompt("--instruction", "@{w.empty}"),
    "prompt blank class name": lambda w: ["prompt", "   "],
    **{f"prompt instruction {k}": _prompt("--instruction", f"@{v}") for k, v in FILE_KINDS.items()},
    "prompt bank latin1": lambda w: _prompt("--bank", str(_copy(w.latin1, w.root / "l.yaml")))(w),
    "prompt bank binary": lambda w: _prompt("--bank", str(_copy(w.binary, w.root / "b.yaml")))(w),
    "prompt bank folder": lambda w: _prompt("--bank", str(_folder(w.root / "bank.yaml")))(w),
    "prompt bank missing": _prompt("--bank", "{w.root}/missing-bank.yaml"),
    "prompt bank without objects": lambda w: _prompt("--bank", str(_text(w.root / "n.yaml", "name: n\nobjects: []\n")))(w),
    "prompt bank unknown key": lambda w: _prompt("--bank", str(_text(w.root / "k.yaml", "name: n\nobjectz: []\n")))(w),
    # parse
    **{f"parse {k}": _parse(v) for k, v in FILE_KINDS.items()},
    "parse unknown parser": _parse("{w.plain}", "--parser", "fancy"),
    # import
    **{f"import src {k}": _import(src=v) for k, v in FILE_KINDS.items()},
    **{f"import classes {k}": _import(**{"--classes": v}) for k, v in FILE_KINDS.items()},
    "import classes empty": _import(**{"--classes": "{w.empty}"}),
    "import src not json": _import(src="{w.bad_json}"),
    "import src not json either": _import(src="{w.list_yaml}"),
    "import src a list": lambda w: _import(src=str(_text(w.root / "list.json", "[1, 2]")))(w),
    "import entry not a list": lambda w: _import(src=str(_text(w.root / "e.json", '{"tench": "fin"}')))(w),
    "import out is a folder": _import(**{"--out": "{w.folder}"}),
    "import out under a file": _import(**{"--out": "{w.under_file}"}),
    "import out unwritable": _import(**{"--out": str(UNWRITABLE)}),
    "import unknown format": _import(**{"--format": "clip"}),
    "import unknown match": _import(**{"--match": "fuzzy"}),
    "import order needs sizes": _import(**{"--match": "order", "--classes": "{w.plain}"}),
    # show
    **{f"show {k}": _show(v) for k, v in FILE_KINDS.items()},
    "show not jsonl": _show("{w.bad_json}"),
    "show unicode digit class": _show("{w.store}", "--class", "³"),
    "show unknown class": _show("{w.store}", "--class", "carp"),
    "show class index beyond": _show("{w.store}", "--class", "99"),
    # generate
    **{f"generate classes {k}": (lambda v: lambda w: _generate()(w)[:1] + ["--classes", v.format(w=w)]
                                 + _generate()(w)[3:])(v) for k, v in FILE_KINDS.items()},
    "generate out is a folder": lambda w: [*_generate()(w), "--out", str(w.folder)],
    "generate out under a file": lambda w: [*_generate()(w), "--out", str(w.under_file)],
    "generate out unwritable": lambda w: [*_generate()(w), "--out", str(UNWRITABLE)],
    "generate cache-dir is a file": lambda w: [*_generate()(w), "--cache-dir", str(w.plain)],
    "generate per-example 0": _generate("-k", "0"),
    "generate temperature 5": _generate("--temperature", "5"),
    "generate temperature nan": _generate("--temperature", "nan"),
    "generate max-tokens 0": _generate("--max-tokens", "0"),
    "generate samples 0": _generate("--samples", "0"),
    "generate concurrency 0": _generate("--concurrency", "0"),
    "generate max-attempts 0": _generate("--max-attempts", "0"),
    "generate unknown backend": _generate("--backend", "vllm"),
    "generate unknown api": _generate("--api", "responses"),
    "generate unknown parser": _generate("--parser", "regex"),
    "generate unknown preset": _generate("--preset", "cupll"),
    "generate unknown style": _generate("--style", "fancy"),
    "generate neighbours without comparative": _generate("--neighbours", "3"),
    "generate questions without cupl": _generate("--questions", "imagenet"),
    "generate unknown question set": _generate("--style", "cupl", "--questions", "nope"),
    "generate neighbours 0": _generate("--style", "comparative", "--neighbours", "0"),
    "generate neighbours as many as classes": _generate(
        "--style", "comparative", "--neighbours", "2", "--clip-model", "{w.config}",
        "--clip-pretrained", "{w.checkpoint}", "--clip-device", "cpu"),
    "generate comparative unknown clip": _generate("--style", "comparative", "--neighbours", "1",
                                                   "--clip-model", "ViT-Nope"),
    "generate hf without model": _generate("--backend", "hf"),
    "generate instruction binary": _generate("--instruction", "@{w.binary}"),
    # eval
    **{f"eval dataset {k}": _eval("--dataset", v) for k, v in FILE_KINDS.items() if k != "folder"},
    "eval dataset empty folder": _eval("--dataset", "{w.folder}"),
    "eval dataset csv latin1": lambda w: _eval("--dataset", str(_copy(w.latin1, w.root / "l.csv")))(w),
    "eval dataset csv binary": lambda w: _eval("--dataset", str(_copy(w.binary, w.root / "b.csv")))(w),
    "eval dataset csv unknown label": lambda w: _eval("--dataset", str(_text(w.root / "u.csv", "images/tench/000.png,carp\n")))(w),
    "eval dataset csv one column": lambda w: _eval("--dataset", str(_text(w.root / "o.csv", "images/tench/000.png\n")))(w),
    **{f"eval classes {k}": _eval("--classes", v) for k, v in FILE_KINDS.items()},
    **{f"eval descriptors {k}": _eval("--descriptors", v) for k, v in FILE_KINDS.items()},
    "eval descriptors not jsonl": _eval("--descriptors", "{w.bad_json}"),
    "eval descriptors other classes": lambda w: _eval("--descriptors", str(_text(
        w.root / "other.jsonl", json.dumps({"class_index": 0, "class_name": "carp",
                                            "descriptors": ["x"], "backend": "t"}) + "\n")))(w),
    "eval model config missing": _eval("--model", "{w.root}/nope.json"),
    "eval model config not json": lambda w: _eval("--model", str(_copy(w.bad_json, w.root / "cfg.json")))(w),
    "eval model config latin1": lambda w: _eval("--model", str(_copy(w.latin1, w.root / "cfg1.json")))(w),
    "eval model config wrong shape": lambda w: _eval("--model", str(_text(w.root / "cfg2.json", "[1, 2]")))(w),
    "eval unknown model": _eval("--model", "ViT-Nope"),
    "eval pretrained missing": _eval("--pretrained", "{w.root}/nope.pt"),
    "eval pretrained corrupt": _eval("--pretrained", "{w.corrupt_pt}"),
    "eval pretrained text": _eval("--pretrained", "{w.text_pt}"),
    "eval pretrained folder": _eval("--pretrained", "{w.folder}"),
    "eval descriptor template field": _eval("--descriptor-template", "{{c}} {{x}}"),
    "eval descriptor template positional": _eval("--descriptor-template", "{{c}} {{0}} {{d}}"),
    "eval descriptor template brace": _eval("--descriptor-template", "{{c}}, {{d"),
    "eval descriptor template no d": _eval("--descriptor-template", "{{c}}"),
    "eval descriptor template name": _eval("--descriptor-template", "dclipp"),
    "eval classname template field": _eval("--classname-template", "a {{c}} {{d}}"),
    "eval classname template brace": _eval("--classname-template", "a }} {{c}}"),
    "eval out is a folder": _eval("--out", "{w.folder}"),
    "eval out under a file": _eval("--out", "{w.under_file}"),
    "eval out unwritable": _eval("--out", str(UNWRITABLE)),
    "eval predictions is a folder": _eval("--predictions", "{w.folder}"),
    "eval predictions under a file": _eval("--predictions", "{w.under_file}"),
    "eval cache-dir is a file": _eval("--cache-dir", "{w.plain}"),
    "eval cache-dir under a file": _eval("--cache-dir", "{w.plain}/cache"),
    "eval batch-size 0": _eval("--batch-size", "0"),
    "eval workers -1": _eval("--workers", "-1"),
    "eval explain -1": _eval("--explain", "-1"),
    "eval explain figure without predictions": _eval("--explain-figure", "{w.root}/why.png"),
    "eval explain figure as jpg": _eval("--predictions", "{w.root}/p.jsonl", "--explain-figure",
                                        "{w.root}/why.jpg"),
    "eval explain figure under a file": _eval("--predictions", "{w.root}/p.jsonl",
                                              "--explain-figure", "{w.plain}/why.png"),
    "eval explain images 0": _eval("--predictions", "{w.root}/p.jsonl", "--explain-figure",
                                   "{w.root}/why.png", "--explain-images", "0"),
    "eval explain figure with learned": _eval("--learned", "{w.folder}", "--explain-figure",
                                              "{w.root}/why.png"),
    "eval fp16 on cpu": _eval("--precision", "fp16"),
    "eval cuda without gpu": _eval("--device", "cuda"),
    "eval unknown device": _eval("--device", "tpu"),
    "eval unknown engine": _eval("--engine", "spark"),
    "eval ray actors 0": _eval("--engine", "ray", "--ray-actors", "0"),
    "eval ray gpus -1": _eval("--engine", "ray", "--ray-gpus", "-1"),
    "eval ray cpus 0": _eval("--engine", "ray", "--ray-cpus", "0"),
    "eval ray actor cpus 0": _eval("--engine", "ray", "--ray-actor-cpus", "0"),
    "eval ray address without port": _eval("--engine", "ray", "--ray-address", "head-node"),
    "eval ray address port word": _eval("--engine", "ray", "--ray-address", "ray://head:http"),
    "eval unknown method": _eval("--method", "best"),
    "eval unknown method option": _eval("--method", "waffle", "--option", "countt=3"),
    "eval method option out of range": _eval("--method", "waffle", "--option", "count=0"),
    "eval method option of another method": _eval("--method", "descriptors", "--option", "repeats=3"),
    "eval method option without equals": _eval("--option", "count"),
    "eval method option broken yaml": _eval("--method", "waffle", "--option", "count=[1"),
    "eval swapped needs descriptors": lambda w: [a for a in _eval("--method", "swapped")(w) if a not in ("--descriptors", str(w.store))],
    "eval no-name template names the class": _eval("--method", "no-name", "--option", "template={{c}}: {{d}}"),
    "eval cupl on a dclip store": _eval("--method", "cupl"),
    "eval comparative on a dclip store": _eval("--method", "comparative"),
    "eval filtered without a source": _eval("--method", "filtered"),
    "eval filtered on the evaluated images": _eval("--method", "filtered", "--option", "source={w.images}", "--option", "shots=1"),
    "eval filtered too few shots": _eval("--method", "filtered", "--option", "source={w.csv}", "--option", "shots=2"),
    "eval filtered source missing": _eval("--method", "filtered", "--option", "source={w.missing}"),
    "eval autoclip unknown base": _eval("--method", "autoclip", "--option", "base=best"),
    "eval autoclip base of two groups": _eval("--method", "autoclip", "--option", "base=descriptors+templates"),
    "eval autoclip beta 1": _eval("--method", "autoclip", "--option", "beta=1"),
    "eval autoclip unknown base option": _eval("--method", "autoclip", "--option", "base=waffle", "--option", "cnt=2"),
    "eval waffle words missing": _eval("--method", "waffle", "--option", "words={w.missing}"),
    "eval waffle words binary": _eval("--method", "waffle", "--option", "words={w.binary}"),
    "eval waffle words empty": _eval("--method", "waffle", "--option", "words={w.empty}"),
    "eval waffle words not a list": _eval("--method", "waffle", "--option", "words={w.bad_json}"),
    "eval concept card on a folder": _eval("--concept", "card"),
    "eval unknown pooling": _eval("--pooling", "max"),
    "eval unknown on-empty": _eval("--on-empty", "skip"),
    "eval method needs descriptors": lambda w: [a for a in _eval()(w) if a not in ("--descriptors", str(w.store))],
    # datasets
    "datasets unknown name": lambda w: ["datasets", "imagenet21k"],
    "datasets card without a root": lambda w: ["datasets", "food101"],
    "datasets root missing": lambda w: ["datasets", "food101", "--data-root", str(w.missing)],
    "datasets root is a file": lambda w: ["datasets", "food101", "--data-root", str(w.plain)],
    "datasets card not under the root": lambda w: ["datasets", "cub", "--data-root", str(w.folder)],
    "datasets wds missing": lambda w: ["datasets", f"wds:{w.missing}"],
    "datasets benchmark wds without root": lambda w: ["datasets", "wds/imagenet1k"],
    "datasets benchmark wds not under root": lambda w: ["datasets", "wds/imagenet1k",
                                                        "--data-root", str(w.folder)],
    "datasets benchmark wds bad template": lambda w: ["datasets", "wds/imagenet1k", "--data-root",
                                                      str(w.root / "{name}")],
    "datasets benchmark wds no name": lambda w: ["datasets", "wds/", "--data-root", str(w.folder)],
    "datasets wds a file": lambda w: ["datasets", f"wds:{w.plain}"],
    "datasets hf missing": lambda w: ["datasets", f"hf:{w.folder}/nothing-here"],
    "datasets hf empty folder": lambda w: ["datasets", f"hf:{w.folder}"],
    "datasets a folder": lambda w: ["datasets", str(w.images)],
    "eval card without a root": _eval("--dataset", "food101"),
    "eval card not under the root": _eval("--dataset", "cub", "--data-root", "{w.folder}"),
    "eval data root is a file": _eval("--dataset", "cub", "--data-root", "{w.plain}"),
    "eval folder without classes": lambda w: [a for a in _eval()(w) if a not in ("--classes", str(w.classes))],
    "eval wds missing": _eval("--dataset", "wds:{w.missing}"),
    # sweep
    **{f"sweep spec {k}": _sweep(spec=v) for k, v in FILE_KINDS.items()},
    "sweep spec bad yaml": _sweep(spec="{w.bad_yaml}"),
    "sweep spec a list": _sweep(spec="{w.list_yaml}"),
    "sweep spec empty": _sweep(spec="{w.empty}"),
    "sweep unknown key": _spec_with(colour="red"),
    "sweep unknown engine": _spec_with(clip__engine="spark"),
    "sweep ray actors 0": _spec_with(clip__engine="ray", clip__ray_actors=0),
    "sweep ray address port 0": _spec_with(clip__engine="ray", clip__ray_address="head:0"),
    "sweep unknown nested key": _spec_with(clip__modle="x"),
    "sweep per_example -1": _spec_with(grid__per_example=[-1]),
    "sweep per_example word": _spec_with(grid__per_example=["seven"]),
    "sweep examples -1": _spec_with(grid__examples=[-1]),
    "sweep workers -1": _spec_with(clip__workers=-1),
    "sweep batch_size 0": _spec_with(clip__batch_size=0),
    "sweep concurrency 0": _spec_with(generation__concurrency=0),
    "sweep temperature nan": _spec_with(generation__temperature=float("nan")),
    "sweep temperature inf": _spec_with(generation__temperature=float("inf")),
    "sweep max_tokens 0": _spec_with(generation__max_tokens=0),
    "sweep several bad keys": _spec_with(generation__max_tokens=0, clip__workers=-1),
    "sweep bad template": _spec_with(clip__descriptor_template="{{c}} {{x}}"),
    "sweep unknown text form": _spec_with(clip__descriptor_template="dclipp"),
    "sweep unknown method": _spec_with(methods=["best"]),
    "sweep unknown method option": _spec_with(methods=[{"method": "waffle", "countt": 3}]),
    "sweep method option out of range": _spec_with(methods=[{"method": "waffle", "repeats": 0}]),
    "sweep style on a method without descriptors": _spec_with(methods=[{"method": "classname", "style": "cupl"}]),
    "sweep comparative neighbours 0": _spec_with(methods=[{"method": "comparative", "neighbours": 0}]),
    "sweep comparative as many neighbours as classes": _spec_with(methods=[{"method": "comparative", "neighbours": 2}]),
    "sweep cupl unknown question set": _spec_with(methods=[{"method": "cupl", "questions": "nope"}]),
    "sweep method without a name": _spec_with(methods=[{"repeats": 3}]),
    "sweep methods not a list": _spec_with(methods="descriptors"),
    "sweep classes missing": _spec_with(classes="{w.missing}"),
    "sweep classes binary": _spec_with(classes="{w.binary}"),
    "sweep dataset missing": _spec_with(dataset="{w.missing}"),
    "sweep unknown clip model": _spec_with(clip__model="ViT-Nope"),
    "sweep checkpoint missing": _spec_with(clip__pretrained="{w.root}/nope.pt"),
    "sweep cuda without gpu": _spec_with(clip__device="cuda"),
    "sweep fp16 on cpu": _spec_with(clip__precision="fp16"),
    "sweep unknown precision": _spec_with(clip__precision="fp8"),
    "sweep unknown bank": _spec_with(grid__bank=["nope"], methods=["descriptors"]),
    "sweep unknown instruction": _spec_with(grid__instruction=["rol"], methods=["descriptors"]),
    "sweep unknown backend": _spec_with(generation__backend="vllm", methods=["descriptors"]),
    "sweep store missing": _spec_with(stores={"published": "{w.missing}"}, methods=["descriptors"]),
    "sweep store unknown format": _spec_with(stores={"p": {"path": "{w.published}", "format": "x"}}),
    "sweep name not text": _spec_with(name=["a", "b"]),
    "sweep set without equals": _sweep("--set", "generation.model"),
    "sweep set broken yaml": _sweep("--set", "grid.per_example=[1, 2"),
    "sweep set through a scalar": _sweep("--set", "name.first=x"),
    "sweep set through a list": _sweep("--set", "methods.first=x"),
    "sweep set non-number": _sweep("--set", "clip.batch_size=many"),
    "sweep set empty key": _sweep("--set", "=3"),
    "sweep only non-number": _sweep("--only", "per_example=abc"),
    "sweep only unknown key": _sweep("--only", "colour=red"),
    "sweep only broken yaml": _sweep("--only", "per_example=[1"),
    "sweep only without equals": _sweep("--only", "per_example"),
    "sweep out is a file": _sweep("--out", "{w.plain}"),
    "sweep cache-dir is a file": _sweep("--cache-dir", "{w.plain}"),
    # suite
    **{f"suite spec {k}": (lambda v: lambda w: ["suite", v.format(w=w)])(v) for k, v in FILE_KINDS.items()},
    "suite unknown dataset": lambda w: _suite(w, datasets=["imagenet21k"]),
    "suite no datasets": lambda w: _suite(w, datasets=[]),
    "suite unknown method": lambda w: _suite(w, methods={"x": {"method": "best"}}),
    "suite unknown method option": lambda w: _suite(w, methods={"x": {"method": "waffle", "options": {"countt": 1}}}),
    "suite swapped without descriptors": lambda w: _suite(w, methods={"x": {"method": "swapped"}}),
    "suite descriptors without a source": lambda w: _suite(w, methods={"x": {"method": "descriptors"}}),
    "suite classname with descriptors": lambda w: _suite(w, methods={"x": {"method": "classname", "descriptors": "dclip"}}),
    "suite unknown descriptors": lambda w: _suite(w, methods={"x": {"method": "descriptors", "descriptors": "waffle"}}),
    "suite unknown key": lambda w: _suite(w, colour="red"),
    "suite bad name": lambda w: _suite(w, name="../x"),
    "suite bad template": lambda w: _suite(w, methods={"x": {"method": "classname", "classname_template": "{c} {d}"}}),
    "suite out is a file": lambda w: [*_suite(w), "--out", str(w.plain)],
    "suite data root is a file": lambda w: [*_suite(w), "--data-root", str(w.plain)],
    # report
    "build missing file": lambda w: ["build", str(w.missing), "--output", str(w.root / "t.csv")],
    "build not a result file": lambda w: ["build", str(w.bad_json), "--output", str(w.root / "t.csv")],
    "build plain text": lambda w: ["build", str(w.plain), "--output", str(w.root / "t.csv")],
    "build a store as a result": lambda w: ["build", str(w.store), "--output", str(w.root / "t.csv")],
    "build folder without results": lambda w: ["build", str(w.folder), "--output",
                                               str(w.root / "t.csv")],
    "build output under a file": lambda w: ["build", str(w.bad_json), "--output",
                                            str(w.under_file)],
    "models no match": lambda w: ["models", "no-such-model-anywhere"],
    "export missing store": lambda w: ["export", str(w.missing), "--format", "dclip", "--out",
                                       str(w.root / "e.json")],
    "export unknown format": lambda w: ["export", str(w.store), "--format", "clip", "--out",
                                        str(w.root / "e.json")],
    "export clip_benchmark without dataset": lambda w: ["export", str(w.store), "--format",
                                                        "clip_benchmark", "--out", str(w.root / "e.json")],
    "export dataset with dclip": lambda w: ["export", str(w.store), "--format", "dclip",
                                            "--dataset", "imagenet1k", "--out", str(w.root / "e.json")],
    "export classes count": lambda w: ["export", str(w.store), "--format", "dclip", "--classes",
                                       str(_text(w.root / "one.txt", "one\n")), "--out",
                                       str(w.root / "e.json")],
    "export bad template": lambda w: ["export", str(w.store), "--format", "cupl",
                                      "--descriptor-template", "{c} only", "--out", str(w.root / "e.json")],
    "export out under a file": lambda w: ["export", str(w.store), "--format", "dclip", "--out",
                                          str(w.under_file)],
    "export on-empty error": lambda w: ["export", str(w.empty_store), "--format", "cupl",
                                        "--on-empty", "error", "--out", str(w.root / "e.json")],
    "export not a store": lambda w: ["export", str(w.bad_json), "--format", "dclip", "--out",
                                     str(w.root / "e.json")],
    "eval models not a pair": _eval("--models", "ViT-B-32 openai"),
    "eval models file bad line": _eval("--models", "{w.classes}"),
    "eval model and pretrained counts": _eval("--model", "{w.config}", "--model", "{w.config}",
                                              "--pretrained", "none", "--pretrained", "none",
                                              "--pretrained", "none"),
    "eval two clips out a json": _eval("--pretrained", "none", "--pretrained", "{w.checkpoint}",
                                       "--out", "{w.root}/r.json"),
    "eval two clips out under a file": _eval("--pretrained", "none", "--pretrained",
                                             "{w.checkpoint}", "--out", "{w.plain}/d"),
    "eval learned with two models": _eval("--learned", "{w.folder}", "--model", "{w.config}",
                                          "--model", "{w.config}"),
    "report missing folder": _report("{w.missing}"),
    "report folder without results": _report("{w.folder}"),
    "report a file": _report("{w.plain}"),
    "report results latin1": _results_with("{\"experiment\": \"caf\xe9\"}\n".encode("latin-1")),
    "report results binary": _results_with(bytes(range(256))),
    "report results empty": _results_with(""),
    "report results a list": _results_with("[1, 2, 3]\n"),
    "report row without metrics": _results_with(json.dumps({"experiment": "e", "setting": {}, "method": "m"}) + "\n"),
    "report metrics not a mapping": _results_with(json.dumps({"experiment": "e", "setting": {}, "method": "m", "metrics": [1]}) + "\n"),
    "report top1 not a number": _results_with(json.dumps({"experiment": "e", "setting": {}, "method": "m", "metrics": {"top1": "high", "mean_per_class_recall": 0, "mean_entropy": 0}}) + "\n"),
    "report torn middle line": _results_with('{"experiment": "e"\n' + json.dumps({"experiment": "e", "setting": {}, "method": "m", "metrics": {"top1": 1, "mean_per_class_recall": 1, "mean_entropy": 0}}) + "\n"),
    # refer
    **{f"refer annotations {k}": _refer("--annotations", v) for k, v in FILE_KINDS.items()},
    "refer annotations not json": _annotations("{not json"),
    "refer annotations a list": _annotations("[1, 2]"),
    "refer nan box": _annotations(json.dumps({"image": "scene.png", "expression": "x", "proposals": [[1, 1, 5, 5]], "target": [1, 1, 5, 5]}).replace("5, 5]]", "NaN, 5]]")),
    "refer infinite box": _annotations(json.dumps({"image": "scene.png", "expression": "x", "proposals": [[1, 1, 5, 5]], "target": [1, 1, 5, 5]}).replace("[1, 1, 5, 5]}", "[1, 1, Infinity, 5]}")),
    "refer box of three": _annotations(json.dumps({"image": "scene.png", "expression": "x", "proposals": [[1, 1, 5]], "target": [1, 1, 5, 5]})),
    "refer empty proposals": _annotations(json.dumps({"image": "scene.png", "expression": "x", "proposals": [], "target": [1, 1, 5, 5]})),
    "refer missing image": _annotations(json.dumps({"image": "nope.png", "expression": "x", "proposals": [[1, 1, 5, 5]], "target": [1, 1, 5, 5]})),
    "refer box outside the image": _annotations(json.dumps({"image": "scene.png", "expression": "x", "proposals": [[100, 100, 5, 5]], "target": [1, 1, 5, 5]})),
    "refer images missing": _refer("--images", "{w.missing}"),
    "refer images a file": _refer("--images", "{w.plain}"),
    "refer unknown marker": _refer("--marker", "star"),
    "refer unknown colour": _refer("--color", "blurple"),
    "refer thickness negative": _refer("--thickness", "-1"),
    "refer thickness nan": _refer("--thickness", "nan"),
    "refer empty ensemble": _refer("--ensemble", ""),
    "refer ensemble of commas": _refer("--ensemble", ",,"),
    "refer subtract negative": _refer("--subtract", "-1"),
    "refer template without field": _refer("--text-template", "This is it"),
    "refer template unknown field": _refer("--text-template", "{{expression}} {{x}}"),
    "refer template brace": _refer("--text-template", "{{expression"),
    "refer out is a folder": _refer("--out", "{w.folder}"),
    "refer predictions under a file": _refer("--predictions", "{w.under_file}"),
    "refer save-marked is a file": _refer("--save-marked", "{w.plain}"),
    "refer fp16 on cpu": _refer("--precision", "fp16"),
    # learn
    "learn unknown method": _learn_args("best"),
    "learn more shots than images": _learn_args("coop", "--shots", "3"),
    "learn a class without images": lambda w: _learn_args("coop", "--classes", str(_text(w.root / "three.txt", "tench\ngoldfish\ncarp\n")))(w),
    "learn dataset missing": _learn_args("coop", "--dataset", "{w.missing}"),
    "learn dataset binary csv": lambda w: _learn_args("coop", "--dataset", str(_copy(w.binary, w.root / "bin.csv")))(w),
    "learn card without a train split": _learn_args("coop", "--dataset", "eurosat:train", "--data-root", "{w.folder}"),
    "learn card unknown split": _learn_args("coop", "--dataset", "food101:val", "--data-root", "{w.folder}"),
    "learn out is a file": _learn_args("coop", "--out", "{w.plain}"),
    "learn out unwritable": _learn_args("coop", "--out", str(UNWRITABLE.parent)),
    "learn unknown option": _learn_args("coop", "--option", "nctx=3"),
    "learn bad option value": _learn_args("coop", "--option", "position=top"),
    "learn option of another method": _learn_args("coop", "--option", "alpha=2"),
    "learn shots 0": _learn_args("coop", "--shots", "0"),
    "learn epochs -1": _learn_args("coop", "--epochs", "-1"),
    "learn lr 0": _learn_args("tip-adapter-f", "--lr", "0"),
    "learn kgcoop without descriptors": _learn_args("kgcoop"),
    "learn descriptors of other classes": lambda w: _learn_args("kgcoop", "--descriptors", str(_text(w.root / "other.jsonl", json.dumps({"class_index": 0, "class_name": "carp", "descriptors": ["fin"], "backend": "t"}) + "\n")))(w),
    "learn padding wider than the image": _learn_args("padding", "--option", "pad=16"),
    "learn resume without a run": _learn_args("coop", "--resume", "--out", "{w.root}/no-run-here"),
    "learn unknown model": _learn_args("coop", "--model", "ViT-Nope"),
    "learn cuda without gpu": _learn_args("coop", "--device", "cuda"),
    **{f"generate base url {name}": (lambda url: lambda w: ["generate", "--classes", str(w.classes), "--base-url", url, "--out", str(w.root / "gen-out.jsonl"), "--cache-dir", str(w.cache), "--no-progress"])(url)
       for name, url in {"empty item": "http://127.0.0.1:9/v1,,http://127.0.0.1:8/v1", "commas": ",,,",
                         "words": "not a url", "ftp": "ftp://127.0.0.1/v1", "port": "http://127.0.0.1:99999/v1",
                         "no host": "http://", "space": "http://127.0.0.1:9/ v1", "ipv6": "http://[::1/v1"}.items()},
    "eval learned missing": _eval("--learned", "{w.missing}"),
    "eval learned folder without a run": _eval("--learned", "{w.folder}"),
    "learn epochs beyond any run": _learn_args("coop", "--epochs", str(2**70)),
    "learn seed beyond the generators": _learn_args("coop", "--seed", str(2**64)),
    "learn context longer than the text tower": _learn_args("coop", "--option", "n_ctx=80"),
    "learn lr inf": _learn_args("coop", "--lr", "inf"),
    "learn lr nan": _learn_args("coop", "--lr", "nan"),
    "learn cocoop views unbounded": _learn_args("cocoop", "--views", "1000000000"),
    "learn tip alpha nan": _learn_args("tip-adapter", "--option", "alpha=nan"),
    "learn tip beta inf": _learn_args("tip-adapter", "--option", "beta=inf"),
    "learn kgcoop weight inf": _learn_args("kgcoop", "--option", "weight=.inf", "--descriptors", "{w.store}"),
    "learn kgcoop guided by an empty store": _learn_args("kgcoop", "--descriptors", "{w.empty_store}"),
    "learn into a file": _learn_args("coop", "--out", "{w.plain}"),
    "learn into a foreign folder": _learn_args("coop", "--out", "{w.results}"),
    "eval ray stall bound zero": _eval("--engine", "ray", "--ray-stall-seconds", "0"),
    "eval ray stall bound nan": _eval("--engine", "ray", "--ray-stall-seconds", "nan"),
    "eval unknown decoder": _eval("--decode", "nvjpeg"),
    "eval torch decoding on ray": _eval("--decode", "torch", "--engine", "ray"),
    "eval draft decoding on ray": _eval("--decode", "pil-draft", "--engine", "ray"),
    "sweep unknown decoder": _spec_with(clip__decode="nvjpeg"),
    "waffle count unbounded": _eval("--method", "waffle", "--option", "count=1000000000"),
    "waffle repeats unbounded": _eval("--method", "waffle", "--option", "repeats=1000000000"),
    "waffle seeds past the largest": _eval("--method", "waffle", "--option", f"seed={2**31 - 3}"),
    "eval learned with a method": _eval("--learned", "{w.folder}", "--method", "classname"),
    "eval learned with an option": _eval("--learned", "{w.folder}", "--option", "repeats=2"),
    "eval learned with a text form": _eval("--learned", "{w.folder}", "--pooling", "mean"),
    "eval learned with a concept": _eval("--learned", "{w.folder}", "--concept", "fish"),
    "learn kgcoop on a card without its CoOp split file": _learn_args("kgcoop", "--dataset", "dtd:val", "--data-root", "{w.folder}"),
    "waffle with a repeated seed": _eval("--method", "waffle", "--option", "seed=[1, 1]"),
    "waffle with repeats beside a seed list": _eval("--method", "waffle", "--option", "seed=[1, 2]", "--option", "repeats=3"),
    "filtered with unknown inputs": _eval("--method", "filtered", "--option", "source={w.folder}", "--option", "inputs=raw"),
    # learned prompts of issue 22, base to new
    "learn maple deeper than the model": _learn_args("maple", "--option", "depth=9"),
    "learn vpt deeper than the model": _learn_args("vpt", "--option", "depth=3"),
    "learn ivlp text deeper than the model": _learn_args("ivlp", "--option", "depth_text=3", "--option", "depth_vision=1"),
    "learn maple context past its init words": _learn_args("maple", "--option", "depth=1", "--option", "n_ctx=4", "--option", "ctx_init=a photo"),
    "learn maple context past the text tower": _learn_args("maple", "--option", "n_ctx=80"),
    "learn maple guided without descriptors": _learn_args("maple", "--option", "depth=1", "--option", "guide=descriptors"),
    "learn vpt no prompt tokens": _learn_args("vpt", "--option", "n_ctx=0"),
    "learn plot no prompts": _learn_args("plot", "--option", "n_prompts=0"),
    "learn plot weight unknown": _learn_args("plot", "--option", "weight=2"),
    "learn unknown subsample": _learn_args("coop", "--subsample", "novel"),
    "learn subsample of one class": lambda w: _learn_args("coop", "--subsample", "new", "--classes", str(_text(w.root / "one.txt", "tench\n")), "--dataset", str(_one_class(w)))(w),
    "eval unknown subsample": _eval("--subsample", "novel"),
    "eval subsample of one class": lambda w: ["eval", "--subsample", "base", "--method", "classname", "--classes", str(_text(w.root / "one.txt", "tench\n")), "--dataset", str(_one_class(w)), "--model", str(w.config), "--pretrained", str(w.checkpoint), "--device", "cpu", "--workers", "0", "--cache-dir", str(w.cache)],
    "eval subsample of a stream": lambda w: ["eval", "--subsample", "base", "--method", "classname", "--dataset", f"wds:{_wds(w)}", "--model", str(w.config), "--pretrained", str(w.checkpoint), "--device", "cpu", "--workers", "0", "--cache-dir", str(w.cache)],
    **{f"base2novel spec {k}": (lambda v: lambda w: ["base2novel", v.format(w=w), "--cache-dir", str(w.cache)])(v) for k, v in FILE_KINDS.items()},
    "base2novel unknown key": _b2n(shotz=3),
    "base2novel column of both kinds": _b2n(columns={"x": {"learned": "coop", "method": "classname"}}),
    "base2novel unknown learned method": _b2n(columns={"x": {"learned": "best"}}),
    "base2novel bad column option": _b2n(columns={"x": {"learned": "maple", "options": {"depth": 0}}}),
    "base2novel beside an unknown column": _b2n(columns={"x": {"learned": "kgcoop", "beside": "coop"}}),
    "base2novel no seeds": _b2n(seeds=[]),
    "base2novel no dataset readable": _b2n(datasets=[{"name": "food101"}]),
    # serve, tiny-clip
    **{f"serve answers {k}": (lambda v: lambda w: ["serve", "--answers", v.format(w=w)])(v) for k, v in FILE_KINDS.items()},
    "serve answers a list": lambda w: ["serve", "--answers", str(_text(w.root / "answers.json", '["tench"]'))],
    "serve answers of strings": lambda w: ["serve", "--answers", str(_text(w.root / "answers2.json", '{"tench": "fins"}'))],
    "serve port out of range": lambda w: ["serve", "--port", "70000"],
    "serve latency negative": lambda w: ["serve", "--latency", "-1"],
    "tiny-clip into a file": lambda w: ["tiny-clip", str(w.plain)],
    "tiny-clip seed negative": lambda w: ["tiny-clip", str(w.root / "tiny-out"), "--seed", "-1"],
    # concept
    "concept without classes": lambda w: ["concept"],
    "concept classes and dataset": lambda w: ["concept", "--classes", str(w.classes), "--dataset", "cub"],
    **{f"concept classes {k}": (lambda v: lambda w: ["concept", "--classes", v.format(w=w)])(v) for k, v in FILE_KINDS.items()},
    "concept card without a root": lambda w: ["concept", "--dataset", "cub"],
    "concept unknown backend": lambda w: ["concept", "--classes", str(w.classes), "--backend", "vllm"],
    "concept hf without model": lambda w: ["concept", "--classes", str(w.classes), "--backend", "hf"],
    "concept server down": lambda w: ["concept", "--classes", str(w.classes), "--base-url", "http://127.0.0.1:9/v1", "--max-attempts", "1", "--cache-dir", str(w.cache)],
    # refer-convert
    **{f"refer-convert refs {k}": _convert("--refs", v) for k, v in FILE_KINDS.items()},
    **{f"refer-convert instances {k}": _convert("--instances", v) for k, v in FILE_KINDS.items()},
    "refer-convert refs a dict": _refs({"a": 1}),
    "refer-convert refs of numbers": _refs([1, 2]),
    "refer-convert ref without image": _refs([{"ref_id": 1, "ann_id": 70, "sentences": []}]),
    "refer-convert sentences not a list": _refs([{"ref_id": 1, "image_id": 7, "ann_id": 70, "sentences": 3}]),
    "refer-convert instances not json": _convert("--instances", "{w.bad_json}"),
    "refer-convert instances a list": _instances([1, 2]),
    "refer-convert instance without bbox": _instances({"images": [{"id": 7, "file_name": "s.png"}], "annotations": [{"id": 70, "image_id": 7}]}),
    "refer-convert bbox of words": _instances({"images": [{"id": 7, "file_name": "s.png"}], "annotations": [{"id": 70, "image_id": 7, "bbox": ["a", 2, 3, 4]}]}),
    "refer-convert image without id": _instances({"images": [{"file_name": "s.png"}], "annotations": []}),
    "refer-convert out is a folder": _convert("--out", "{w.folder}"),
    "refer-convert out unwritable": _convert("--out", str(UNWRITABLE)),
    # refer-sweep
    **{f"refer-sweep spec {k}": (lambda v: lambda w: ["refer-sweep", v.format(w=w)])(v) for k, v in FILE_KINDS.items()},
    "refer-sweep spec bad yaml": lambda w: ["refer-sweep", str(w.bad_yaml)],
    "refer-sweep unknown key": _refer_sweep(subtrakt=3),
    "refer-sweep thickness negative": _refer_sweep(grid__thickness=[-0.1]),
    "refer-sweep unknown marker": _refer_sweep(grid__marker=["star"]),
    "refer-sweep unknown colour": _refer_sweep(grid__color=["blurple"]),
    "refer-sweep subtract negative": _refer_sweep(subtract=-5),
    "refer-sweep annotations missing": _refer_sweep(annotations="{w.missing}"),
    "refer-sweep images missing": _refer_sweep(images="{w.missing}"),
    "refer-sweep bad template": _refer_sweep(text_template="no field"),
}


def _folder(path: Path) -> Path:
    path.mkdir(exist_ok=True)
    return path


def _copy(src: Path, dst: Path) -> Path:
    shutil.copy(src, dst)
    return dst


def _text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under the world but the caches and output locks, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and "cache" not in p.relative_to(folder).parts
            and p.suffix != ".lock"}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_clean_line(world: World, case: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    args = CASES[case](world)
    before = _tree(world.root)
    code = main(args)  # an exception escaping here is a traceback: the test fails
    out, err = capsys.readouterr()
    lines = err.strip().split("\n")
    assert code == 2, f"{case}: exit {code}, stderr: {err!r}"
    assert len(lines) == 1 and lines[0].startswith("descgen: error: "), f"{case}: {err!r}"
    assert "Traceback" not in err and "For further information visit" not in err
    assert _tree(world.root) == before, f"{case} changed files"  # nothing done is lost


def test_every_command_is_in_the_table() -> None:
    commands = {c.name for c in COMMANDS}
    covered = {case.split()[0] for case in CASES}
    assert commands <= covered, f"commands without bad-input cases: {commands - covered}"


def test_catalogue_size() -> None:
    assert len(CASES) >= 200
