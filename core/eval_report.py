"""The evaluation's outputs: the Markdown report, the length plot, and the comparison of two runs.

Everything here renders a summary (:func:`core.eval_metrics.summarize` plus run metadata) and
result rows (:data:`core.eval_metrics.RESULT_SCHEMA`); nothing generates or judges. No Ray.
"""

from __future__ import annotations

import io
import json
import math
from typing import Any

import pyarrow as pa

from core import storage
from core.config import StorageConfig
from core.eval_metrics import aggregate, bucket_order, group
from core.scores import JUDGE_DIMENSIONS


def fmt_num(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def fmt_pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _md_cell(s: Any) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _group_table(title: str, groups: dict[str, dict[str, Any]]) -> list[str]:
    lines = [f"## By {title}", "", f"| {title} | prompts | required (mean words) | produced (mean words) | S_l | S_q | S | judged |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for k, g in groups.items():
        lines.append(f"| {_md_cell(k)} | {g['n']} | {fmt_num(g['required_mean'], 0)} | {fmt_num(g['produced_mean'], 0)} | "
                     f"{fmt_num(g['S_l'])} | {fmt_num(g['S_q'])} | {fmt_num(g['S'])} | {g['judged']} |")
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
        f"| S_l (length following) | {fmt_num(o['S_l'])} |",
        f"| S_q (quality, judge) | {fmt_num(o['S_q'])} |",
        f"| S = (S_l + S_q) / 2 | {fmt_num(o['S'])} |",
        f"| prompts | {o['n']} |",
        f"| judged | {o['judged']} |",
        f"| judgments dropped | {c['judge_dropped']} |",
        f"| generation failed | {c['failed']} |",
        f"| generation missing | {c['missing']} |",
        f"| mean words required / produced | {fmt_num(o['required_mean'], 0)} / {fmt_num(o['produced_mean'], 0)} |", "",
        "S_l: 100 when the word count matches the request, falling by 1/3 per ratio unit above it and 1/2 below; "
        "failed or missing documents score 0. S_q: each dimension's mean rating m (1-5) maps to (m - 1) * 25; "
        "S_q is the mean of the six dimensions over the judged prompts. The judge was told to ignore length.", "",
    ]
    lines += _group_table("length bucket", summary["by_bucket"])
    lines += _group_table("type", summary["by_type"])
    lines += _group_table("language", summary["by_language"])
    if "by_language_bucket" in summary:  # summaries written before schema 2 lack it
        lines += _group_table("language and length bucket", summary["by_language_bucket"])
        lines += ["## Fidelity (AgentWrite)", "",
                  "Non-prose share: characters inside runs of one punctuation mark, letter strings far longer "
                  "than a word or mixed-script gibberish (core.text.nonprose_spans), after clean-up. Cross-section "
                  "repetition: share of a document's word 4-grams in sections 2..n already used by an earlier "
                  "section. Plans: retried after failing the plan checks, or fallen back.", "",
                  "| group | non-prose share | cross-section repetition | plans retried | plans fell back |",
                  "|---|---:|---:|---:|---:|"]
        for name, g in [("overall", o), *summary["by_language"].items()]:
            lines.append(f"| {_md_cell(name)} | {fmt_pct(g.get('nonprose_share'))} | "
                         f"{fmt_pct(g.get('cross_section_repeat'))} | {g.get('plan_retried', 0)} | {g.get('plan_fallback', 0)} |")
        lines.append("")
    lines += ["## Quality by dimension", "", "| dimension | mean rating (1-5) | score (0-100) |", "|---|---:|---:|"]
    dims = summary["dimensions"]
    for d in JUDGE_DIMENSIONS:
        score = dims.get(d)
        lines.append(f"| {d} | {fmt_num(score / 25 + 1, 2) if score is not None else 'n/a'} | {fmt_num(score)} |")
    lines += ["", "## Repetition", "",
              "Share of word 4-grams that repeat an earlier one, and the longest span (words; one per CJK "
              "character) that occurs at least twice. Documents with text only.", "",
              "| group | repeated 4-gram share (mean) | longest repeated span (mean) | longest repeated span (max) |",
              "|---|---:|---:|---:|"]
    for name, g in [("overall", o), *summary["by_bucket"].items()]:
        lines.append(f"| {_md_cell(name)} | {fmt_pct(g['repeated_4gram_share'])} | {fmt_num(g['longest_repeat_mean'])} | "
                     f"{g['longest_repeat_max'] if g['longest_repeat_max'] is not None else 'n/a'} |")
    worst = sorted((r for r in results if r["status"] == "ok"), key=lambda r: -(r["repeated_4gram_share"] or 0))[:3]
    if worst:
        lines += ["", "Most repetitive: " + ", ".join(f"`{r['id']}` {fmt_pct(r['repeated_4gram_share'])}" for r in worst)]
    lines += ["", "## Section length error (AgentWrite)", ""]
    if o["section_error"] is None:
        lines += ["n/a: no AgentWrite sections (direct mode, or no document written).", ""]
    else:
        lines += ["Mean of |words - budget| / budget over each document's sections, then over documents.", "",
                  "| group | section length error |", "|---|---:|",
                  f"| overall | {fmt_pct(o['section_error'])} |"]
        lines += [f"| {_md_cell(k)} | {fmt_pct(g['section_error'])} |" for k, g in summary["by_bucket"].items()]
        lines.append("")
    lines += ["## Lowest length scores", "", "| id | bucket | required | produced | S_l | status |", "|---|---|---:|---:|---:|---|"]
    for r in sorted(results, key=lambda r: r["s_l"])[:5]:
        st = r["status"] + (f": {_md_cell(r['error'])[:120]}" if r["status"] != "ok" and r["error"] else "")
        lines.append(f"| `{r['id']}` | {r['bucket']} | {r['required']} | {r['produced']} | {fmt_num(r['s_l'])} | {st} |")
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
    for k in sorted(set(ga) | set(gb), key=bucket_order):
        scopes.append((k, ga.get(k), gb.get(k)))
    metrics = [("S_l", "S_l", fmt_num), ("S_q", "S_q", fmt_num), ("S", "S", fmt_num),
               ("mean words", "produced_mean", lambda x: fmt_num(x, 0)),
               ("repeated 4-gram share", "repeated_4gram_share", fmt_pct)]
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
