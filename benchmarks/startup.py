"""Cold and warm engine start, as a user meets them: `longwriter write` and the bulk job.

    python benchmarks/startup.py          # ~10 min on 2 cores

Each pair runs on its own empty compile cache (fresh ``VLLM_CACHE_ROOT`` and
``TORCHINDUCTOR_CACHE_DIR``, the same as ``rm -rf ~/.cache/vllm`` without touching yours):

* ``write``: ``longwriter write "Write 100 words about rain." --length 100`` twice; wall time of
  each whole command.
* ``generate``: ``longwriter generate`` on a one-prompt input (100 words) twice, each into a new
  output; the time from launch until the first document's Parquet file exists.
* ``write --enforce-eager`` once (warm), for the per-command default: no compilation at all.

Prints each time and warm / cold (target for ``write``: <= 0.5). One run each.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXE = str(Path(sys.executable).with_name("longwriter"))
NOTE = "Write 100 words about rain."


def fresh_cache(tmp: Path, name: str) -> dict[str, str]:
    return {**os.environ, "VLLM_CACHE_ROOT": str(tmp / name / "vllm"),
            "TORCHINDUCTOR_CACHE_DIR": str(tmp / name / "inductor")}


def time_write(env: dict[str, str], out: Path, *extra: str) -> float:
    t0 = time.perf_counter()
    r = subprocess.run([EXE, "write", NOTE, "--length", "100", "--out", str(out), *extra], cwd=ROOT, env=env,
                       capture_output=True, text=True)
    secs = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"write failed: {r.stderr[-1500:]}")
    return secs


def time_first_document(env: dict[str, str], inp: Path, out: Path) -> float:
    """Seconds from launching the job until its first part file is there (then let it finish)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([EXE, "generate", "--input", str(inp), "--output", str(out)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first = None
    while proc.poll() is None:
        if first is None and list(out.glob("run_id=*/part-*.parquet")):
            first = time.perf_counter() - t0
        time.sleep(0.2)
    if proc.returncode != 0:
        raise SystemExit(f"generate failed: {proc.stderr.read()[-1500:]}")
    return first if first is not None else time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--skip-generate", action="store_true", help="only the `write` pair")
    a = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="lwstart") as t:
        tmp = Path(t)
        env = fresh_cache(tmp, "write")
        cold = time_write(env, tmp / "a.md")
        print(f"write, cold cache: {cold:.1f} s", flush=True)
        warm = time_write(env, tmp / "b.md")
        print(f"write, warm cache: {warm:.1f} s", flush=True)
        rows.append(("longwriter write (100 words)", cold, warm))
        eager = time_write(env, tmp / "c.md", "--enforce-eager")
        print(f"write --enforce-eager: {eager:.1f} s", flush=True)
        if not a.skip_generate:
            inp = tmp / "one.jsonl"
            inp.write_text(json.dumps({"id": "rain", "prompt": NOTE, "length": 100}) + "\n")
            env = fresh_cache(tmp, "generate")
            g_cold = time_first_document(env, inp, tmp / "out1")
            print(f"generate, first document, cold cache: {g_cold:.1f} s", flush=True)
            g_warm = time_first_document(env, inp, tmp / "out2")
            print(f"generate, first document, warm cache: {g_warm:.1f} s", flush=True)
            rows.append(("longwriter generate: first document", g_cold, g_warm))
    print("\n| command | cold cache s | warm cache s | warm / cold |\n|---|---|---|---|")
    for name, c, w in rows:
        print(f"| {name} | {c:.0f} | {w:.0f} | {w / c:.2f} |")
    print(f"| longwriter write --enforce-eager (100 words) | - | {eager:.0f} | - |")


if __name__ == "__main__":
    main()
