"""LongBench-Write evaluation: generate with the Ray job, judge, score, report.

    longwriter eval --bench longbench_write_en.jsonl --output out/eval-en
    python -m ray_jobs.evaluate --bench bench.jsonl --output s3://bucket/eval --mode direct
    longwriter eval --bench bench.jsonl --output out/eval-b --generations out/eval-a/generations
    longwriter eval-compare out/eval-a out/eval-b --out compare.md

Flow:

1. Read the benchmark JSONL (``prompt``, ``length``, optional ``type``); rows get ids
   ``bench-0000``, ``bench-0001``, ... in file order and are written to ``OUTPUT/_bench/prompts.jsonl``.
2. Unless ``--generations`` is given, run the bulk generation job (``ray_jobs.generate``, Ray
   Data, resumable: rerunning the same command continues) into ``OUTPUT/generations``.
3. Judge every document that has text with a judge model (default: the generation model) on
   the six LongBench-Write quality dimensions, concurrently with asyncio. Without
   ``--judge-endpoint`` the judge is an in-process vLLM engine in this driver, started after the
   Ray job has finished so the machine is free; on a cluster point ``--judge-endpoint`` at a
   served model (``vllm serve``, Ray Serve) instead, so the driver needs no accelerator.
4. Score: S_l (length following), S_q (quality), S = (S_l + S_q) / 2, plus repetition and
   AgentWrite section-budget error, overall and by length bucket, type and language.

Outputs under ``--output`` (local or s3://): ``results.parquet`` (one row per prompt),
``report.md``, ``lengths.png`` and ``summary.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import json
import sys
import time
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

import pyarrow as pa

from core import storage
from core.config import AgentWriteConfig, EngineConfig, EvalConfig, GenerateConfig, StorageConfig
from core.eval_data import BenchRow, join_generations, read_bench, read_generations, run_id_of
from core.eval_judge import judge_all, judge_engine_config, judge_label
from core.eval_metrics import RESULT_SCHEMA, score_rows, summarize
from core.eval_report import compare, fmt_num, render_plot, render_report
from core.models import EMBEDDED_NAME
from core.redact import safe_url
from ray_jobs import console

OUTPUT_FILES = ("results.parquet", "report.md", "lengths.png", "summary.json")


def _log(msg: str) -> None:
    print(msg, file=console.stream())


# ---------------------------------------------------------------- CLI

# YAML section -> config, in run_eval's argument order.
SECTIONS = {"eval": EvalConfig, "engine": EngineConfig, "agentwrite": AgentWriteConfig, "storage": StorageConfig}


def register(sub: argparse._SubParsersAction) -> None:
    from ray_jobs.cli import add_config_flags, add_job_parser

    add_job_parser(sub, "eval", "LongBench-Write evaluation: generate (Ray), judge, score, report", __doc__,
                   SECTIONS, run)

    c = sub.add_parser("eval-compare", help="side-by-side Markdown table of two evaluations",
                       description="Compare two `longwriter eval` outputs (overall and per length bucket).")
    c.add_argument("a", help="first evaluation folder (local or s3://)")
    c.add_argument("b", help="second evaluation folder")
    c.add_argument("--out", default=None, help="also write the table to this Markdown file (local or s3://)")
    add_config_flags(c, StorageConfig)
    c.set_defaults(func=run_compare)


def run(args: argparse.Namespace) -> int:
    from ray_jobs.cli import build_sections

    s = run_eval(*build_sections(args, SECTIONS))
    o = s["overall"]
    print(f"S_l {fmt_num(o['S_l'])}  S_q {fmt_num(o['S_q'])}  S {fmt_num(o['S'])}  over {o['n']} prompts "
          f"({s['counts']['judge_dropped']} judgments dropped, {s['counts']['failed']} failed, "
          f"{s['counts']['missing']} missing)")
    for name in ("report.md", "results.parquet", "lengths.png", "summary.json"):
        print(f"  {s['files'][name]}")
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from ray_jobs.cli import build_config

    scfg = build_config(StorageConfig, args)
    table = compare(args.a, args.b, scfg)
    print(table, end="")
    if args.out:
        storage.write_bytes(storage.resolve(args.out, scfg), table.encode())
    return 0


def main(argv: list[str] | None = None) -> int:
    from ray_jobs.cli import main as cli_main

    argv = list(argv if argv is not None else sys.argv[1:])
    if argv[:1] == ["compare"]:  # python -m ray_jobs.evaluate compare A B
        return cli_main(["eval-compare", *argv[1:]])
    return cli_main(["eval", *argv])


# ---------------------------------------------------------------- generation


def default_run_id(cfg: EvalConfig, ecfg: EngineConfig, rows: list[BenchRow]) -> str:
    key = json.dumps([[r.prompt, r.length] for r in rows] + [cfg.mode, ecfg.model or "embedded", ecfg.endpoint])
    return f"eval-{cfg.mode}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def generate(cfg: EvalConfig, rows: list[BenchRow], run_id: str, ecfg: EngineConfig, acfg: AgentWriteConfig,
             scfg: StorageConfig, out: storage.Location) -> tuple[str, dict[str, Any]]:
    """Write the prompts file, run the Ray generation job; returns (generations URI, summary)."""
    import ray

    from ray_jobs.generate import run_generate

    prompts = out.join("_bench", "prompts.jsonl")
    body = "".join(json.dumps({"id": r.id, "prompt": r.prompt, "length": r.length,
                               **({"type": r.type} if r.type is not None else {})}, ensure_ascii=False) + "\n"
                   for r in rows)
    storage.write_bytes(prompts, body.encode("utf-8"))
    gen_root = out.join("generations")
    gcfg = GenerateConfig(input=prompts.uri, output=gen_root.uri, mode=cfg.mode, run_id=run_id,
                          engines=cfg.engines, in_flight=cfg.in_flight)
    was_up = ray.is_initialized()
    summary = run_generate(gcfg, ecfg, acfg, scfg)
    if not was_up and ray.is_initialized():  # free the engine actors' memory and cores for the judge
        ray.shutdown()
    return gen_root.join(f"run_id={run_id}").uri, summary


# ---------------------------------------------------------------- judging


def judge_rows(cfg: EvalConfig, jcfg: EngineConfig, rows: list[BenchRow], gens: list[dict[str, Any] | None],
               judge_engine: Any, run_async: Callable[[Awaitable[Any]], Any] | None,
               label: str) -> dict[str, dict[str, int] | None]:
    """Judgment per bench row id for every document that has text (None: dropped)."""
    to_judge = [(r, g) for r, g in zip(rows, gens) if g is not None and (g.get("status") or "ok") == "ok"
                and (g.get("text") or "").strip()]
    _log(f"[eval] judging {len(to_judge)} documents with {label}")
    items = [(r.prompt, g["text"]) for r, g in to_judge]
    if not items:
        return {}
    if judge_engine is not None:
        coro = judge_all(judge_engine, items, cfg.judge_in_flight, cfg.judge_retries, log=_log)
    else:
        coro = _judge_with_own_engine(jcfg, items, cfg.judge_in_flight, cfg.judge_retries)
    verdicts = (run_async or asyncio.run)(coro)
    return {r.id: v for (r, _), v in zip(to_judge, verdicts)}


async def _judge_with_own_engine(jcfg: EngineConfig, items: list[tuple[str, str]], in_flight: int,
                                 retries: int) -> list[dict[str, int] | None]:
    from core.engines import build_engine

    engine = build_engine(jcfg)
    try:
        return await judge_all(engine, items, in_flight, retries, log=_log)
    finally:
        await engine.close()


# ---------------------------------------------------------------- the job


def _check(cfg: EvalConfig) -> None:
    if not cfg.bench or not cfg.output:
        raise ValueError("--bench and --output are required")
    if cfg.mode not in ("agentwrite", "direct"):
        raise ValueError(f"--mode must be agentwrite or direct, got {cfg.mode!r}")
    if cfg.limit is not None and cfg.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {cfg.limit}")


def run_eval(cfg: EvalConfig, ecfg: EngineConfig | None = None, acfg: AgentWriteConfig | None = None,
             scfg: StorageConfig | None = None, *, judge_engine: Any = None,
             run_async: Callable[[Awaitable[Any]], Any] | None = None) -> dict[str, Any]:
    """The whole evaluation; returns the summary (also written to ``summary.json``).

    ``judge_engine``: an already built engine to judge with (e.g. shared between evaluations);
    ``run_async`` runs a coroutine on that engine's event loop (default ``asyncio.run``).
    """
    ecfg, acfg, scfg = ecfg or EngineConfig(), acfg or AgentWriteConfig(), scfg or StorageConfig()
    _check(cfg)
    t0 = time.time()
    rows = read_bench(cfg.bench, scfg, cfg.limit)
    out = storage.resolve(cfg.output, scfg)
    storage.makedirs(out)
    run_id = cfg.run_id or default_run_id(cfg, ecfg, rows)
    gen_uri, gen_summary = cfg.generations, None
    if cfg.generations:
        _log(f"[eval] {len(rows)} prompts; scoring existing generations {gen_uri}")
    else:
        _log(f"[eval] {len(rows)} prompts; generating ({cfg.mode}) into {out.join('generations').uri}")
        gen_uri, gen_summary = generate(cfg, rows, run_id, ecfg, acfg, scfg, out)
    t_gen = time.time() - t0
    gen_rows = read_generations(gen_uri, scfg, cfg.run_id)
    if cfg.generations and not cfg.run_id:  # name the evaluation after the run it scores
        run_id = run_id_of(gen_rows, gen_uri, run_id)
    gens = join_generations(rows, gen_rows)

    jcfg = judge_engine_config(ecfg, cfg.judge_model, cfg.judge_endpoint, generation_model_default=True)
    label = judge_label(jcfg, judge_engine)
    t1 = time.time()
    judgments = judge_rows(cfg, jcfg, rows, gens, judge_engine, run_async, label)
    t_judge = time.time() - t1

    results = score_rows(rows, gens, judgments)
    seconds = {"generate": round(t_gen, 1), "judge": round(t_judge, 1), "total": round(time.time() - t0, 1)}
    summary = _summary(cfg, ecfg, results, run_id=run_id, generations=gen_uri, judge=label,
                       gen_summary=gen_summary, seconds=seconds, out=out)
    write_outputs(out, summary, results)
    return summary


def _summary(cfg: EvalConfig, ecfg: EngineConfig, results: list[dict[str, Any]], *, run_id: str, generations: str,
             judge: str, gen_summary: dict[str, Any] | None, seconds: dict[str, float],
             out: storage.Location) -> dict[str, Any]:
    """summary.json: what was evaluated, how, the scores (core.eval_metrics.summarize), timings, files."""
    models = sorted({r["model"] for r in results if r["model"]})
    modes = sorted({r["mode"] for r in results if r["mode"]}) or [cfg.mode]
    return {
        "run_id": run_id,
        "bench": cfg.bench,
        "mode": cfg.mode if not cfg.generations else modes[0],
        "model": ", ".join(models) or (safe_url(ecfg.endpoint) or ecfg.model or EMBEDDED_NAME),
        "judge_model": judge,
        "generations": generations,
        "generations_reused": bool(cfg.generations),
        **summarize(results),
        "seconds": seconds,
        "generate_summary": {k: gen_summary[k] for k in ("documents", "ok", "failed", "words", "seconds")}
        if gen_summary else None,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": {n: out.join(n).uri for n in OUTPUT_FILES},
        "config": {"eval": dataclasses.asdict(cfg)},
    }


def write_outputs(out: storage.Location, summary: dict[str, Any], results: list[dict[str, Any]]) -> None:
    """results.parquet, lengths.png, report.md and summary.json under ``out``."""
    title = f"{summary['model']} ({summary['mode']}) - S_l {fmt_num(summary['overall']['S_l'])}"
    storage.write_parquet(out.join("results.parquet"), pa.Table.from_pylist(results, schema=RESULT_SCHEMA))
    storage.write_bytes(out.join("lengths.png"), render_plot(results, summary["by_bucket"], title))
    storage.write_bytes(out.join("report.md"), render_report(summary, results).encode("utf-8"))
    storage.write_bytes(out.join("summary.json"), json.dumps(summary, indent=1, ensure_ascii=False).encode("utf-8"))


if __name__ == "__main__":
    sys.exit(main())
