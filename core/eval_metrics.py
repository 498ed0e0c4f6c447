"""Evaluation metrics: one result row per benchmark prompt, and S_l / S_q / S over groups of them.

The scores themselves (S_l, the judge's S_q, S, repetition, section budgets) are
:mod:`core.length`, :mod:`core.scores` and :mod:`core.text`; this module applies them to
benchmark rows and their generations and aggregates overall, by length bucket, type and
language. Pure Python and Arrow, no Ray.
"""

from __future__ import annotations

import statistics
from typing import Any

import pyarrow as pa

from core.eval_data import BenchRow
from core.length import LENGTH_BUCKETS, length_bucket, length_score
from core.scores import JUDGE_DIMENSIONS, dimension_scores, overall_score, quality_score, section_length_error
from core.text import count_words, cross_section_repeat, nonprose_share, repetition_stats

RESULT_SCHEMA = pa.schema(
    [("id", pa.string()), ("prompt", pa.string()), ("type", pa.string()), ("language", pa.string()),
     ("bucket", pa.string()), ("required", pa.int64()), ("produced", pa.int64()), ("s_l", pa.float64()),
     ("status", pa.string()), ("error", pa.string()), ("judge_status", pa.string())]
    + [(d, pa.int64()) for d in JUDGE_DIMENSIONS]
    + [("s_q", pa.float64()), ("repeated_4gram_share", pa.float64()), ("longest_repeat", pa.int64()),
       ("sections", pa.int64()), ("section_error", pa.float64()), ("generated_tokens", pa.int64()),
       ("latency_s", pa.float64()), ("mode", pa.string()), ("model", pa.string()),
       ("nonprose_share", pa.float64()), ("cross_section_repeat", pa.float64()), ("plan_check", pa.string())],
    metadata={"longwriter.eval_schema_version": "2"},
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
            "nonprose_share": nonprose_share(text) if status == "ok" else None,
            "cross_section_repeat": cross_section_repeat([s.get("text") or "" for s in secs]) if secs else None,
            "plan_check": plan_check((g or {}).get("calls") or []) if secs else None,
        }
        out.append(row)
    return out


def plan_check(calls: list[dict[str, Any]]) -> str:
    """How an AgentWrite document got its plan, from its call-stats notes: "fallback", "retried",
    "named" (the instruction's named sections adopted) or "ok"."""
    notes = [c.get("finish_reason") or "" for c in calls if c.get("kind") == "note" and c.get("step") == -1]
    for word, label in (("fell back", "fallback"), ("retried", "retried"), ("named", "named")):
        if any(n.startswith(word) or word in n for n in notes):
            return label
    return "ok"


def _mean(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.fmean(xs) if xs else None


def _judged(rows: list[dict[str, Any]]) -> list[dict[str, int]]:
    return [{d: r[d] for d in JUDGE_DIMENSIONS} for r in rows if r["judge_status"] == "ok"]


def aggregate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """S_l, S_q, S and the side metrics over a group of result rows."""
    judged = _judged(rows)
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
        "nonprose_share": _mean([r.get("nonprose_share") for r in ok]),
        "cross_section_repeat": _mean([r.get("cross_section_repeat") for r in ok]),
        "plan_retried": sum(r.get("plan_check") == "retried" for r in rows),
        "plan_fallback": sum(r.get("plan_check") == "fallback" for r in rows),
    }


def bucket_order(label: str) -> int:
    """Sort key of a :func:`core.length.length_bucket` label: shortest bucket first."""
    for i, (lo, _) in enumerate(LENGTH_BUCKETS):
        if length_bucket(lo) == label:
            return i
    return len(LENGTH_BUCKETS)


def group(rows: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    keys = {r[key] if r[key] is not None else "(none)" for r in rows}
    order = sorted(keys, key=bucket_order) if key == "bucket" else sorted(keys)
    return {k: aggregate([r for r in rows if (r[key] if r[key] is not None else "(none)") == k]) for k in order}


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The scores part of an evaluation summary: overall, counts, dimensions and the groups."""
    overall = aggregate(results)
    judged = _judged(results)
    return {
        "overall": overall,
        "counts": {"prompts": len(results), "judged": overall["judged"], "judge_dropped": overall["judge_dropped"],
                   "no_text": sum(r["judge_status"] == "no_text" for r in results),
                   "failed": overall["failed"], "missing": overall["missing"]},
        "dimensions": dimension_scores(judged) if judged else {},
        "by_bucket": group(results, "bucket"),
        "by_type": group(results, "type"),
        "by_language": group(results, "language"),
        "by_language_bucket": {f"{lang} {b}": g for lang in sorted({r["language"] for r in results})
                               for b, g in group([r for r in results if r["language"] == lang], "bucket").items()},
    }
