"""The plan step of AgentWrite: target length, section count, the plan's schema, parsing, budgets.

Pure functions: a plan is a list of ``{"point", "words"}`` entries whose words sum to the
target. The writer (core.agentwrite) asks the engine for one and hands its text here.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from core import prompts
from core.config import AgentWriteConfig
from core.length import parse_target_length
from core.text import line_key


class DocumentError(RuntimeError):
    """This document cannot be written (bad input or an unusable plan); one-line reason."""


# ---------------------------------------------------------------- target and plan


def resolve_target(length: int | None, instruction: str, cfg: AgentWriteConfig) -> tuple[int, str]:
    """(target words, where it came from): the row, the instruction text, or the default."""
    if length is not None:
        return int(length), "row"
    parsed = parse_target_length(instruction)
    if parsed:
        return parsed, "instruction"
    return cfg.default_length, "default"


def section_count_range(target: int, cfg: AgentWriteConfig) -> tuple[int, int]:
    """Fewest and most sections for a target (300 words: 1-2; 600: 2-3; 10,000 words: 15-30).

    Past two minimum-size sections the plan must have at least two: a one-section plan is
    direct writing with extra steps, and small models like to collapse plans to one entry.
    """
    n_min = max(1, math.ceil(target / cfg.max_section_words))
    if target > 2 * cfg.min_section_words:
        n_min = max(n_min, 2)
    n_max = min(cfg.max_sections, max(n_min, math.ceil(target / (0.6 * cfg.words_per_section))))
    return min(n_min, n_max), n_max


def plan_schema(n_min: int, n_max: int, target: int) -> dict[str, Any]:
    item = {
        "type": "object",
        "properties": {
            "point": {"type": "string", "minLength": 3, "maxLength": 160},
            "words": {"type": "integer", "minimum": 10, "maximum": max(20, target)},
        },
        "required": ["point", "words"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {"sections": {"type": "array", "minItems": n_min, "maxItems": n_max, "items": item}},
        "required": ["sections"],
        "additionalProperties": False,
    }


def parse_plan(text: str) -> list[dict[str, Any]]:
    """Entries of a plan answer; DocumentError if it is not a usable JSON plan."""
    m = re.search(r"\{.*\}", text, re.S)
    try:
        data = json.loads(m.group(0) if m else text)
    except (json.JSONDecodeError, AttributeError):
        raise DocumentError("plan is not valid JSON") from None
    entries = data.get("sections") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise DocumentError("plan JSON has no 'sections' list")
    out = []
    for e in entries:
        if not isinstance(e, dict):
            continue
        point = " ".join(str(e.get("point", "")).split())
        try:
            words = int(e.get("words", 0))
        except (TypeError, ValueError, OverflowError):
            words = 0
        if _meaningful(point):
            out.append({"point": point, "words": words})
    if not out:
        raise DocumentError("plan has no usable sections")
    return out


def _meaningful(point: str) -> bool:
    """A point that says something: 3+ letters, or 2+ CJK characters ("引言"); not "123" or "1},{"."""
    cjk = sum("\u3400" <= ch <= "\u9fff" for ch in point)
    return cjk >= 2 or sum(ch.isalpha() for ch in point) >= 3


# ---------------------------------------------------------------- plan checks

_DEBRIS_RE = re.compile(r"[{}\[\]<>]|[A-Za-z]_[A-Za-z]|\"\s*:|^\W*$")


def check_plan(entries: list[dict[str, Any]], instruction: str, system: str, n_min: int) -> tuple[list[dict[str, Any]], str]:
    """(the points that are real plan points, what was wrong: "" when the plan passes).

    Points go when they are JSON or markup debris ("{'1,500-word'_urban_heat_map..."), echo the
    system prompt or most of the instruction, or repeat an earlier point once numbering,
    punctuation and case are set aside. The plan fails when fewer than ``n_min`` points are
    left or more than half of them went.
    """
    ikey, skey = line_key(instruction), line_key(system)
    kept, seen, why = [], set(), []
    for e in entries:
        key = line_key(e["point"])
        if _DEBRIS_RE.search(e["point"]):
            why.append("debris")
        elif len(key) >= 8 and (key in skey or (key in ikey and len(key) >= 0.6 * len(ikey)) or (ikey and ikey in key)):
            why.append("echoes the prompt")
        elif key in seen:
            why.append("repeated")
        else:
            seen.add(key)
            kept.append(e)
    if not why:
        return kept, ""
    counts = ", ".join(f"{why.count(w)} {w}" for w in dict.fromkeys(why))
    bad = len(kept) < n_min or len(why) > len(entries) / 2
    return kept, (f"plan has {len(kept)} usable of {len(entries)} points ({counts})" if bad else "")


_EN_NAMED_RE = re.compile(
    r"\b(?:sections?|parts?|chapters?)\s*(?:on|about|covering|for|:|—|-)\s*(?P<list>[^.;:!?\n]+)", re.I)
_ZH_NAMED_RE = re.compile(
    r"(?:分为|分成|包括|包含)(?P<list>[^。；！？，,\n]+?)(?:[两二三四五六七八九十\d]+\s*个?)?(?:部分|章|节|方面)")


def named_sections(instruction: str) -> list[str]:
    """Sections the instruction names, in order: "with sections on trees, roofs, water and policy"
    -> [trees, roofs, water, policy]; "分为起源、发展和影响三部分" -> [起源, 发展, 影响]. [] when none."""
    m = _EN_NAMED_RE.search(instruction)
    if m:
        items = re.split(r"\s*,\s*(?:and\s+|or\s+)?|\s+and\s+", m.group("list").strip())
    else:
        m = _ZH_NAMED_RE.search(instruction)
        if not m:
            return []
        items = re.split(r"[、]|以及|和|与|及", m.group("list").strip())
    items = [" ".join(i.strip(" \"'“”‘’「」").split()) for i in items]
    items = [i for i in items if i and len(line_key(i)) >= 2]
    return items if len(items) >= 2 else []


def adopt_named(entries: list[dict[str, Any]], names: list[str]) -> tuple[list[dict[str, Any]], bool]:
    """The plan with the instruction's named sections as points, in the instruction's order, when
    the model's plan misses any of them (a point of the model's that names one is kept for it).
    Returns (plan, whether it changed)."""
    def covers(point: str, name: str) -> bool:
        return line_key(name) in line_key(point)

    if not names or all(any(covers(e["point"], n) for e in entries) for n in names):
        return entries, False
    out = []
    for n in names:
        match = next((e for e in entries if covers(e["point"], n)), None)
        out.append(dict(match) if match else {"point": n, "words": 0})
    return out, True


def fallback_plan(target: int, lang: str, cfg: AgentWriteConfig) -> list[dict[str, Any]]:
    """Even budgets with generic points, for when the model cannot plan (small models in Chinese).

    The section prompts still carry the instruction, so the text stays on topic; the record's
    plan shows the generic points, so such documents are easy to find.
    """
    n_min, n_max = section_count_range(target, cfg)
    n = min(max(round(target / cfg.words_per_section), n_min), n_max)
    first, middle, last = prompts.FALLBACK_POINTS[lang]
    points = [first if k == 0 else last if k == n - 1 else middle for k in range(n)] if n > 1 else [middle]
    return reconcile_plan([{"point": p, "words": 1} for p in points], target, cfg)


def reconcile_plan(entries: list[dict[str, Any]], target: int, cfg: AgentWriteConfig) -> list[dict[str, Any]]:
    """Fix the section count and budgets: within the count range, summing exactly to target.

    The model's budgets are kept as relative weights (a small model's numbers are often
    arbitrary), clamped so no section is tiny or huge; too many sections are merged, too few
    split.
    """
    if not entries:
        raise DocumentError("plan has no usable sections")
    n_min, n_max = section_count_range(target, cfg)
    valid = [e["words"] for e in entries if e["words"] > 0]
    fill = sum(valid) / len(valid) if valid else 1.0
    items = [[e["point"], float(e["words"]) if e["words"] > 0 else fill] for e in entries]
    while len(items) > n_max:  # merge the adjacent pair with the smallest joint weight
        i = min(range(len(items) - 1), key=lambda j: items[j][1] + items[j + 1][1])
        items[i : i + 2] = [[f"{items[i][0]}; {items[i + 1][0]}", items[i][1] + items[i + 1][1]]]
    while len(items) < n_min:  # split the heaviest section into two halves
        i = max(range(len(items)), key=lambda j: items[j][1])
        point, w = items[i]
        items[i : i + 1] = [[point, w / 2], [f"{point} (continued)", w / 2]]
    n = len(items)
    lo = min(cfg.min_section_words, target / n)
    hi = max(cfg.max_section_words, target / n)
    # Blend toward uniform: keeps the model's emphasis but not its extremes.
    total = sum(w for _, w in items)
    weights = [0.5 * w / total + 0.5 / n for _, w in items]
    budgets = _apportion(weights, target, lo, hi)
    return [{"point": p, "words": b} for (p, _), b in zip(items, budgets)]


def _apportion(weights: list[float], total: int, lo: float, hi: float) -> list[int]:
    """Integers proportional to weights, each in [lo, hi], summing exactly to total."""
    # Water-filling: find the scale s with sum(clamp(s * w, lo, hi)) == total by bisection
    # (that sum is continuous and non-decreasing in s; lo * n <= total <= hi * n).
    def fill(s: float) -> list[float]:
        return [min(max(s * w, lo), hi) for w in weights]

    a, b = 0.0, total / min(weights)  # fill(0) sums to n * lo <= total; fill(b) to >= total
    for _ in range(100):
        m = (a + b) / 2
        a, b = (m, b) if sum(fill(m)) < total else (a, m)
    raw = fill(b)
    out = [int(math.floor(v)) for v in raw]
    order = sorted(range(len(raw)), key=lambda i: raw[i] - out[i], reverse=True)
    for i in order[: max(0, total - sum(out))]:
        out[i] += 1
    return out
