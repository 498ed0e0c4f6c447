"""Latency and tokens/s through the Serve app, as ratios against the bare engine on the same requests.

    python benchmarks/serve_latency.py                       # 48 chat requests, 8 at a time, 128 tokens each
    python benchmarks/serve_latency.py --requests 96 --concurrency 16 --max-tokens 256

Both sides run the same vLLM engine settings on the same machine, one after the other:

1. **bare**: an in-process ``VLLMEngine`` (AsyncLLM), requests sent as coroutines.
2. **serve**: ``longwriter serve`` (its own Ray, one replica, no autoscaling), the same requests
   as HTTP ``/v1/chat/completions`` calls with the ``openai``-style body over loopback:
   proxy -> ingress -> LLMServer replica -> engine.

Every request forces its output length (min_tokens = max_tokens) so both sides generate the
same tokens. Prints p50 / p99 request latency and tokens/s for each, and serve / bare ratios
(latency ratio > 1 is Serve's overhead; tokens/s ratio < 1 likewise).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = ROOT.parent / "shared" / "data" / "longbench-write" / "longbench_write_en.jsonl"


def prompts(n: int) -> list[str]:
    rows = [json.loads(line)["prompt"] for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows.sort(key=len)
    return [rows[i % len(rows)][:1500] for i in range(n)]


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


async def drive(call, texts: list[str], concurrency: int) -> dict:
    sem = asyncio.Semaphore(concurrency)
    lat: list[float] = []
    toks = 0

    async def one(text: str) -> None:
        nonlocal toks
        async with sem:
            t = time.perf_counter()
            n = await call(text)  # not `toks += await ...`: that reads toks before the await
            lat.append(time.perf_counter() - t)
            toks += n

    t0 = time.perf_counter()
    await asyncio.gather(*[one(t) for t in texts])
    wall = time.perf_counter() - t0
    return {"p50": statistics.median(lat), "p99": pct(lat, 0.99), "tok_s": toks / wall, "tokens": toks, "wall": wall}


def run_bare(args, texts: list[str]) -> dict:
    from core.config import EngineConfig
    from core.engines.base import SamplingSpec
    from core.engines.vllm_engine import VLLMEngine
    from core.models import resolve_model

    cfg = EngineConfig(model=args.model, enforce_eager=args.enforce_eager, max_num_seqs=args.max_num_seqs,
                       kv_cache_gib=args.kv_cache_gib, cpu_threads_bind=args.cpu_threads_bind)
    engine = VLLMEngine(resolve_model(args.model), cfg)
    sp = SamplingSpec(max_tokens=args.max_tokens, min_tokens=args.max_tokens, temperature=0.0)

    async def main() -> dict:
        engine.start()
        await engine.generate([{"role": "user", "content": "warm up"}], sampling=SamplingSpec(max_tokens=4))

        async def call(text: str) -> int:
            return (await engine.generate([{"role": "user", "content": text}], sampling=sp)).generated_tokens

        try:
            return await drive(call, texts, args.concurrency)
        finally:
            await engine.close()

    return asyncio.run(main())


def run_serve(args, texts: list[str]) -> dict:
    import httpx

    from tests.serve_launcher import launched

    port = args.port
    cfg = {"http_options": {"host": "127.0.0.1", "port": port}, "applications": [{
        "name": "longwriter", "route_prefix": "/", "import_path": "serve.app:app_builder",
        "args": {"serve": {"min_replicas": 1, "max_replicas": 1, "max_ongoing_requests": max(64, args.concurrency)},
                 "engine": {"model": args.model, "enforce_eager": args.enforce_eager, "max_num_seqs": args.max_num_seqs,
                            "kv_cache_gib": args.kv_cache_gib, "cpu_threads_bind": args.cpu_threads_bind}}}]}
    with launched(cfg, env={"LONGWRITER_API_KEY": ""}):
        model = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=30).json()["data"][0]["id"]

        async def main() -> dict:
            limits = httpx.Limits(max_connections=args.concurrency + 4)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/v1", timeout=600, limits=limits) as client:
                async def call(text: str) -> int:
                    r = await client.post("/chat/completions", json={
                        "model": model, "messages": [{"role": "user", "content": text}], "temperature": 0.0,
                        "max_tokens": args.max_tokens, "min_tokens": args.max_tokens})
                    r.raise_for_status()
                    return r.json()["usage"]["completion_tokens"]

                await call("warm up")
                return await drive(call, texts, args.concurrency)

        return asyncio.run(main())


def main() -> None:
    ncpu = len(os.sched_getaffinity(0))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=48)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--model", default=None, help="default: the embedded model")
    p.add_argument("--enforce-eager", action="store_true", help="skip graph compilation on both sides")
    p.add_argument("--max-num-seqs", type=int, default=64)
    p.add_argument("--kv-cache-gib", type=float, default=2.0)
    p.add_argument("--cpu-threads-bind", default=f"0-{ncpu - 1}" if ncpu > 1 else "0",
                   help="CPU only: the same OpenMP binding for both engines")
    p.add_argument("--port", type=int, default=8123)
    args = p.parse_args()
    texts = prompts(args.requests)
    print(f"{args.requests} chat requests x {args.max_tokens} tokens, {args.concurrency} at a time", flush=True)
    bare = run_bare(args, texts)
    print(f"bare engine: p50 {bare['p50']:.2f} s  p99 {bare['p99']:.2f} s  {bare['tok_s']:.0f} tok/s", flush=True)
    served = run_serve(args, texts)
    print(f"through Serve: p50 {served['p50']:.2f} s  p99 {served['p99']:.2f} s  {served['tok_s']:.0f} tok/s")
    print("\n| | bare engine | through Serve | serve / bare |\n|---|---|---|---|")
    for key, label in (("p50", "p50 latency (s)"), ("p99", "p99 latency (s)"), ("tok_s", "output tokens/s")):
        print(f"| {label} | {bare[key]:.2f} | {served[key]:.2f} | {served[key] / bare[key]:.2f} |")


if __name__ == "__main__":
    main()
