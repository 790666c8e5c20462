"""Comparative generation benchmark: 1,000 classes x 10 neighbours = 10,000 pair prompts through
the generation stage at concurrency 16 against a local OpenAI-compatible server with ~100 ms
latency, against the sequential rate (concurrency 1, measured on a slice: the whole at one
request at a time would take about half an hour), then a re-run over the full cache.

    python bench/bench_comparative.py [--classes 1000] [--neighbours 10] [--latency 0.1]
                                      [--sequential-classes 30]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from descriptor_gen.describe.classes import load_classes
from descriptor_gen.describe.prompts import PromptLibrary, PromptOptions
from descriptor_gen.describe.styles import Style
from descriptor_gen.generation.backends import GenerationParams
from descriptor_gen.generation.cache import ResponseCache
from descriptor_gen.generation.devserver import DevServer, ServerConfig
from descriptor_gen.generation.generate import GenerationJob, GenerationSummary, generate
from descriptor_gen.paths import PROJECT_ROOT, CachePaths


def neighbours_of(n_classes: int, n: int, seed: int = 0) -> list[list[int]]:
    """Fixed stand-in neighbours (CLIP's choice does not change the request count or rate)."""
    rng = np.random.default_rng(seed)
    return [[int(j) for j in rng.choice([k for k in range(n_classes) if k != i], n, replace=False)]
            for i in range(n_classes)]


def run(base_url: str, classes: list[str], neighbours: list[list[int]], folder: Path, name: str,
        concurrency: int, overwrite: bool = False) -> GenerationSummary:
    job = GenerationJob(
        classes=classes, out=folder / f"{name}.jsonl", options=PromptOptions(),
        params=GenerationParams(model="bench-model", base_url=base_url, api="chat",
                                temperature=1.0, max_tokens=1000, stop=[], parser="dclip"),
        library=PromptLibrary(CachePaths.resolve().prompts_dir),
        cache=ResponseCache(folder / f"{name}.sqlite"), concurrency=concurrency,
        overwrite=overwrite, progress=False,
        style=Style(name="comparative", neighbours=len(neighbours[0])), neighbours=neighbours,
    )
    return generate(job)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--neighbours", type=int, default=10)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--sequential-classes", type=int, default=30)
    args = parser.parse_args()
    names = load_classes(PROJECT_ROOT / "data" / "classes" / "imagenet.txt")[: args.classes]
    neighbours = neighbours_of(len(names), args.neighbours)
    print(f"machine: {platform.machine()}, {platform.processor() or platform.system()}, "
          f"python {platform.python_version()}; date {time.strftime('%Y-%m-%d')}")
    with tempfile.TemporaryDirectory() as tmp, DevServer(ServerConfig(latency=args.latency)) as server:
        folder = Path(tmp)
        few = args.sequential_classes
        slice_neighbours = [[j % few for j in row] for row in neighbours[:few]]
        slice_neighbours = [[j if j != i else (i + 1) % few for j in row]
                            for i, row in enumerate(slice_neighbours)]
        one = run(server.base_url, names[:few], slice_neighbours, folder, "c1", 1)
        sixteen = run(server.base_url, names, neighbours, folder, "c16", 16)
        rate_one = one.requests / one.seconds
        rate_sixteen = sixteen.requests / sixteen.seconds
        print(f"comparative prompts, server latency {args.latency * 1000:.0f} ms:")
        print(f"  concurrency 1:  {one.requests:6d} requests in {one.seconds:7.2f} s"
              f"  ({rate_one:6.1f} requests/s; {few} classes x {args.neighbours})")
        print(f"  concurrency 16: {sixteen.requests:6d} requests in {sixteen.seconds:7.2f} s"
              f"  ({rate_sixteen:6.1f} requests/s; {len(names)} classes x {args.neighbours})")
        print(f"  rate ratio: {rate_sixteen / rate_one:.1f}x (target >= 10x)")
        before = server.count()
        cached = run(server.base_url, names, neighbours, folder, "c16", 16, overwrite=True)
        print(f"  re-run: {cached.seconds:.2f} s, {server.count() - before} requests sent,"
              f" {cached.cache_hits} cache hits (target: 0 requests)")


if __name__ == "__main__":
    main()
