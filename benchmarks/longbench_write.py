"""LongBench-Write length score S_l, AgentWrite vs direct, same engine and model in one run.

    python benchmarks/longbench_write.py --shortest 20                  # a quick look (~10 min on 2 cores)
    python benchmarks/longbench_write.py --modes agentwrite --language zh  # the 60 Chinese prompts
    python benchmarks/longbench_write.py                                # all 120 prompts, both modes

Prints S_l per mode and per language and length bucket, the fidelity measures of the
evaluation report (non-prose share, cross-section repetition, plans retried / fallen back),
the share of generated tokens discarded by resampling, and the ratio agentwrite / direct (the
baseline is measured in the same run on the same engine). Scored by core.eval_metrics, as the
evaluation job scores. Not a test: numbers vary with sampling.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.agentwrite import AgentWriter  # noqa: E402
from core.config import AgentWriteConfig, EngineConfig  # noqa: E402
from core.engines import build_engine  # noqa: E402
from core.eval_data import BenchRow, read_bench  # noqa: E402
from core.eval_metrics import score_rows, summarize  # noqa: E402
from core.length import length_score  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "longbench-write" / "longbench_write.jsonl"


async def run_mode(writer: AgentWriter, rows: list[BenchRow], mode: str) -> list[dict]:
    """Each prompt's document, as a row of the documents schema (what the evaluation job scores)."""
    t0, done = time.perf_counter(), 0

    async def one(i: int, r: BenchRow) -> dict:
        nonlocal done
        if mode == "direct":
            doc = await writer.write_direct(r.prompt, doc_id=r.id, length=r.length)
        else:
            doc = await writer.write(r.prompt, doc_id=r.id, length=r.length)
        done += 1  # progress on stderr: the longest prompts take most of the run
        print(f"  [{mode} {done}/{len(rows)} {time.perf_counter() - t0:5.0f} s] {r.language} required {r.length:>6}, "
              f"produced {doc.word_count:>6}, S_l {length_score(r.length, doc.word_count):5.1f}, {doc.status}",
              file=sys.stderr, flush=True)
        return doc.to_row()

    return await asyncio.gather(*(one(i, r) for i, r in enumerate(rows)))


def select(rows: list[BenchRow], args: argparse.Namespace) -> list[BenchRow]:
    if args.language != "all":
        rows = [r for r in rows if r.language == args.language]
    if args.half:  # disjoint halves (every other prompt by length), for runs too long for one go
        rows = sorted(rows, key=lambda r: r.length)[args.half - 1::2]
    if args.shortest:
        rows = sorted(rows, key=lambda r: r.length)[: args.shortest]
    return rows


async def main_async(args: argparse.Namespace) -> None:
    rows = select(read_bench(args.data), args)
    engine = build_engine(EngineConfig(model=args.model, enforce_eager=args.enforce_eager,
                                       kv_cache_gib=args.kv_cache_gib, max_num_seqs=max(64, len(rows))))
    writer = AgentWriter(engine, AgentWriteConfig())
    summaries = {}
    for mode in args.modes.split(","):
        t0 = time.perf_counter()
        docs = await run_mode(writer, rows, mode)
        secs = time.perf_counter() - t0
        summaries[mode] = summarize(score_rows(rows, docs, {}))
        toks = sum(d["generated_tokens"] for d in docs)
        wasted = sum(c["generated_tokens"] for d in docs for c in d["calls"] if c["kind"] == "discarded")
        o = summaries[mode]["overall"]
        print(f"{mode:>10}: S_l {o['S_l']:5.1f} over {o['n']} prompts, {o['failed']} failed, {secs:.0f} s, "
              f"{toks / secs:.0f} tok/s, {100 * wasted / max(toks, 1):.1f}% of tokens discarded", flush=True)
    await engine.close()
    print("\nlanguage bucket " + "".join(f"{m:>12}" for m in summaries))
    for key in next(iter(summaries.values()))["by_language_bucket"]:
        groups = [s["by_language_bucket"][key] for s in summaries.values()]
        print(f"{key:<16}" + "".join(f"{g['S_l']:12.1f}" for g in groups) + f"   (n={groups[0]['n']})")
    print("\nfidelity        " + "".join(f"{m:>12}" for m in summaries))
    for label, field, fmt in (("non-prose", "nonprose_share", "{:11.2%} "), ("cross-section", "cross_section_repeat", "{:11.2%} "),
                              ("plans retried", "plan_retried", "{:12d}"), ("plans fell back", "plan_fallback", "{:12d}")):
        vals = [s["overall"][field] for s in summaries.values()]
        print(f"{label:<16}" + "".join(fmt.format(v) if v is not None else f"{'n/a':>12}" for v in vals))
    if "agentwrite" in summaries and "direct" in summaries:
        a, d = summaries["agentwrite"]["overall"]["S_l"], summaries["direct"]["overall"]["S_l"]
        print(f"\nS_l agentwrite / direct = {a / max(d, 1e-9):.2f}x  ({a:.1f} vs {d:.1f})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DATA), help="LongBench-Write JSONL (prompt, length)")
    p.add_argument("--shortest", type=int, default=None, help="only the N shortest prompts")
    p.add_argument("--language", choices=("en", "zh", "all"), default="all", help="only this language's prompts")
    p.add_argument("--half", type=int, choices=(1, 2), default=None,
                   help="one of two disjoint halves (every other prompt by length), to split a long run")
    p.add_argument("--modes", default="agentwrite,direct")
    p.add_argument("--model", default=None, help="default: the embedded SmolLM2-135M-Instruct")
    p.add_argument("--enforce-eager", action="store_true")
    p.add_argument("--kv-cache-gib", type=float, default=8.0,
                   help="CPU KV cache: all prompts are in flight at once, each with a growing context")
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
