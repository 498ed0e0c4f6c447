"""CPU performance recipe: what tcmalloc, Intel OpenMP, thread binding and KV-cache size buy.

    python benchmarks/cpu_recipe.py                  # ~15 min on 2 cores
    python benchmarks/cpu_recipe.py --docs 4 --length 400 --variants default,tcmalloc

One fixed workload for every variant, so the ratios compare settings and not luck: the
throughput benchmark's pipeline (``generate_throughput.py``: AgentWrite, ``--docs`` documents
in flight on one engine) runs once and its engine requests are recorded; then each variant
starts a fresh engine in its own process (``LD_PRELOAD`` only works from a process's start)
and replays exactly those requests, each forced to its recorded output length, as one batch.
Printed per variant: engine start seconds, output tokens/s, and the ratio to ``default``
(what ``longwriter`` does today), one run each.  A setting is worth adopting at >= 1.10.

Variants: ``default``; ``tcmalloc`` (Debian's libtcmalloc-minimal4 in LD_PRELOAD);
``tcmalloc+iomp`` (plus Intel OpenMP from PyPI's intel-openmp, which replaces torch's libgomp);
``iomp``; ``bind-auto`` (vLLM's own thread binding: one core for inference, one reserved);
``kv-6g`` (6 GiB KV cache instead of 2).
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"


def iomp_path() -> str | None:
    hits = glob.glob(str(Path(sys.prefix) / "lib" / "libiomp5.so"))
    return hits[0] if hits else None


def variants() -> dict[str, tuple[dict[str, str | None], dict]]:
    """name -> (environment changes, EngineConfig changes); None marks a library not installed."""
    iomp = iomp_path()
    tcmalloc = TCMALLOC if Path(TCMALLOC).is_file() else None
    return {
        "default": ({}, {}),
        "tcmalloc": ({"LD_PRELOAD": tcmalloc}, {}),
        "iomp": ({"LD_PRELOAD": iomp}, {}),
        "tcmalloc+iomp": ({"LD_PRELOAD": f"{tcmalloc}:{iomp}" if tcmalloc and iomp else None}, {}),
        "bind-auto": ({"VLLM_CPU_OMP_THREADS_BIND": "auto"}, {}),
        "kv-6g": ({}, {"kv_cache_gib": 6.0}),
    }


# -- worker side (one process per variant)

async def record(a: argparse.Namespace, out: Path) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import generate_throughput as gt  # the throughput benchmark's own pipeline
    from core.config import AgentWriteConfig, EngineConfig
    from core.engines.vllm_engine import VLLMEngine
    from core.models import resolve_model

    eng = VLLMEngine(resolve_model(a.model), EngineConfig(max_num_seqs=a.docs)).start()
    docs = gt.instructions(a.docs, a.length)
    _, secs, calls, _ = await gt.pipeline(eng, docs, a.length, a.docs, a.docs, AgentWriteConfig())
    await eng.close()
    out.write_text(json.dumps([[m, n] for m, n in calls if n > 0]))
    print(f"recorded {len(calls)} requests ({sum(n for _, n in calls)} output tokens) in {secs:.0f} s",
          file=sys.stderr, flush=True)


async def replay(a: argparse.Namespace, workload: Path) -> dict:
    from core.config import EngineConfig
    from core.engines.base import SamplingSpec
    from core.engines.vllm_engine import VLLMEngine
    from core.models import resolve_model

    calls = json.loads(workload.read_text())
    cfg = EngineConfig(max_num_seqs=a.docs, **json.loads(a.engine_json))
    t0 = time.perf_counter()
    eng = VLLMEngine(resolve_model(a.model), cfg).start()
    start_s = time.perf_counter() - t0
    warm = SamplingSpec(max_tokens=8, min_tokens=8)
    await eng.generate([{"role": "user", "content": "Say hello."}], sampling=warm)
    t0 = time.perf_counter()
    res = await asyncio.gather(*(eng.generate(m, sampling=SamplingSpec(max_tokens=n, min_tokens=n, temperature=0.7))
                                 for m, n in calls))
    secs = time.perf_counter() - t0
    await eng.close()
    tokens = sum(r.generated_tokens for r in res)
    return {"start_s": start_s, "tokens": tokens, "seconds": secs, "tok_s": tokens / secs}


# -- driver side

def run_variant(name: str, env_changes: dict, engine_changes: dict, a: argparse.Namespace, workload: Path) -> dict:
    env = dict(os.environ)
    for k, v in env_changes.items():
        if v is None:
            raise SystemExit(f"variant {name}: a library it needs is not installed (tcmalloc: apt-get install "
                             f"libtcmalloc-minimal4; Intel OpenMP: pip install intel-openmp)")
        env[k] = v
    cmd = [sys.executable, __file__, "--worker", "replay", "--workload", str(workload),
           "--engine-json", json.dumps(engine_changes), "--docs", str(a.docs)] + (["--model", a.model] if a.model else [])
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        raise SystemExit(f"variant {name} failed (exit {p.returncode}): {p.stderr.strip().splitlines()[-3:]}")
    return json.loads(lines[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=8, help="documents in the recorded workload (all in flight)")
    p.add_argument("--length", type=int, default=600, help="target words per document")
    p.add_argument("--variants", default=",".join(variants()), help="comma-separated; default first is the baseline")
    p.add_argument("--model", default=None)
    p.add_argument("--worker", choices=["record", "replay"], help=argparse.SUPPRESS)
    p.add_argument("--workload", default=None, help=argparse.SUPPRESS)
    p.add_argument("--engine-json", default="{}", help=argparse.SUPPRESS)
    a = p.parse_args()
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    if a.worker == "record":
        asyncio.run(record(a, Path(a.workload)))
        return
    if a.worker == "replay":
        print(json.dumps(asyncio.run(replay(a, Path(a.workload)))), flush=True)
        return
    names = [n.strip() for n in a.variants.split(",") if n.strip()]
    table = variants()
    unknown = [n for n in names if n not in table]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; known: {list(table)}")
    if "default" not in names:
        names.insert(0, "default")
    with tempfile.TemporaryDirectory() as tmp:
        workload = Path(tmp) / "workload.json"
        print(f"recording the workload: {a.docs} documents x {a.length} words (AgentWrite pipeline) ...", flush=True)
        cmd = [sys.executable, __file__, "--worker", "record", "--workload", str(workload), "--docs", str(a.docs),
               "--length", str(a.length)] + (["--model", a.model] if a.model else [])
        subprocess.run(cmd, check=True)
        results = {}
        for n in names:
            env_c, eng_c = table[n]
            print(f"variant {n}: env {env_c or '-'} engine {eng_c or '-'} ...", flush=True)
            results[n] = run_variant(n, env_c, eng_c, a, workload)
            r = results[n]
            print(f"  start {r['start_s']:.0f} s, {r['tokens']} tokens in {r['seconds']:.1f} s = {r['tok_s']:.1f} tok/s",
                  flush=True)
    base = results["default"]["tok_s"]
    print("\n| variant | engine start s | output tok/s | vs default |\n|---|---|---|---|")
    for n, r in results.items():
        print(f"| {n} | {r['start_s']:.0f} | {r['tok_s']:.1f} | {r['tok_s'] / base:.2f} |")


if __name__ == "__main__":
    main()
