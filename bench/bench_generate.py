"""Generation benchmark: concurrency 16 vs 1 against a local server with ~100 ms latency, and a
fully cached re-run of 1000 classes. Prints ratios measured in one run on this machine.

    python bench/bench_generate.py [--classes 200] [--latency 0.1] [--cached-classes 1000]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

from descriptor_gen.generation.backends import GenerationParams
from descriptor_gen.generation.cache import ResponseCache
from descriptor_gen.generation.devserver import DevServer, ServerConfig
from descriptor_gen.generation.generate import GenerationJob, GenerationSummary, generate
from descriptor_gen.describe.prompts import PromptLibrary, PromptOptions
from descriptor_gen.paths import CachePaths


def run(base_url: str, classes: list[str], folder: Path, name: str, concurrency: int,
        overwrite: bool = False) -> GenerationSummary:
    job = GenerationJob(
        classes=classes, out=folder / f"{name}.jsonl", options=PromptOptions(),
        params=GenerationParams(model="bench-model", base_url=base_url),
        library=PromptLibrary(CachePaths.resolve().prompts_dir),
        cache=ResponseCache(folder / f"{name}.sqlite"), concurrency=concurrency,
        overwrite=overwrite, progress=False,
    )
    return generate(job)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--classes", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--cached-classes", type=int, default=1000)
    args = parser.parse_args()
    names = [f"object {i}" for i in range(args.classes)]
    print(f"machine: {platform.machine()}, {platform.processor() or platform.system()}, "
          f"python {platform.python_version()}; date {time.strftime('%Y-%m-%d')}")
    with tempfile.TemporaryDirectory() as tmp, DevServer(ServerConfig(latency=args.latency)) as server:
        folder = Path(tmp)
        one = run(server.base_url, names, folder, "c1", 1)
        sixteen = run(server.base_url, names, folder, "c16", 16)
        print(f"{args.classes} classes, server latency {args.latency * 1000:.0f} ms:")
        print(f"  concurrency 1:  {one.seconds:7.2f} s  ({one.requests} requests)")
        print(f"  concurrency 16: {sixteen.seconds:7.2f} s  ({sixteen.requests} requests)")
        print(f"  speed-up: {one.seconds / sixteen.seconds:.1f}x (target >= 10x)")

        many = [f"object {i}" for i in range(args.cached_classes)]
        server.config.latency = 0.0
        run(server.base_url, many, folder, "big", 16)
        before = server.count()
        cached = run(server.base_url, many, folder, "big", 16, overwrite=True)
        sent = server.count() - before
        print(f"cached re-run of {args.cached_classes} classes: {cached.seconds:.2f} s,"
              f" {sent} requests sent, {cached.cache_hits} cache hits (target: 0 requests, < 2 s)")


if __name__ == "__main__":
    main()
