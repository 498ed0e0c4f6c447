"""Preference pairs for DPO: sample k outputs per instruction, score them, keep the best vs one of the rest.

    longwriter make-pairs --input prompts.jsonl --output s3://bucket/pairs --samples 4
    longwriter make-pairs --input prompts.jsonl --output pairs.parquet --model ./sft/model \\
        --judge-endpoint http://judge:8000/v1

Each instruction (JSONL/Parquet, as for ``generate``) is written ``--samples`` times by the
generation machinery (``core.agentwrite``: ``direct`` one-call or ``agentwrite`` plan+sections)
on one engine in this process, many generations in flight (asyncio; no Ray needed). Each
sample's score is the LongBench-Write length score S_l against the target; with a judge
(``--judge-model`` / ``--judge-endpoint``) it is (S_l + S_q) / 2, and without one the command
warns that the pairs teach length only. The best sample that may be chosen (not cut at
``max_tokens``, not looping: core.preference) is ``chosen``; ``rejected`` is drawn at random,
as LongWriter does, from the samples at least ``--min-margin`` below it. Instructions with no
such pair, or fewer than two usable samples, are skipped and counted. Output: one Parquet file
with :data:`PAIRS_SCHEMA`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import pyarrow as pa

from core import storage
from core.agentwrite import AgentWriter
from core.config import AgentWriteConfig, EngineConfig, StorageConfig
from core.eval_judge import judge_engine_config
from core.inputs import PromptRow, read_prompts
from core.records import Document
from core.preference import chosen_problem, sample_score, select_pair
from core.scores import judge_document
from core.train_config import PairsConfig
from ray_jobs import console

PAIRS_SCHEMA_VERSION = "1"
PAIRS_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("prompt", pa.string()),
        ("chosen", pa.string()),
        ("rejected", pa.string()),
        ("chosen_score", pa.float64()),
        ("rejected_score", pa.float64()),
        ("chosen_words", pa.int64()),
        ("rejected_words", pa.int64()),
        ("target_words", pa.int64()),
        ("language", pa.string()),
        ("samples", pa.int64()),  # usable samples the pair was chosen from
        ("model", pa.string()),
    ],
    metadata={"longwriter.pairs_schema_version": PAIRS_SCHEMA_VERSION},
)

# YAML section -> config, in run_make_pairs's argument order.
SECTIONS = {"pairs": PairsConfig, "engine": EngineConfig, "agentwrite": AgentWriteConfig, "storage": StorageConfig}


def register(sub: argparse._SubParsersAction) -> None:
    from ray_jobs.cli import add_job_parser

    add_job_parser(sub, "make-pairs", "preference pairs for DPO: k samples per prompt, the best vs one drawn from the rest",
                   __doc__, SECTIONS, run)


def run(args: argparse.Namespace) -> int:
    from ray_jobs.cli import build_sections

    pcfg, ecfg, acfg, scfg = build_sections(args, SECTIONS)
    s = run_make_pairs(pcfg, ecfg, acfg, scfg)
    print(f"pairs {s['pairs']} from {s['prompts']} prompts x {pcfg.samples} samples "
          f"(skipped: {s['skipped_few_samples']} with < 2 usable samples, {s['skipped_small_margin']} under "
          f"--min-margin {pcfg.min_margin}, {s['skipped_no_chosen']} where every sample was cut or looping); "
          f"ranked by {s['signal']}; mean score chosen {s['mean_chosen_score']:.1f} vs rejected "
          f"{s['mean_rejected_score']:.1f}; {s['seconds']:.0f} s\n  {s['output']}")
    return 0


def output_location(uri: str, scfg: StorageConfig | None) -> storage.Location:
    loc = storage.resolve(uri, scfg)
    return loc if loc.path.endswith(".parquet") else loc.join("pairs.parquet")


def pairs_table(pairs: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(pairs, schema=PAIRS_SCHEMA)


async def make_pairs(rows: list[PromptRow], engine: Any, pcfg: PairsConfig, acfg: AgentWriteConfig | None = None,
                     judge: Any = None, progress: bool = True) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Sample, score and pair; ``engine`` / ``judge`` are any core.engines Engine."""
    writer = AgentWriter(engine, acfg or AgentWriteConfig())
    sem = asyncio.Semaphore(max(1, pcfg.in_flight))
    done = 0
    total = len(rows) * pcfg.samples
    t0 = time.perf_counter()

    async def sample(row: PromptRow, j: int) -> tuple[Document, dict[str, int] | None]:
        nonlocal done
        async with sem:
            kw = dict(doc_id=f"{row.id}-s{j}", length=row.length, metadata=row.metadata)
            doc = await (writer.write_direct(row.prompt, **kw) if pcfg.mode == "direct" else writer.write(row.prompt, **kw))
            judgment = None
            if judge is not None and doc.status == "ok" and doc.text.strip():
                judgment = await judge_document(judge, row.prompt, doc.text)
        done += 1
        if progress and (done == total or done % 10 == 0):
            print(f"[make-pairs] {done}/{total} samples ({time.perf_counter() - t0:.0f} s)", file=console.stream())
        return doc, judgment

    results = await asyncio.gather(*(sample(r, j) for r in rows for j in range(pcfg.samples)))
    pairs: list[dict[str, Any]] = []
    stats = {"skipped_few_samples": 0, "skipped_small_margin": 0, "skipped_no_chosen": 0, "failed_samples": 0,
             "not_choosable_samples": 0}
    skip = {"few samples": "skipped_few_samples", "small margin": "skipped_small_margin",
            "no sample may be chosen": "skipped_no_chosen"}
    for i, row in enumerate(rows):
        group = results[i * pcfg.samples:(i + 1) * pcfg.samples]
        usable = [(sample_score(d, j), d) for d, j in group if d.status == "ok" and d.word_count > 0]
        stats["failed_samples"] += len(group) - len(usable)
        stats["not_choosable_samples"] += sum(chosen_problem(d) is not None for _, d in usable)
        pair, why = select_pair(usable, pcfg.min_margin, row.id)
        if pair is None:
            stats[skip[why]] += 1
            continue
        (hi, best), (lo, worst) = pair
        pairs.append({"id": row.id, "prompt": row.prompt, "chosen": best.text, "rejected": worst.text,
                      "chosen_score": round(hi, 3), "rejected_score": round(lo, 3),
                      "chosen_words": best.word_count, "rejected_words": worst.word_count,
                      "target_words": best.target_words, "language": best.language, "samples": len(usable),
                      "model": best.model})
    return pairs, stats


def run_make_pairs(pcfg: PairsConfig, ecfg: EngineConfig, acfg: AgentWriteConfig | None = None,
                   scfg: StorageConfig | None = None, *, engine: Any = None, judge: Any = None) -> dict[str, Any]:
    """The whole command: read prompts, sample, pair, write Parquet; returns a summary dict.

    ``engine`` / ``judge`` (tests) replace the engines built from ``ecfg`` / the judge flags.
    """
    acfg = acfg or AgentWriteConfig()
    if not pcfg.input or not pcfg.output:
        raise ValueError("--input and --output are required")
    if pcfg.samples < 2:
        raise ValueError("--samples must be >= 2 (a pair needs two outputs)")
    if pcfg.mode not in ("direct", "agentwrite"):
        raise ValueError(f"--mode must be direct or agentwrite, got {pcfg.mode!r}")
    t0 = time.time()
    out = output_location(pcfg.output, scfg)
    good, bad = read_prompts(pcfg.input, scfg, max_length=acfg.max_length)
    if pcfg.limit is not None:
        good = good[: pcfg.limit]
    if not good:
        raise ValueError(f"no valid prompts in {pcfg.input} ({len(bad)} bad rows)")
    storage.info(out)  # fail on unreachable output storage before generating anything
    print(f"[make-pairs] {len(good)} prompts x {pcfg.samples} samples ({len(bad)} bad rows skipped)", file=console.stream())
    signal = "length and quality" if (judge is not None or pcfg.judge_model or pcfg.judge_endpoint) else "length only"
    if signal == "length only":
        print("[make-pairs] WARNING: no judge (--judge-model / --judge-endpoint): samples are ranked by the length "
              "score alone, so the pairs teach length, not quality", file=console.stream())

    async def go() -> tuple[list[dict[str, Any]], dict[str, int]]:
        from core.engines import build_engine

        own = []
        eng = engine
        if eng is None:
            eng = build_engine(ecfg)
            own.append(eng)
        jdg = judge
        jcfg = judge_engine_config(ecfg, pcfg.judge_model, pcfg.judge_endpoint, generation_model_default=False)
        if jdg is None and jcfg is not None:
            same = not jcfg.endpoint and jcfg.model == ecfg.model and not ecfg.endpoint
            jdg = eng if same else build_engine(jcfg)
            if jdg is not eng:
                own.append(jdg)
        try:
            return await make_pairs(good, eng, pcfg, acfg, judge=jdg)
        finally:
            for e in own:
                await e.close()

    pairs, stats = asyncio.run(go())
    storage.write_parquet(out, pairs_table(pairs))
    cs = [p["chosen_score"] for p in pairs]
    rs = [p["rejected_score"] for p in pairs]
    return {"output": out.uri, "prompts": len(good), "bad_rows": len(bad), "pairs": len(pairs), "signal": signal, **stats,
            "mean_chosen_score": sum(cs) / len(cs) if cs else 0.0,
            "mean_rejected_score": sum(rs) / len(rs) if rs else 0.0, "seconds": time.time() - t0}


def main(argv: list[str] | None = None) -> int:
    from ray_jobs.cli import main as cli_main

    return cli_main(["make-pairs", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    sys.exit(main())
