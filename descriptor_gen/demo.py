"""`make demo`: generation end to end against the local dev server, then the cached re-run.

Offline and free: the dev server answers like a language model would. Point `descgen generate`
at a real model with `--base-url` (or `OPENAI_API_KEY`) for real descriptors.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from descriptor_gen.cli import main as descgen
from descriptor_gen.devserver import DevServer, ServerConfig


def main(out_dir: str = "results/demo") -> int:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    store = out / "generated.jsonl"
    classes = Path("data/fixtures/mini_classes.txt")
    with tempfile.TemporaryDirectory() as cache, DevServer(ServerConfig(latency=0.05)) as server:
        args = ["generate", "--classes", str(classes), "--out", str(store), "--base-url",
                server.base_url, "--cache-dir", cache, "--concurrency", "4", "--no-progress"]
        for label, extra in (("first run", ["--overwrite"]), ("identical re-run", ["--overwrite"])):
            print(f"== generate, {label} (local dev server at {server.base_url})", flush=True)
            code = descgen([*args, *extra])
            if code:
                return code
    print(f"== {store}", flush=True)
    return descgen(["show", str(store), "--class", "missile"])


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
