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


def cross_section_repeat(sections: list[str]) -> float:
    """Of all word 4-gram occurrences in sections 2..n, the share already used by an earlier
    section: how much a long document repeats itself across its parts (0 for one section)."""
    seen: set[tuple[str, ...]] = set()
    hits = total = 0
    for k, text in enumerate(sections):
        toks = tokenize(text)[:REPETITION_MAX_TOKENS]
        grams = [tuple(toks[i:i + _NGRAM]) for i in range(len(toks) - _NGRAM + 1)]
        if k:
            hits += sum(g in seen for g in grams)
            total += len(grams)
        seen.update(grams)
    return hits / total if total else 0.0


# ---------------------------------------------------------------- loops

LOOP_MIN_WORDS = 60  # fewer words than this say too little about a loop
DEGENERATE_SPAN_CHARS = 40  # a non-prose span this long stops a streaming answer


def is_looping(text: str, guard: float) -> bool:
    """True when ``text`` loops or degenerates: the check a streaming engine runs to stop such an
    answer early (SamplingSpec.loop_guard). A loop is over ``guard`` repeated word 4-grams once
    there are enough words to judge; degeneration is a non-prose span (see :func:`nonprose_spans`)
    of 40+ characters in the last 400 characters written."""
    if guard <= 0:
        return False
    if any(b - a >= DEGENERATE_SPAN_CHARS for a, b, _ in nonprose_spans(text[-400:])):
        return True
    return count_words(text) >= LOOP_MIN_WORDS and repeated_4gram_share(text) > guard


# ---------------------------------------------------------------- non-prose spans

# What a small model writes when it degenerates, none of which is prose: runs of one
# punctuation mark ("；；；；", "!!!!!"; markdown's rules and tables, "----" "====" "|" "*",
# are left alone), strings of letters far longer than any word ("ZHANGWEILIHUAWANG..."), and
# Latin fragments glued into Chinese many times over ("ge中Ren国xue生ba的..."). Words never
# count inside them, and clean-up cuts them out.
_PUNCT_RUN_RE = re.compile(r"([^\w\s\-=_|*#~`\u4e00-\u9fff])\1{3,}")
_LETTER_RUN_RE = re.compile(r"[A-Za-z]{40,}")  # the longest English words run to about 30
_MIXED_RE = re.compile(r"(?:[A-Za-z]{1,8}[\u3400-\u9fff]{1,3}){6,}[A-Za-z]*")


def nonprose_spans(text: str, echoes: tuple[str, ...] = ()) -> list[tuple[int, int, str]]:
    """Sorted, non-overlapping ``(start, end, kind)`` spans of ``text`` that are not prose.

    kind is "punctuation", "letters", "mixed" or "echo": a line that repeats one of the
    ``echoes`` (the step instruction, the plan, the system prompt) once numbering, punctuation
    and case are set aside.
    """
    found = [(m.start(), m.end(), kind) for kind, rx in (("punctuation", _PUNCT_RUN_RE),
                                                          ("letters", _LETTER_RUN_RE), ("mixed", _MIXED_RE))
             for m in rx.finditer(text)]
    if echoes:
        keys = [k for k in (line_key(e) for e in echoes) if k]
        pos = 0
        for line in text.splitlines(keepends=True):
            key = line_key(line)
            if len(key) >= 8 and any(key in k for k in keys):
                found.append((pos, pos + len(line.rstrip("\n")), "echo"))
            pos += len(line)
    out: list[tuple[int, int, str]] = []
    for a, b, kind in sorted(found):
        if out and a < out[-1][1]:
            if b > out[-1][1]:
                out[-1] = (out[-1][0], b, out[-1][2])
            continue
        out.append((a, b, kind))
    return out


def nonprose_share(text: str, echoes: tuple[str, ...] = ()) -> float:
    """Share of the characters of ``text`` inside :func:`nonprose_spans` (0 for prose)."""
    if not text:
        return 0.0
    return sum(b - a for a, b, _ in nonprose_spans(text, echoes)) / len(text)


def drop_nonprose(text: str, echoes: tuple[str, ...] = ()) -> str:
    """``text`` with its non-prose spans cut out (and the blank space they leave)."""
    spans = nonprose_spans(text, echoes)
    if not spans:
        return text
    parts, pos = [], 0
    for a, b, _ in spans:
        parts.append(text[pos:a])
        pos = b
    parts.append(text[pos:])
    out = re.sub(r"[ \t]{2,}", " ", "".join(parts))
    return re.sub(r"\n[ \t]+\n", "\n\n", out)


def line_key(text: str) -> str:
    """Letters, digits and CJK only, lower-cased, with any leading numbering set aside."""
    text = re.sub(r"^\s*(?:\d+[.)、]|[-*#]+|第\s*[0-9一二三四五六七八九十]+\s*(?:部分|节|章))\s*", "", text)
    return "".join(ch for ch in text.lower() if ch.isalnum())


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
    r"|现在写第\s*\d+\s*部分[^：:\n]{0,30}[：:]?"
    r"|[^\n]{0,16}?第\s*\d+\s*部分\s*[（(]\s*共\s*\d+\s*(?:部分|字)\s*[)）][^：:\n]{0,30}[：:]?)\s*", re.I)
_RULE_ECHO_RE = re.compile(
    r"do not (?:repeat earlier parts|add a title)[^.!?\n]*[.!?]?\s*|不要重复前文[^。\n]*。?\s*|不要加标题[^。\n]*。?\s*",
    re.I)
LOOP_RATIO = 0.3  # repeated_4gram_share above this is a loop (prose stays under ~0.05)
_SENTENCE_END = re.compile(r"[.!?…][\"'”’)）]*\s|[。！？][”’）」』]*")


def clean_section(text: str, echoes: tuple[str, ...] = ()) -> str:
    """Drop "Part 3 - ..." style labels, chatty preambles, echoed instructions and non-prose spans
    (:func:`nonprose_spans`; ``echoes`` are the prompt lines a section must not repeat)."""
    lines = drop_nonprose(text, echoes).strip().splitlines()
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


def cut_to_words(text: str, max_words: int) -> str:
    """The longest start of ``text`` that ends a sentence and has at most ``max_words`` words;
    ``text`` itself when it is short enough or no sentence end fits (never cut mid-sentence)."""
    if count_words(text) <= max_words:
        return text
    best = None
    for m in _SENTENCE_END.finditer(text + " "):
        head = text[:m.end()].rstrip()
        if count_words(head) > max_words:
            break
        best = head
    return best if best else text


def first_sentence(text: str, max_chars: int = 160) -> str:
    """The first sentence of ``text`` (at most ``max_chars``, cut at a space where there is one):
    an extractive recap of a section that has left the context window."""
    text = " ".join(text.split())
    m = _SENTENCE_END.search(text + " ")
    head = text[:m.end()].strip() if m else text
    if len(head) > max_chars:
        cut = head[:max_chars]
        head = (cut.rsplit(" ", 1)[0] if " " in cut[max_chars // 2:] else cut) + "…"
    return head
