"""LongBench-Write scoring beyond length: section budgets and the quality judge.

(Repetition, :func:`core.text.repetition_stats`, is a text measure and lives in core/text.py.)

* :func:`section_length_error` - how well AgentWrite sections kept their word budgets.
* The judge: a prompt (our own wording), a JSON schema for structured output,
  :func:`parse_judgment` and :func:`judge_document`, which asks any :class:`~core.engines.base.Engine`
  to rate one document on the six LongBench-Write dimensions (1-5, length ignored).
* :func:`quality_score` - S_q: each dimension's mean m over judged prompts maps to (m - 1) * 25,
  and S_q is the mean of the six. The overall score is S = (S_l + S_q) / 2
  (:func:`overall_score`); S_l is :func:`core.length.length_score` averaged over prompts.

No Ray here: the Ray job (ray_jobs/evaluate.py) and tests import this module directly.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable, Mapping

from core.engines.base import Engine, EngineError, Message, SamplingSpec
from core.text import count_words

__all__ = [
    "JUDGE_DIMENSIONS",
    "dimension_scores",
    "judge_document",
    "judge_messages",
    "judge_schema",
    "overall_score",
    "parse_judgment",
    "quality_score",
    "section_length_error",
]

# ---------------------------------------------------------------- section budgets


def _get(item: Any, key: str) -> Any:
    return item.get(key) if isinstance(item, Mapping) else getattr(item, key, None)


def section_length_error(sections: Iterable[Any] | None) -> float | None:
    """Mean of |words - budget| / budget over AgentWrite sections; None when there are none.

    Accepts :class:`core.records.Section` objects or their dict form (as read from Parquet).
    Sections without a positive budget are skipped.
    """
    errors = []
    for s in sections or []:
        budget = _get(s, "budget")
        if not budget or budget <= 0:
            continue
        words = _get(s, "words")
        if words is None:
            words = count_words(_get(s, "text") or "")
        errors.append(abs(words - budget) / budget)
    return sum(errors) / len(errors) if errors else None


# ---------------------------------------------------------------- the judge

JUDGE_DIMENSIONS = ["relevance", "accuracy", "coherence", "clarity", "breadth_and_depth", "reading_experience"]
COMMENT_MAX_CHARS = 160
JUDGE_MAX_TOKENS = 200

_DIMENSION_HELP = {
    "relevance": "does the text do what the request asks, on its topic and in the form requested?",
    "accuracy": "are facts, reasoning and details correct, without invented or self-contradicting claims?",
    "coherence": "do the ideas follow a clear order, connect to each other, and avoid jumps or loops?",
    "clarity": "are the sentences clear, grammatical and precise, so the meaning is easy to follow?",
    "breadth_and_depth": "does the text cover the subject broadly enough and give it real substance?",
    "reading_experience": "is it engaging and pleasant to read, without padding or repetition?",
}

JUDGE_SYSTEM = (
    "You are a strict and fair reviewer of writing. You grade a text against the request it was "
    "written for, and you reply with a JSON object only."
)

JUDGE_TEMPLATE = """Grade the response to the writing request below on six dimensions.

{dimensions}

Give each dimension a whole number from 1 to 5: 1 = very poor, 2 = weak, 3 = adequate, 4 = good, 5 = excellent.
Ignore the length of the response completely: do not reward it for being long or punish it for being short, and do not check it against any length in the request. Judge only the quality of what is written.

=== Writing request ===
{instruction}

=== Response ===
{text}
=== End of response ===

Reply with one JSON object and nothing else. Its keys are {keys} (integers 1-5) and optionally "comment" (one short sentence)."""

TRUNCATION_MARK = "\n\n[... {words} words from the middle of the response are omitted here ...]\n\n"


def judge_schema() -> dict[str, Any]:
    """JSON schema of a judgment: six integers 1..5, plus an optional short comment."""
    props: dict[str, Any] = {d: {"type": "integer", "minimum": 1, "maximum": 5} for d in JUDGE_DIMENSIONS}
    props["comment"] = {"type": "string", "maxLength": COMMENT_MAX_CHARS}
    return {"type": "object", "properties": props, "required": list(JUDGE_DIMENSIONS),
            "additionalProperties": False}


def judge_messages(instruction: str, text: str) -> list[Message]:
    dims = "\n".join(f"- {d}: {_DIMENSION_HELP[d]}" for d in JUDGE_DIMENSIONS)
    keys = ", ".join(f'"{d}"' for d in JUDGE_DIMENSIONS)
    user = JUDGE_TEMPLATE.format(dimensions=dims, keys=keys, instruction=instruction.strip(), text=text.strip())
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


def _json_objects(text: str) -> Iterable[Any]:
    """Every JSON value that starts at a "{" in ``text``, in order (handles prose around it)."""
    dec = json.JSONDecoder()
    for m in re.finditer(r"\{", text):
        try:
            yield dec.raw_decode(text, m.start())[0]
        except json.JSONDecodeError:
            continue


def _score_value(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str) and v.strip().isdigit():
        return int(v.strip())
    return None


def parse_judgment(text: str) -> dict[str, int]:
    """The six scores from a judge's answer; ValueError if it is not usable.

    The JSON object may be embedded in other text (the first object that has a "relevance" key
    is used). Every dimension must be present, an integer (``4``, ``4.0`` or ``"4"``), and in 1..5.
    """
    if not text or not text.strip():
        raise ValueError("empty judge answer")
    candidates = [o for o in _json_objects(text) if isinstance(o, dict)]
    if not candidates:
        raise ValueError("judge answer has no JSON object")
    obj = next((o for o in candidates if any(d in o for d in JUDGE_DIMENSIONS)), candidates[0])
    missing = [d for d in JUDGE_DIMENSIONS if d not in obj]
    if missing:
        raise ValueError(f"judge answer lacks {', '.join(missing)}")
    out: dict[str, int] = {}
    for d in JUDGE_DIMENSIONS:
        v = _score_value(obj[d])
        if v is None:
            raise ValueError(f"judge score {d}={obj[d]!r} is not an integer")
        if not 1 <= v <= 5:
            raise ValueError(f"judge score {d}={v} is outside 1..5")
        out[d] = v
    return out


def _fit_text(engine: Engine, instruction: str, text: str, max_tokens: int, margin: int = 32) -> str | None:
    """``text`` cut (beginning and end kept) so the judge prompt fits the context; None if impossible."""
    limit = engine.max_model_len - max_tokens - margin
    total = engine.count_tokens(judge_messages(instruction, text))
    if total <= limit:
        return text
    fixed = engine.count_tokens(judge_messages(instruction, TRUNCATION_MARK.format(words=0)))
    room = limit - fixed
    if room < 64:
        return None
    chars_per_token = len(text) / max(1, total - fixed)
    keep = int(room * chars_per_token * 0.9)
    for _ in range(8):
        head, tail = text[: keep // 2], text[len(text) - keep // 2:]
        omitted = count_words(text[len(head): len(text) - len(tail)])
        cut = head.rstrip() + TRUNCATION_MARK.format(words=omitted) + tail.lstrip()
        if engine.count_tokens(judge_messages(instruction, cut)) <= limit:
            return cut
        keep = int(keep * 0.8)
    return None


async def judge_document(engine: Engine, instruction: str, text: str, retries: int = 2,
                         *, max_tokens: int = JUDGE_MAX_TOKENS) -> dict[str, int] | None:
    """Rate one document on the six dimensions with ``engine`` as the judge.

    Structured output (``judge_schema``) at a low temperature; an answer that is not valid, or
    was cut off at ``max_tokens``, or an engine error is retried ``retries`` times at a slightly
    higher temperature. Returns None when the judgment is dropped (the caller counts these).
    Texts longer than the judge's context keep their beginning and end, with a marker between.
    """
    fitted = _fit_text(engine, instruction, text, max_tokens)
    if fitted is None:
        return None
    msgs = judge_messages(instruction, fitted)
    schema = judge_schema()
    for attempt in range(retries + 1):
        spec = SamplingSpec(max_tokens=max_tokens, temperature=0.1 + 0.3 * attempt, top_p=0.95, json_schema=schema)
        try:
            res = await engine.generate(msgs, sampling=spec)
        except EngineError:
            continue
        if res.finish_reason == "length":
            continue
        try:
            return parse_judgment(res.text)
        except ValueError:
            continue
    return None


# ---------------------------------------------------------------- aggregate scores


def dimension_scores(judgments: Iterable[Mapping[str, int] | None]) -> dict[str, float]:
    """Per dimension: (mean rating - 1) * 25 over the given judgments (None entries skipped)."""
    judged = [j for j in judgments if j]
    if not judged:
        raise ValueError("no judgments to score")
    return {d: (sum(j[d] for j in judged) / len(judged) - 1.0) * 25.0 for d in JUDGE_DIMENSIONS}


def quality_score(judgments: list[dict[str, int]]) -> float:
    """S_q in [0, 100]: the mean of the six per-dimension scores (see :func:`dimension_scores`).

    All 5s give 100, all 1s give 0. ValueError when there is no judgment at all.
    """
    per_dim = dimension_scores(judgments)
    return sum(per_dim.values()) / len(per_dim)


def overall_score(s_l: float, s_q: float | None) -> float | None:
    """S = (S_l + S_q) / 2; None when there is no quality score."""
    return None if s_q is None else (s_l + s_q) / 2.0
