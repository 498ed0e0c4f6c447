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
import io
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

import pyarrow as pa
import pyarrow.dataset as pads

from core import storage
from core.config import AgentWriteConfig, EngineConfig, GenerateConfig, StorageConfig, _f
from core.length import LENGTH_BUCKETS, count_words, detect_language, length_bucket, length_score
from core.redact import safe_url
from core.scores import (
    JUDGE_DIMENSIONS,
    dimension_scores,
    judge_document,
    overall_score,
    quality_score,
    repetition_stats,
    section_length_error,
)
from ray_jobs import console

EMBEDDED_LABEL = "SmolLM2-135M-Instruct"


@dataclass
class EvalConfig:
    """The LongBench-Write evaluation job (ray_jobs.evaluate): generate, judge, score, report."""

    bench: str = _f("", "benchmark JSONL, local or s3:// (fields: prompt, length; optional type)")
    output: str = _f("", "evaluation folder, local or s3://: generations/, results.parquet, report.md, lengths.png, summary.json")
    mode: str = _f("agentwrite", "generation mode: agentwrite (plan, then sections) or direct (one call)")
    generations: str | None = _f(None, "score these existing generations (a generate output root or one run_id=... folder) instead of generating")
    judge_model: str | None = _f(None, "judge model (HF directory or hub id); default: the generation model")
    judge_endpoint: str | None = _f(None, "OpenAI-compatible URL of the judge (use this on a cluster); default: --endpoint when judging with the generation model, else an in-process vLLM engine")
    limit: int | None = _f(None, "only the first N benchmark prompts")
    run_id: str | None = _f(None, "generation run id; default: derived from the benchmark, mode and model (reruns resume)")
    engines: int = _f(1, "generation engine actors")
    in_flight: int = _f(32, "documents in flight per generation engine")
    judge_in_flight: int = _f(32, "judge requests in flight at once")
    judge_retries: int = _f(2, "extra judge attempts for an invalid or cut-off answer before the judgment is dropped")


# ---------------------------------------------------------------- CLI

# YAML section -> config, in run_eval's argument order.
SECTIONS = {"eval": EvalConfig, "engine": EngineConfig, "agentwrite": AgentWriteConfig, "storage": StorageConfig}


def register(sub: argparse._SubParsersAction) -> None:
    from ray_jobs.cli import add_config_flags, add_sections

    p = sub.add_parser("eval", help="LongBench-Write evaluation: generate (Ray), judge, score, report",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="YAML with eval:, engine:, agentwrite:, storage: sections")
    add_sections(p, SECTIONS)
    p.set_defaults(func=run)

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
    print(f"S_l {_num(o['S_l'])}  S_q {_num(o['S_q'])}  S {_num(o['S'])}  over {o['n']} prompts "
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


# ---------------------------------------------------------------- benchmark input


@dataclass
class BenchRow:
    id: str
    prompt: str
    length: int
    type: str | None
    language: str


def read_bench(uri: str, scfg: StorageConfig | None = None, limit: int | None = None) -> list[BenchRow]:
    """Benchmark rows; the first bad line raises ValueError naming it (``bench.jsonl:7: ...``)."""
    loc = storage.resolve(uri, scfg)
    data = storage.read_bytes(loc)
    name = loc.uri.rsplit("/", 1)[-1]
    rows: list[BenchRow] = []
    for i, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        where = f"{name}:{i}"
        try:
            rec = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise ValueError(f"{where}: line is not valid UTF-8") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: malformed JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(rec, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(rec).__name__}")
        prompt = rec.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"{where}: field 'prompt' is missing or empty")
        length = rec.get("length")
        if isinstance(length, bool) or not isinstance(length, (int, float)) or length <= 0 or length != int(length):
            raise ValueError(f"{where}: field 'length' must be a positive integer, got {length!r}")
        typ = rec.get("type")
        if typ is not None and not isinstance(typ, str):
            raise ValueError(f"{where}: field 'type' must be a string, got {typ!r}")
        rows.append(BenchRow(f"bench-{len(rows):04d}", prompt.strip(), int(length), typ, detect_language(prompt)))
    if not rows:
        raise ValueError(f"{name}: no benchmark rows")
    return rows[:limit] if limit is not None else rows


def default_run_id(cfg: EvalConfig, ecfg: EngineConfig, rows: list[BenchRow]) -> str:
    key = json.dumps([[r.prompt, r.length] for r in rows] + [cfg.mode, ecfg.model or "embedded", ecfg.endpoint])
    return f"eval-{cfg.mode}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


# ---------------------------------------------------------------- generation


def _ray_up() -> bool:
    ray = sys.modules.get("ray")
    return bool(ray is not None and ray.is_initialized())


def generate(cfg: EvalConfig, rows: list[BenchRow], run_id: str, ecfg: EngineConfig, acfg: AgentWriteConfig,
             scfg: StorageConfig, out: storage.Location) -> tuple[str, dict[str, Any]]:
    """Write the prompts file, run the Ray generation job; returns (generations URI, summary)."""
    from ray_jobs.generate import run_generate

    prompts = out.join("_bench", "prompts.jsonl")
    body = "".join(json.dumps({"id": r.id, "prompt": r.prompt, "length": r.length,
                               **({"type": r.type} if r.type is not None else {})}, ensure_ascii=False) + "\n"
                   for r in rows)
    storage.write_bytes(prompts, body.encode("utf-8"))
    gen_root = out.join("generations")
    gcfg = GenerateConfig(input=prompts.uri, output=gen_root.uri, mode=cfg.mode, run_id=run_id,
                          engines=cfg.engines, in_flight=cfg.in_flight)
    was_up = _ray_up()
    summary = run_generate(gcfg, ecfg, acfg, scfg)
    if not was_up and _ray_up():  # free the engine actors' memory and cores for the judge
        sys.modules["ray"].shutdown()
    return gen_root.join(f"run_id={run_id}").uri, summary


GEN_COLUMNS = ["id", "prompt", "text", "status", "error", "sections", "mode", "model",
               "generated_tokens", "latency_s"]


def read_generations(uri: str, scfg: StorageConfig | None = None, run_id: str | None = None) -> list[dict[str, Any]]:
    """Document rows of a generate output (a root with run_id=... partitions, or one run folder)."""
    loc = storage.resolve(uri, scfg)
    files = storage.list_files(loc, ".parquet")
    if not files:
        raise storage.StorageError(f"no generations (Parquet files) under {uri}")
    ds = pads.dataset(files, filesystem=loc.fs, format="parquet",
                      partitioning=pads.partitioning(flavor="hive"), partition_base_dir=loc.path)
    names = set(ds.schema.names)
    for need in ("id", "prompt", "text"):
        if need not in names:
            raise ValueError(f"{uri}: generations lack column {need!r}")
    cols = [c for c in GEN_COLUMNS if c in names] + (["run_id"] if "run_id" in names else [])
    rows = ds.to_table(columns=cols).to_pylist()
    runs = sorted({str(r["run_id"]) for r in rows if r.get("run_id") is not None})
    if len(runs) > 1:
        if run_id in runs:
            rows = [r for r in rows if str(r["run_id"]) == run_id]
        else:
            raise ValueError(f"{uri} holds several runs ({', '.join(runs)}): point --generations at one "
                             f"run_id=... folder or pass --run-id")
    return rows


def join_generations(rows: list[BenchRow], gens: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
    """Generation per bench row: by id, else by identical prompt; ok documents win duplicates."""
    by_id: dict[str, dict[str, Any]] = {}
    by_prompt: dict[str, dict[str, Any]] = {}
    for g in gens:
        for key, table in ((g["id"], by_id), ((g.get("prompt") or "").strip(), by_prompt)):
            old = table.get(key)
            if old is None or (old.get("status") != "ok" and g.get("status", "ok") == "ok"):
                table[key] = g
    out = []
    for r in rows:
        g = by_id.get(r.id)
        if g is None or (g.get("prompt") or "").strip() != r.prompt:
            g = by_prompt.get(r.prompt)
        out.append(g)
    return out


# ---------------------------------------------------------------- judging


async def judge_all(engine: Any, items: list[tuple[str, str]], in_flight: int = 32,
                    retries: int = 2, progress: bool = True) -> list[dict[str, int] | None]:
    """Judge (instruction, text) pairs concurrently; None where the judgment was dropped."""
    sem = asyncio.Semaphore(max(1, in_flight))
    done = 0
    t0 = time.perf_counter()

    async def one(instr: str, text: str) -> dict[str, int] | None:
        nonlocal done
        async with sem:
            res = await judge_document(engine, instr, text, retries=retries)
        done += 1
        if progress and (done == len(items) or done % 25 == 0):
            print(f"[eval] judged {done}/{len(items)} ({time.perf_counter() - t0:.0f} s)", file=console.stream())
        return res

    return list(await asyncio.gather(*(one(i, t) for i, t in items)))


def judge_engine_config(cfg: EvalConfig, ecfg: EngineConfig) -> EngineConfig:
    same_model = cfg.judge_model is None
    endpoint = cfg.judge_endpoint or (ecfg.endpoint if same_model else None)
    kw = dict(model=cfg.judge_model if not same_model else ecfg.model, endpoint=endpoint,
              enforce_eager=ecfg.enforce_eager, dtype=ecfg.dtype, kv_cache_gib=ecfg.kv_cache_gib,
              cpu_threads_bind=ecfg.cpu_threads_bind, structured_backend=ecfg.structured_backend,
              gpu_memory_utilization=ecfg.gpu_memory_utilization,
              tensor_parallel_size=ecfg.tensor_parallel_size, max_num_seqs=ecfg.max_num_seqs,
              api_key=ecfg.api_key if endpoint == ecfg.endpoint else None)
    if same_model:
        kw["max_model_len"] = ecfg.max_model_len
    return EngineConfig(**kw)


def _judge_label(cfg: EvalConfig, ecfg: EngineConfig, engine: Any = None) -> str:
    if engine is not None and getattr(engine, "model_name", None):
        return str(engine.model_name)
    jc = judge_engine_config(cfg, ecfg)
    return jc.model or (safe_url(jc.endpoint) or EMBEDDED_LABEL)


def _run_judge(cfg: EvalConfig, ecfg: EngineConfig, items: list[tuple[str, str]], judge_engine: Any,
               run_async: Callable[[Awaitable[Any]], Any] | None) -> list[dict[str, int] | None]:
    if not items:
        return []
    if judge_engine is not None:
        coro = judge_all(judge_engine, items, cfg.judge_in_flight, cfg.judge_retries)
        return (run_async or asyncio.run)(coro)

    async def with_own_engine() -> list[dict[str, int] | None]:
        from core.engines import build_engine

        engine = build_engine(judge_engine_config(cfg, ecfg))
        try:
            return await judge_all(engine, items, cfg.judge_in_flight, cfg.judge_retries)
        finally:
            await engine.close()

    return (run_async or asyncio.run)(with_own_engine())


# ---------------------------------------------------------------- scoring


RESULT_SCHEMA = pa.schema(
    [("id", pa.string()), ("prompt", pa.string()), ("type", pa.string()), ("language", pa.string()),
     ("bucket", pa.string()), ("required", pa.int64()), ("produced", pa.int64()), ("s_l", pa.float64()),
     ("status", pa.string()), ("error", pa.string()), ("judge_status", pa.string())]
    + [(d, pa.int64()) for d in JUDGE_DIMENSIONS]
    + [("s_q", pa.float64()), ("repeated_4gram_share", pa.float64()), ("longest_repeat", pa.int64()),
       ("sections", pa.int64()), ("section_error", pa.float64()), ("generated_tokens", pa.int64()),
       ("latency_s", pa.float64()), ("mode", pa.string()), ("model", pa.string())],
    metadata={"longwriter.eval_schema_version": "1"},
)


def score_rows(rows: list[BenchRow], gens: list[dict[str, Any] | None],
               judgments: dict[str, dict[str, int] | None]) -> list[dict[str, Any]]:
    """One result row per benchmark prompt (RESULT_SCHEMA)."""
    out = []
    for r, g in zip(rows, gens):
        text = (g or {}).get("text") or ""
        status = "missing" if g is None else ("ok" if (g.get("status") or "ok") == "ok" else "failed")
        produced = count_words(text) if status == "ok" else 0
        j = judgments.get(r.id)
        judge_status = "ok" if j else ("dropped" if r.id in judgments else "no_text")
        rep = repetition_stats(text) if status == "ok" else {"repeated_4gram_share": None, "longest_repeat": None}
        secs = (g or {}).get("sections") or []
        row = {
            "id": r.id, "prompt": r.prompt, "type": r.type, "language": r.language,
            "bucket": length_bucket(r.length), "required": r.length, "produced": produced,
            "s_l": length_score(r.length, produced), "status": status,
            "error": (g or {}).get("error") if g is not None else "no generation for this prompt",
            "judge_status": judge_status,
            **{d: (j[d] if j else None) for d in JUDGE_DIMENSIONS},
            "s_q": quality_score([j]) if j else None,
            "repeated_4gram_share": rep["repeated_4gram_share"], "longest_repeat": rep["longest_repeat"],
            "sections": len(secs), "section_error": section_length_error(secs) if status == "ok" else None,
            "generated_tokens": (g or {}).get("generated_tokens"), "latency_s": (g or {}).get("latency_s"),
            "mode": (g or {}).get("mode"), "model": (g or {}).get("model"),
        }
        out.append(row)
    return out


def _mean(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.fmean(xs) if xs else None


def aggregate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """S_l, S_q, S and the side metrics over a group of result rows."""
    judged = [{d: r[d] for d in JUDGE_DIMENSIONS} for r in rows if r["judge_status"] == "ok"]
    s_l = _mean([r["s_l"] for r in rows])
    s_q = quality_score(judged) if judged else None
    ok = [r for r in rows if r["status"] == "ok"]
    return {
        "n": len(rows),
        "S_l": s_l,
        "S_q": s_q,
        "S": overall_score(s_l, s_q) if s_l is not None else None,
        "judged": len(judged),
        "judge_dropped": sum(r["judge_status"] == "dropped" for r in rows),
        "failed": sum(r["status"] == "failed" for r in rows),
        "missing": sum(r["status"] == "missing" for r in rows),
        "required_mean": _mean([r["required"] for r in rows]),
        "produced_mean": _mean([r["produced"] for r in rows]),
        "repeated_4gram_share": _mean([r["repeated_4gram_share"] for r in ok]),
        "longest_repeat_mean": _mean([r["longest_repeat"] for r in ok]),
        "longest_repeat_max": max((r["longest_repeat"] or 0 for r in ok), default=None),
        "section_error": _mean([r["section_error"] for r in ok]),
    }


def _bucket_order(label: str) -> int:
    for i, (lo, _) in enumerate(LENGTH_BUCKETS):
        if length_bucket(lo) == label:
            return i
    return len(LENGTH_BUCKETS)


def group(rows: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    keys = {r[key] if r[key] is not None else "(none)" for r in rows}
    order = sorted(keys, key=_bucket_order) if key == "bucket" else sorted(keys)
    return {k: aggregate([r for r in rows if (r[key] if r[key] is not None else "(none)") == k]) for k in order}


# ---------------------------------------------------------------- report


def _num(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _md_cell(s: Any) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _group_table(title: str, groups: dict[str, dict[str, Any]]) -> list[str]:
    lines = [f"## By {title}", "", f"| {title} | prompts | required (mean words) | produced (mean words) | S_l | S_q | S | judged |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for k, g in groups.items():
        lines.append(f"| {_md_cell(k)} | {g['n']} | {_num(g['required_mean'], 0)} | {_num(g['produced_mean'], 0)} | "
                     f"{_num(g['S_l'])} | {_num(g['S_q'])} | {_num(g['S'])} | {g['judged']} |")
    return lines + [""]


def render_report(summary: dict[str, Any], results: list[dict[str, Any]]) -> str:
    o = summary["overall"]
    c = summary["counts"]
    lines = [
        "# LongBench-Write evaluation", "",
        f"- run: `{summary['run_id']}`, mode `{summary['mode']}`, model `{summary['model']}`, judge `{summary['judge_model']}`",
        f"- benchmark: `{summary['bench']}` ({o['n']} prompts)",
        f"- generations: `{summary['generations']}`" + (" (reused)" if summary["generations_reused"] else ""),
        f"- finished {summary['finished_at']}; generation {summary['seconds']['generate']:.0f} s, "
        f"judging {summary['seconds']['judge']:.0f} s", "",
        "## Overall", "",
        "| metric | value |", "|---|---:|",
        f"| S_l (length following) | {_num(o['S_l'])} |",
        f"| S_q (quality, judge) | {_num(o['S_q'])} |",
        f"| S = (S_l + S_q) / 2 | {_num(o['S'])} |",
        f"| prompts | {o['n']} |",
        f"| judged | {o['judged']} |",
        f"| judgments dropped | {c['judge_dropped']} |",
        f"| generation failed | {c['failed']} |",
        f"| generation missing | {c['missing']} |",
        f"| mean words required / produced | {_num(o['required_mean'], 0)} / {_num(o['produced_mean'], 0)} |", "",
        "S_l: 100 when the word count matches the request, falling by 1/3 per ratio unit above it and 1/2 below; "
        "failed or missing documents score 0. S_q: each dimension's mean rating m (1-5) maps to (m - 1) * 25; "
        "S_q is the mean of the six dimensions over the judged prompts. The judge was told to ignore length.", "",
    ]
    lines += _group_table("length bucket", summary["by_bucket"])
    lines += _group_table("type", summary["by_type"])
    lines += _group_table("language", summary["by_language"])
    lines += ["## Quality by dimension", "", "| dimension | mean rating (1-5) | score (0-100) |", "|---|---:|---:|"]
    dims = summary["dimensions"]
    for d in JUDGE_DIMENSIONS:
        score = dims.get(d)
        lines.append(f"| {d} | {_num(score / 25 + 1, 2) if score is not None else 'n/a'} | {_num(score)} |")
    lines += ["", "## Repetition", "",
              "Share of word 4-grams that repeat an earlier one, and the longest span (words; one per CJK "
              "character) that occurs at least twice. Documents with text only.", "",
              "| group | repeated 4-gram share (mean) | longest repeated span (mean) | longest repeated span (max) |",
              "|---|---:|---:|---:|"]
    for name, g in [("overall", o), *summary["by_bucket"].items()]:
        lines.append(f"| {_md_cell(name)} | {_pct(g['repeated_4gram_share'])} | {_num(g['longest_repeat_mean'])} | "
                     f"{g['longest_repeat_max'] if g['longest_repeat_max'] is not None else 'n/a'} |")
    worst = sorted((r for r in results if r["status"] == "ok"), key=lambda r: -(r["repeated_4gram_share"] or 0))[:3]
    if worst:
        lines += ["", "Most repetitive: " + ", ".join(f"`{r['id']}` {_pct(r['repeated_4gram_share'])}" for r in worst)]
    lines += ["", "## Section length error (AgentWrite)", ""]
    if o["section_error"] is None:
        lines += ["n/a: no AgentWrite sections (direct mode, or no document written).", ""]
    else:
        lines += ["Mean of |words - budget| / budget over each document's sections, then over documents.", "",
                  "| group | section length error |", "|---|---:|",
                  f"| overall | {_pct(o['section_error'])} |"]
        lines += [f"| {_md_cell(k)} | {_pct(g['section_error'])} |" for k, g in summary["by_bucket"].items()]
        lines.append("")
    lines += ["## Lowest length scores", "", "| id | bucket | required | produced | S_l | status |", "|---|---|---:|---:|---:|---|"]
    for r in sorted(results, key=lambda r: r["s_l"])[:5]:
        st = r["status"] + (f": {_md_cell(r['error'])[:120]}" if r["status"] != "ok" and r["error"] else "")
        lines.append(f"| `{r['id']}` | {r['bucket']} | {r['required']} | {r['produced']} | {_num(r['s_l'])} | {st} |")
    lines += ["", "Files: `results.parquet` (one row per prompt), `lengths.png`, `summary.json`.", ""]
    return "\n".join(lines)


def render_plot(results: list[dict[str, Any]], by_bucket: dict[str, dict[str, Any]], title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    colors = {"en": "tab:blue", "zh": "tab:red"}
    req = [r["required"] for r in results]
    lo, hi = max(1, min(req) / 2), max(max(req), max((r["produced"] for r in results), default=1)) * 2
    for lang in sorted({r["language"] for r in results}):
        sub = [r for r in results if r["language"] == lang]
        xs = [r["required"] for r in sub if r["produced"] > 0]
        ys = [r["produced"] for r in sub if r["produced"] > 0]
        ax1.scatter(xs, ys, s=22, alpha=0.75, color=colors.get(lang, "tab:gray"), label=f"{lang} ({len(sub)})")
        zeros = [r["required"] for r in sub if r["produced"] <= 0]
        if zeros:  # nothing produced: drawn on the bottom edge
            ax1.scatter(zeros, [lo] * len(zeros), marker="x", color=colors.get(lang, "tab:gray"),
                        label=f"{lang}: nothing produced ({len(zeros)})")
    ax1.plot([lo, hi], [lo, hi], "k--", lw=1, label="produced = required")
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    ax1.set_xlim(lo, hi)
    ax1.set_ylim(lo * 0.9, hi)
    ax1.set_xlabel("required words")
    ax1.set_ylabel("produced words")
    ax1.set_title("Length following")
    ax1.legend(fontsize=8, loc="upper left")
    labels = list(by_bucket)
    vals = [by_bucket[b]["S_l"] or 0.0 for b in labels]
    bars = ax2.bar(labels, vals, color="tab:green")
    for bar, b in zip(bars, labels):
        ax2.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 1.5,
                 f"{bar.get_height():.1f}\nn={by_bucket[b]['n']}", ha="center", va="bottom", fontsize=8)
    ax2.set_ylim(0, 115)
    ax2.set_xlabel("required length bucket (words)")
    ax2.set_ylabel("S_l")
    ax2.set_title("Length score by bucket")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


# ---------------------------------------------------------------- the job


def run_eval(cfg: EvalConfig, ecfg: EngineConfig | None = None, acfg: AgentWriteConfig | None = None,
             scfg: StorageConfig | None = None, *, judge_engine: Any = None,
             run_async: Callable[[Awaitable[Any]], Any] | None = None) -> dict[str, Any]:
    """The whole evaluation; returns the summary (also written to ``summary.json``).

    ``judge_engine``: an already built engine to judge with (e.g. shared between evaluations);
    ``run_async`` runs a coroutine on that engine's event loop (default ``asyncio.run``).
    """
    ecfg, acfg, scfg = ecfg or EngineConfig(), acfg or AgentWriteConfig(), scfg or StorageConfig()
    if not cfg.bench or not cfg.output:
        raise ValueError("--bench and --output are required")
    if cfg.mode not in ("agentwrite", "direct"):
        raise ValueError(f"--mode must be agentwrite or direct, got {cfg.mode!r}")
    if cfg.limit is not None and cfg.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {cfg.limit}")
    t0 = time.time()
    rows = read_bench(cfg.bench, scfg, cfg.limit)
    out = storage.resolve(cfg.output, scfg)
    storage.makedirs(out)
    run_id = cfg.run_id or default_run_id(cfg, ecfg, rows)
    gen_summary: dict[str, Any] | None = None
    if cfg.generations:
        gen_uri = cfg.generations
        print(f"[eval] {len(rows)} prompts; scoring existing generations {gen_uri}", file=console.stream())
    else:
        print(f"[eval] {len(rows)} prompts; generating ({cfg.mode}) into {out.join('generations').uri}", file=console.stream())
        gen_uri, gen_summary = generate(cfg, rows, run_id, ecfg, acfg, scfg, out)
    t_gen = time.time() - t0
    gen_rows = read_generations(gen_uri, scfg, cfg.run_id)
    if cfg.generations and not cfg.run_id:  # name the evaluation after the run it scores
        found = sorted({str(g["run_id"]) for g in gen_rows if g.get("run_id") is not None})
        tail = gen_uri.rstrip("/").rsplit("/", 1)[-1]
        run_id = found[0] if len(found) == 1 else tail[len("run_id="):] if tail.startswith("run_id=") else run_id
    gens = join_generations(rows, gen_rows)

    to_judge = [(r, g) for r, g in zip(rows, gens) if g is not None and (g.get("status") or "ok") == "ok"
                and (g.get("text") or "").strip()]
    judge_label = _judge_label(cfg, ecfg, judge_engine)
    print(f"[eval] judging {len(to_judge)} documents with {judge_label}", file=console.stream())
    t1 = time.time()
    verdicts = _run_judge(cfg, ecfg, [(r.prompt, g["text"]) for r, g in to_judge], judge_engine, run_async)
    t_judge = time.time() - t1
    judgments = {r.id: v for (r, _), v in zip(to_judge, verdicts)}

    results = score_rows(rows, gens, judgments)
    overall = aggregate(results)
    judged = [{d: r[d] for d in JUDGE_DIMENSIONS} for r in results if r["judge_status"] == "ok"]
    models = sorted({r["model"] for r in results if r["model"]})
    files = {n: out.join(n).uri for n in ("results.parquet", "report.md", "lengths.png", "summary.json")}
    summary: dict[str, Any] = {
        "run_id": run_id,
        "bench": cfg.bench,
        "mode": cfg.mode if not cfg.generations else (sorted({r["mode"] for r in results if r["mode"]}) or [cfg.mode])[0],
        "model": ", ".join(models) or (safe_url(ecfg.endpoint) or ecfg.model or EMBEDDED_LABEL),
        "judge_model": judge_label,
        "generations": gen_uri,
        "generations_reused": bool(cfg.generations),
        "overall": overall,
        "counts": {"prompts": len(results), "judged": overall["judged"], "judge_dropped": overall["judge_dropped"],
                   "no_text": sum(r["judge_status"] == "no_text" for r in results),
                   "failed": overall["failed"], "missing": overall["missing"]},
        "dimensions": dimension_scores(judged) if judged else {},
        "by_bucket": group(results, "bucket"),
        "by_type": group(results, "type"),
        "by_language": group(results, "language"),
        "seconds": {"generate": round(t_gen, 1), "judge": round(t_judge, 1), "total": round(time.time() - t0, 1)},
        "generate_summary": {k: gen_summary[k] for k in ("documents", "ok", "failed", "words", "seconds")}
        if gen_summary else None,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": files,
        "config": {"eval": dataclasses.asdict(cfg)},
    }
    storage.write_parquet(out.join("results.parquet"), pa.Table.from_pylist(results, schema=RESULT_SCHEMA))
    storage.write_bytes(out.join("lengths.png"), render_plot(
        results, summary["by_bucket"], f"{summary['model']} ({summary['mode']}) - S_l {_num(overall['S_l'])}"))
    storage.write_bytes(out.join("report.md"), render_report(summary, results).encode("utf-8"))
    storage.write_bytes(out.join("summary.json"), json.dumps(summary, indent=1, ensure_ascii=False).encode("utf-8"))
    return summary


# ---------------------------------------------------------------- compare


def load_eval(uri: str, scfg: StorageConfig | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    import pyarrow.parquet as pq

    loc = storage.resolve(uri, scfg)
    summary = json.loads(storage.read_bytes(loc.join("summary.json")))
    results = pq.read_table(pa.BufferReader(storage.read_bytes(loc.join("results.parquet")))).to_pylist()
    return summary, results


def compare(a: str, b: str, scfg: StorageConfig | None = None) -> str:
    """Side-by-side Markdown table of two evaluations, overall and per length bucket."""
    (sa, ra), (sb, rb) = load_eval(a, scfg), load_eval(b, scfg)
    ga, gb = group(ra, "bucket"), group(rb, "bucket")
    scopes = [("overall", aggregate(ra), aggregate(rb))]
    for k in sorted(set(ga) | set(gb), key=_bucket_order):
        scopes.append((k, ga.get(k), gb.get(k)))
    metrics = [("S_l", "S_l", _num), ("S_q", "S_q", _num), ("S", "S", _num),
               ("mean words", "produced_mean", lambda x: _num(x, 0)),
               ("repeated 4-gram share", "repeated_4gram_share", _pct)]
    lines = ["# LongBench-Write comparison", "",
             f"- A: `{sa['run_id']}` ({sa['mode']}, {sa['model']}; judge {sa['judge_model']}) at `{a}`",
             f"- B: `{sb['run_id']}` ({sb['mode']}, {sb['model']}; judge {sb['judge_model']}) at `{b}`", "",
             "| scope | metric | A | B | B - A |", "|---|---|---:|---:|---:|"]
    for scope, x, y in scopes:
        label = f"{scope} (n={x['n'] if x else 0}/{y['n'] if y else 0})"
        for name, key, fmt in metrics:
            va, vb = (x or {}).get(key), (y or {}).get(key)
            if va is not None and vb is not None:
                delta = vb - va
                d = (f"{100 * delta:+.1f} pts" if key == "repeated_4gram_share"
                     else f"{delta:+.0f}" if key == "produced_mean" else f"{delta:+.1f}")
            else:
                d = "n/a"
            lines.append(f"| {_md_cell(label)} | {name} | {fmt(va)} | {fmt(vb)} | {d} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
