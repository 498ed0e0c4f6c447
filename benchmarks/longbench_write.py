"""LongBench-Write length score S_l, AgentWrite vs direct, same engine and model in one run.

    python benchmarks/longbench_write.py --shortest 20            # a quick look (~10 min on 2 cores)
    python benchmarks/longbench_write.py                          # all 60 English prompts, both modes (target: agentwrite >= 90)

Prints S_l per mode and per length bucket, and the ratio agentwrite / direct (the baseline is
measured in the same run on the same engine). Not a test: numbers vary with sampling.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.agentwrite import AgentWriter  # noqa: E402
from core.config import AgentWriteConfig, EngineConfig  # noqa: E402
from core.engines import build_engine  # noqa: E402
from core.eval_data import BenchRow, read_bench  # noqa: E402
from core.eval_metrics import bucket_order  # noqa: E402
from core.length import length_bucket, length_score  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "longbench-write" / "longbench_write_en.jsonl"


async def run_mode(writer: AgentWriter, rows: list[BenchRow], mode: str) -> list[dict]:
    t0, done = time.perf_counter(), 0

    async def one(i: int, r: BenchRow) -> dict:
        nonlocal done
        if mode == "direct":
            doc = await writer.write_direct(r.prompt, doc_id=f"lb{i}", length=r.length)
        else:
            doc = await writer.write(r.prompt, doc_id=f"lb{i}", length=r.length)
        row = {"required": r.length, "produced": doc.word_count, "status": doc.status,
               "tokens": doc.generated_tokens, "s_l": length_score(r.length, doc.word_count)}
        done += 1  # progress on stderr: the longest prompts take most of the run
        print(f"  [{mode} {done}/{len(rows)} {time.perf_counter() - t0:5.0f} s] required {row['required']:>6}, "
              f"produced {row['produced']:>6}, S_l {row['s_l']:5.1f}, {row['status']}", file=sys.stderr, flush=True)
        return row

    return await asyncio.gather(*(one(i, r) for i, r in enumerate(rows)))


async def main_async(args: argparse.Namespace) -> None:
    rows = read_bench(args.data)
    if args.shortest:
        rows = sorted(rows, key=lambda r: r.length)[: args.shortest]
    engine = build_engine(EngineConfig(model=args.model, enforce_eager=args.enforce_eager,
                                       kv_cache_gib=args.kv_cache_gib, max_num_seqs=max(64, len(rows))))
    writer = AgentWriter(engine, AgentWriteConfig())
    results = {}
    for mode in args.modes.split(","):
        t0 = time.perf_counter()
        res = await run_mode(writer, rows, mode)
        secs = time.perf_counter() - t0
        results[mode] = res
        toks = sum(r["tokens"] for r in res)
        print(f"{mode:>10}: S_l {statistics.mean(r['s_l'] for r in res):5.1f} over {len(res)} prompts, "
              f"{sum(r['status'] != 'ok' for r in res)} failed, {secs:.0f} s, {toks / secs:.0f} tok/s", flush=True)
    await engine.close()
    buckets = sorted({length_bucket(r.length) for r in rows}, key=bucket_order)
    print("\nbucket        " + "".join(f"{m:>12}" for m in results))
    for b in buckets:
        line = f"{b:<14}"
        for m, res in results.items():
            vals = [x["s_l"] for x, r in zip(res, rows) if length_bucket(r.length) == b]
            line += f"{statistics.mean(vals):12.1f}"
        print(line + f"   (n={len(vals)})")
    if "agentwrite" in results and "direct" in results:
        a = statistics.mean(r["s_l"] for r in results["agentwrite"])
        d = statistics.mean(r["s_l"] for r in results["direct"])
        print(f"\nS_l agentwrite / direct = {a / max(d, 1e-9):.2f}x  ({a:.1f} vs {d:.1f})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DATA), help="LongBench-Write JSONL (prompt, length)")
    p.add_argument("--shortest", type=int, default=None, help="only the N shortest prompts")
    p.add_argument("--modes", default="agentwrite,direct")
    p.add_argument("--model", default=None, help="default: the embedded SmolLM2-135M-Instruct")
    p.add_argument("--enforce-eager", action="store_true")
    p.add_argument("--kv-cache-gib", type=float, default=8.0,
                   help="CPU KV cache: all prompts are in flight at once, each with a growing context")
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
