"""Which sample of an instruction is chosen and which rejected, for DPO pairs (ray_jobs.pairs).

LongWriter's recipe: score every sample, take the best as chosen and draw the rejected one at
random from the rest (not always the worst, which teaches only "avoid the obvious failure").
Two guards against a length-only signal rewarding the wrong text: a sample cut at
``max_tokens`` (direct mode: the answer never ended), stopped as a loop, or whose text loops
(over 30% repeated word 4-grams) is never chosen, though it may be rejected; and the rejected
sample must score at least ``min_margin`` below the chosen one.
"""

from __future__ import annotations

import random
import zlib
from typing import Any

from core.length import length_score
from core.records import Document
from core.scores import quality_score
from core.text import LOOP_RATIO, repeated_4gram_share

_CONTENT_CALLS = ("direct", "section", "continue")


def sample_score(doc: Document, judgment: dict[str, int] | None) -> float:
    """S_l against the target; with a judgment, LongBench-Write's S = (S_l + S_q) / 2."""
    s_l = length_score(doc.target_words, doc.word_count)
    return s_l if not judgment else (s_l + quality_score([judgment])) / 2.0


def chosen_problem(doc: Document) -> str | None:
    """Why this sample must not be chosen ("cut at max_tokens", "stopped as a loop", "loops"), or None."""
    kept = [c for c in doc.calls if c.kind in _CONTENT_CALLS]
    if doc.mode == "direct" and kept and kept[-1].finish_reason == "length":
        return "cut at max_tokens"
    if any(c.finish_reason == "loop" for c in kept):
        return "stopped as a loop"
    if repeated_4gram_share(doc.text) > LOOP_RATIO:
        return "loops"
    return None


def select_pair(scored: list[tuple[float, Document]], min_margin: float, key: str) -> tuple[Any, str]:
    """((chosen, rejected) as (score, doc) tuples, "") or (None, why no pair).

    ``key`` (the instruction's id) seeds the draw, so a rerun pairs the same samples.
    """
    if len(scored) < 2:
        return None, "few samples"
    eligible = [t for t in scored if chosen_problem(t[1]) is None]
    if not eligible:
        return None, "no sample may be chosen"
    best = max(eligible, key=lambda t: t[0])
    rest = [t for t in scored if t is not best and best[0] - t[0] >= min_margin]
    if not rest:
        return None, "small margin"
    return (best, random.Random(zlib.crc32(key.encode())).choice(rest)), ""
