"""The package's shape, read from the source (imports inside functions count): imports point
down the pipeline's stages, no module cycle, no function over 80 lines, and every cache file
name is defined once (`descriptor_gen/paths.py`); `tests/oldest.txt` pins pyproject's floors."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "descriptor_gen"
RANKS = {"describe": 1, "generation": 2, "data": 2, "score": 3, "learn": 4, "experiments": 5,
         "visual": 6}
TOP = {"descriptor_gen", "descriptor_gen.cli", "descriptor_gen.entry", "descriptor_gen.__main__"}
MAX_LINES = 80


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The package's modules an import statement loads."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
            parts = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join([*parts, base] if base else parts)
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
    out = []
    for name in names:
        while name and name not in MODULES and "." in name:
            name = name.rpartition(".")[0]
        if name in MODULES and name != module:
            out.append(name)
    return out


def _graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges[module].update(_targets(module, node))
    return edges


def _rank(module: str) -> tuple[int, str]:
    """(stage rank, stage); the small shared modules at the package's top level are 0."""
    if module in TOP or module.startswith("descriptor_gen.cli."):
        return 99, "cli"
    stage = module.split(".")[1]
    return (RANKS[stage], stage) if stage in RANKS else (0, "shared")


def test_the_graph_sees_imports_inside_functions() -> None:
    edges = _graph()
    assert "descriptor_gen.cli" in edges["descriptor_gen.entry"]  # imported inside run()
    assert "descriptor_gen.data.wds" in edges["descriptor_gen.data.datasets"]


def test_imports_point_down_the_stages() -> None:
    wrong = []
    for module, targets in _graph().items():
        rank, stage = _rank(module)
        for target in targets:
            target_rank, target_stage = _rank(target)
            if target_rank > rank or (target_rank == rank and target_stage != stage):
                wrong.append(f"{module} ({stage}) imports {target} ({target_stage})")
    assert wrong == []


def test_no_import_cycle() -> None:
    edges = _graph()
    state: dict[str, int] = {}  # 1: on the path, 2: done
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(edges[module]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target):], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_no_function_over_80_lines() -> None:
    long = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_LINES:
                    long.append(f"{module}.{node.name}: {lines} lines")
    assert long == []


def test_cache_file_names_are_defined_once() -> None:
    from descriptor_gen.paths import CACHE_PARTS

    # a plain word (`batches`) is also an API's path part: only as a path joined counts
    forms = [f'"{n}"' if "_" in n or "." in n else f'/ "{n}"' for n in CACHE_PARTS]
    pattern = re.compile("|".join(re.escape(f) for f in forms))
    where = [f"{path.relative_to(PACKAGE.parent)}:{number}"
             for module, path in MODULES.items() if module != "descriptor_gen.paths"
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if pattern.search(line)]
    assert where == []


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_the_oldest_pins_are_the_floors_of_pyproject() -> None:
    """`make test-oldest` tests the floors pyproject.toml states (torch stays .venv's)."""
    from packaging.version import Version

    # the same two files on every Python: the check needs only one that reads TOML
    tomllib = pytest.importorskip("tomllib", reason="Python 3.10 has no tomllib")

    project = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["project"]
    floors = {_name(r): r.split(">=")[1] for r in project["dependencies"] if ">=" in r}
    lines = (PACKAGE.parent / "tests" / "oldest.txt").read_text().splitlines()
    pins = {_name(line): line.split("==")[1] for line in lines if "==" in line}
    untested = {"torch"}
    assert set(floors) - untested <= set(pins), set(floors) - untested - set(pins)
    assert {n: floors[n] for n in set(floors) - untested
            if Version(pins[n]) != Version(floors[n])} == {}


def _whole_file_writes(tree: ast.AST) -> list[int]:
    """Lines that write a whole file in place: `.write_text(`, `.write_bytes(`, `.savefig(`
    to a path, `open(path, "w...")`; a temp file's name (`tmp`, in `replace_atomically`'s
    writer) or the null device is not a file in place."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func, args = node.func, node.args
        first = args[0] if args else None
        temp = isinstance(first, ast.Name) and first.id in ("tmp", "handle") or (
            isinstance(first, ast.Attribute) and first.attr == "devnull")
        if isinstance(func, ast.Attribute) and func.attr in ("write_text", "write_bytes"):
            base = func.value
            temp = isinstance(base, ast.Call) and any(
                isinstance(a, ast.Name) and a.id == "tmp" for a in base.args)
            if not temp:
                found.append(node.lineno)
        elif isinstance(func, ast.Attribute) and func.attr == "savefig" and not temp:
            found.append(node.lineno)
        elif isinstance(func, ast.Name) and func.id == "open" and len(args) > 1 and not temp:
            mode = args[1].value if isinstance(args[1], ast.Constant) else ""
            if isinstance(mode, str) and ("w" in mode or "x" in mode):
                found.append(node.lineno)
    return found


def test_whole_files_are_written_all_or_nothing() -> None:
    """Every file the package writes whole goes through `atomic.py` (a temp file, then a
    rename, with the mode `open` would give): an interrupted run leaves the old file or the
    new one. Appends (results, stores, logs) are read back line by line, a torn last line
    left out, and are not whole-file writes."""
    where = [f"{path.relative_to(PACKAGE.parent)}:{line}"
             for module, path in MODULES.items() if module != "descriptor_gen.atomic"
             for line in _whole_file_writes(ast.parse(path.read_text(encoding="utf-8")))]
    assert where == []
    caught = _whole_file_writes(ast.parse(
        "p.write_text('x')\nfig.savefig(p)\nopen(p, 'w')\nopen(p, 'a')\nPath(tmp).write_text('x')\n"
        "open(tmp, 'w')\nfig.savefig(handle, format='png')\n"))
    assert caught == [1, 2, 3]
