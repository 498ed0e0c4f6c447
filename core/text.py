"""Text measures, in one place: word counts, language, tokens, repetition, loops, clean-up.

Everything that reads a text and says how long it is, which language it is in, how much of
it repeats, or which of its lines are not the model's own prose lives here, so the engine's
loop guard, AgentWrite's budgets and the scores all measure the same way. Pure stdlib.

Two CJK ranges on purpose: :func:`count_words` follows LongBench-Write's reference formula
(U+4E00..U+9FFF only) so scores compare with published ones; :func:`tokenize`, for
repetition, also takes extension A and the compatibility ideographs.
"""

from __future__ import annotations

import re
from typing import Any

# ---------------------------------------------------------------- words and language
_CJK_RE = re.compile(r"[\u4e00-\u9fff]")
_EN_WORD_RE = re.compile(r"\b[a-zA-Z]+\b")


def count_words(text: str) -> int:
    """Count "words" exactly the way LongBench-Write does.

    Scores are only comparable with published numbers if we count the same
    way, so this is deliberately the reference formula, quirks included:
    every CJK character (U+4E00..U+9FFF) counts 1 and every ``\\b[a-zA-Z]+\\b``
    match counts 1. Consequences: digits and punctuation count 0,
    "don't" and "e-mail" count 2, "abc123" counts 0 (letters and digits are
    both ``\\w``), and because Python's ``re`` treats CJK characters as ``\\w``
    too, Latin words glued to Chinese ("中文abc") count 0.
    """
    return len(_CJK_RE.findall(text)) + len(_EN_WORD_RE.findall(text))


def detect_language(text: str) -> str:
    """Return "zh" or "en" so callers know which word/字 convention applies.

    "zh" when CJK characters make up at least 20% of (CJK characters +
    English words); a Chinese text with a handful of CJK characters and few
    English words therefore counts as Chinese. Empty text is "en".
    """
    cjk = len(_CJK_RE.findall(text))
    en = len(_EN_WORD_RE.findall(text))
    if cjk == 0:
        return "en"
    return "zh" if cjk / (cjk + en) >= 0.2 else "en"


# ---------------------------------------------------------------- repetition

REPETITION_MAX_TOKENS = 20_000  # longer texts are scored on their first 20k tokens
_NGRAM = 4
CJK_RANGES = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
# One token per CJK character; other word-character runs (letters, digits) as one token each.
_TOKEN_RE = re.compile(rf"[{CJK_RANGES}]|[^\W{CJK_RANGES}]+")


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens: ``\\w+`` runs for alphabetic scripts, one token per CJK character.

    Mixed Chinese/English text works: "AI模型很强" -> ["ai", "模", "型", "很", "强"].
    """
    return [t.lower() for t in _TOKEN_RE.findall(text or "")]


def _has_repeat(ids: list[int], length: int) -> bool:
    """True when some span of ``length`` tokens occurs at least twice (rolling hash, verified)."""
    n = len(ids)
    if length <= 0:
        return True
    if length > n - 1:
        return False
    mod = (1 << 61) - 1
    base = 1_000_003
    power = pow(base, length - 1, mod)
    h = 0
    for t in ids[:length]:
        h = (h * base + t + 1) % mod
    seen: dict[int, list[int]] = {h: [0]}
    for i in range(1, n - length + 1):
        h = ((h - (ids[i - 1] + 1) * power) * base + ids[i + length - 1] + 1) % mod
        starts = seen.get(h)
        if starts is not None:
            span = ids[i:i + length]
            if any(ids[s:s + length] == span for s in starts):
                return True
            starts.append(i)
        else:
            seen[h] = [i]
    return False


def repeated_4gram_share(text: str) -> float:
    """Of all word 4-gram occurrences, the share that repeats an earlier one (see below)."""
    return _repeated_share(tokenize(text)[:REPETITION_MAX_TOKENS])


def _repeated_share(toks: list[str]) -> float:
    grams = [tuple(toks[i:i + _NGRAM]) for i in range(len(toks) - _NGRAM + 1)]
    return (len(grams) - len(set(grams))) / len(grams) if grams else 0.0


def repetition_stats(text: str) -> dict[str, Any]:
    """Repetition in a text, on :func:`tokenize` tokens (capped at the first 20,000).

    Returns ``{"tokens", "repeated_4gram_share", "longest_repeat"}``:

    * ``repeated_4gram_share``: of all 4-gram occurrences, the share that repeats an earlier
      one (occurrences beyond the first / total). 0 for text without repeats; a text written
      out twice scores about 0.5; a loop of one sentence approaches 1.
    * ``longest_repeat``: the length, in tokens, of the longest span that occurs at least twice
      (occurrences may overlap). Binary search on the length with a rolling hash: O(n log n).
    """
    toks = tokenize(text)[:REPETITION_MAX_TOKENS]
    n = len(toks)
    share = _repeated_share(toks)
    vocab: dict[str, int] = {}
    ids = [vocab.setdefault(t, len(vocab)) for t in toks]
    lo, hi = 0, max(0, n - 1)  # invariant: a span of lo repeats; none longer than hi can
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _has_repeat(ids, mid):
            lo = mid
        else:
            hi = mid - 1
    return {"tokens": n, "repeated_4gram_share": share, "longest_repeat": lo}


# ---------------------------------------------------------------- loops

LOOP_MIN_WORDS = 60  # fewer words than this say too little about a loop


def is_looping(text: str, guard: float) -> bool:
    """True when ``text`` is long enough to judge and over ``guard`` of its word 4-grams repeat:
    the check a streaming engine runs to stop a looping answer early (SamplingSpec.loop_guard)."""
    return guard > 0 and count_words(text) >= LOOP_MIN_WORDS and repeated_4gram_share(text) > guard


# ---------------------------------------------------------------- section clean-up

_LABEL = r"(?:part|section|step|chapter|paragraph)\s+(?:\d+|[ivx]+|one|two|three|four|five|six|seven|eight|nine|ten)\b"
_HEADING_RE = re.compile(
    rf"^\s*(?:#{{1,6}}\s*)?(?:\*\*|__)?\s*(?:{_LABEL}|第\s*[0-9一二三四五六七八九十百]+\s*(?:部分|节|章|段))[^\n]{{0,80}}(?<![.!?。！？])$",
    re.I | re.M,
)
_PREAMBLE_RE = re.compile(
    r"^\s*(?:(?:sure|certainly|of course|here is|here's|okay)\b[^\n]{0,100}[:!.]"
    r"|writing part \d+[^\n]{0,60})\s*$", re.I)
# Small models sometimes echo the step instruction back, anywhere in the answer. The echoed
# words go; what follows them on the same line stays when it reads like the section's prose.
_STEP_ECHO_RE = re.compile(
    r"^\s*(?:write part \d+ of \d+(?: now)?\b[,:]?\s*(?:about \d+ words\b)?[,:.]?"
    r"|现在写第\s*\d+\s*部分[^：:\n]{0,30}[：:]?)\s*", re.I)
_RULE_ECHO_RE = re.compile(
    r"do not (?:repeat earlier parts|add a title)[^.!?\n]*[.!?]?\s*|不要重复前文[^。\n]*。?\s*|不要加标题[^。\n]*。?\s*",
    re.I)
LOOP_RATIO = 0.3  # repeated_4gram_share above this is a loop (prose stays under ~0.05)
_SENTENCE_END = re.compile(r"[.!?…][\"'”’)）]*\s|[。！？][”’）」』]*")


def clean_section(text: str) -> str:
    """Drop "Part 3 - ..." style labels, chatty preambles and echoed instructions from a section."""
    lines = text.strip().splitlines()
    while lines and (not lines[0].strip() or _PREAMBLE_RE.match(lines[0])):
        lines.pop(0)
    kept = [ln for ln in (_strip_echo(ln) for ln in lines) if ln is not None]
    text = _HEADING_RE.sub("", "\n".join(kept))
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def _strip_echo(line: str) -> str | None:
    """``line`` without echoed step instructions; None when nothing of the model's own is left."""
    out = line
    m = _STEP_ECHO_RE.match(out)
    if m:
        rest = out[m.end():]
        # After "Write part 2 of 5 now, about 300 words:" comes the echoed plan point (short,
        # one clause) or, sometimes, the section itself (several sentences): keep only the latter.
        if len(_SENTENCE_END.findall(rest + " ")) < 2 and count_words(rest) < 30:
            return None
        out = rest
    out = _RULE_ECHO_RE.sub("", out)
    if out == line:
        return line
    return out.rstrip() if out.strip() else None


def trim_to_sentence(text: str) -> str:
    """Cut a max_tokens-truncated answer back to its last full sentence (if that keeps most)."""
    ends = list(_SENTENCE_END.finditer(text + " "))
    if not ends:
        return text
    cut = ends[-1].end()
    return text[:cut].rstrip() if cut >= 0.6 * len(text) else text
