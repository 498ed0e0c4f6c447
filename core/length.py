"""Target lengths: parsing them from instructions, the limits, and LongBench-Write's length score.

Pure stdlib. Word counting itself lives in core/text.py (:func:`core.text.count_words`).
"""

from __future__ import annotations

import bisect
import re

__all__ = [
    "LENGTH_BUCKETS",
    "length_bucket",
    "length_score",
    "parse_target_length",
]

MAX_PROMPT_CHARS = 20_000  # longest instruction accepted anywhere (job input, /v1/longwrite)
MAX_TARGET_WORDS = 50_000  # largest length a row, a request or an instruction may ask for

# --------------------------------------------------------------------------
# Target-length parsing
# --------------------------------------------------------------------------

_EN_UNITS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11,
    "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
    "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60,
    "seventy": 70, "eighty": 80, "ninety": 90,
}
_EN_SCALES = {"hundred": 100, "thousand": 1000, "million": 1_000_000}
_ZH_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4,
              "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_ZH_UNITS = {"十": 10, "百": 100, "千": 1000}
_MULTIPLIERS = {"k": 1000, "thousand": 1000, "千": 1000, "万": 10000}

# Longest first so "seventeen" is not read as "seven" + garbage.
_EN_WORD_ALT = "|".join(sorted([*_EN_UNITS, *_EN_SCALES], key=len, reverse=True))
# Linear time. Every repetition in the number patterns is bounded ({0,N}, never * or +), and
# parse_target_length tries them only where a number starts (the start of a digit run, of a
# Chinese numeral run, of a run of English number words, "between", "a hundred") with a unit
# word close behind. Unbounded, one run of number words ("twenty-one " * 1000) cost cubic time.
# The bounds are far above real numbers: the longest English number below 10^9 has 17 words.
_EN_NUM = (rf"\b(?:a\s{{1,4}}(?=(?:hundred|thousand)\b))?(?:{_EN_WORD_ALT})\b"
           rf"(?:(?:\s{{1,4}}and\s{{1,4}}|[\s-]{{1,4}})(?:{_EN_WORD_ALT})\b){{0,16}}")
_DIGIT_NUM = (r"(?<!\d)(?<!\d[.,])(?:\d{1,3}(?:,\d{3}){1,3}|\d{1,9}(?:\.\d{1,6})?)"
              r"(?:\s{0,4}(?:k|thousand|千|万)(?![a-z]))?")
_ZH_NUM = r"[零〇一二两三四五六七八九十百千万]{1,12}"
_NUM = rf"(?:{_DIGIT_NUM}|{_EN_NUM}|{_ZH_NUM})"
_SEP = r"\s{0,4}(?:-|–|—|~|～|to|到|至)\s{0,4}"
_UNIT = r"(?:[\s-]{0,4}words?\b|\s{0,4}个?(?:单词|汉字|字|词))"

# Ranges are tried before single numbers at each position, so "800-1200
# words" is a range rather than "1200 words" found one step later.
_UNIT_RE = re.compile(
    rf"(?:between\s{{1,4}}(?P<a1>{_NUM})\s{{1,4}}and\s{{1,4}}(?P<b1>{_NUM})"
    rf"|(?P<a2>{_NUM}){_SEP}(?P<b2>{_NUM})"
    rf"|(?P<n>{_NUM})){_UNIT}",
    re.IGNORECASE,
)
_ZH_CHARS = "零〇一二两三四五六七八九十百千万"
_NUMBER_START = re.compile(
    rf"\bbetween\b|\ba\s{{1,4}}(?=(?:hundred|thousand)\b)|(?<!\d)(?<!\d[.,])\d|(?<![{_ZH_CHARS}])[{_ZH_CHARS}]"
    rf"|\b(?:{_EN_WORD_ALT})\b(?:(?:\s+and\s+|[\s-]+)(?:{_EN_WORD_ALT})\b)*",  # a whole run: one start
    re.IGNORECASE,
)
_UNIT_WORD = re.compile(r"words?\b|单词|汉字|字|词", re.IGNORECASE)
_UNIT_REACH = 400  # characters: the longest number-and-unit match is far shorter
_COUNT_WORD = re.compile(r"word\s{0,4}count|字数", re.IGNORECASE)
_COUNT_TRIES = 64  # "word count" phrases looked at, at most

# Fallback for "word count: 2000" / "字数要求3000" where the unit precedes.
_COUNT_RE = re.compile(
    rf"(?:word\s{{0,4}}count|字数)[^\d零〇一二两三四五六七八九十百千万]{{0,20}}?"
    rf"(?:(?P<a2>{_NUM}){_SEP}(?P<b2>{_NUM})|(?P<n>{_NUM}))",
    re.IGNORECASE,
)


def _parse_en_words(text: str) -> int:
    total = current = 0
    for tok in re.split(r"[^a-z]+", text.lower()):
        if tok in ("", "and"):
            continue
        if tok == "a":
            current = 1
        elif tok in _EN_UNITS:
            current += _EN_UNITS[tok]
        elif tok == "hundred":
            current = (current or 1) * 100
        else:  # thousand / million close a group
            total += (current or 1) * _EN_SCALES[tok]
            current = 0
    return total + current


def _parse_zh(text: str) -> int:
    total = section = num = 0
    last_unit = 0  # unit just seen, for colloquial "一千五" == 1500
    for ch in text:
        if ch in _ZH_DIGITS:
            num = _ZH_DIGITS[ch]
            if ch in "零〇":
                last_unit = 0
            continue
        if ch == "万":
            total += ((section + num) or 1) * 10000
            section = num = 0
            last_unit = 10000
        else:
            section += (num or 1) * _ZH_UNITS[ch]
            num = 0
            last_unit = _ZH_UNITS[ch]
    if num and last_unit >= 100 and len(text) >= 2 and text[-2] in "百千万":
        num *= last_unit // 10
    return total + section + num


def _parse_number(text: str) -> tuple[float, bool]:
    """Return (value, has_multiplier) for any of the three number styles."""
    s = text.strip().replace(",", "")
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(k|thousand|千|万)?", s, re.IGNORECASE)
    if m:
        mult = _MULTIPLIERS[m.group(2).lower()] if m.group(2) else 1
        return float(m.group(1)) * mult, bool(m.group(2))
    if s[:1] in _ZH_DIGITS or s[:1] in _ZH_UNITS or s[:1] == "万":
        return float(_parse_zh(s)), False
    return float(_parse_en_words(s)), False


def _value_from_match(m: re.Match[str]) -> float:
    groups = m.groupdict()
    if groups.get("n"):
        return _parse_number(groups["n"])[0]
    a_txt = groups.get("a1") or groups["a2"]
    b_txt = groups.get("b1") or groups["b2"]
    if groups.get("a2") and all(t[:1].isascii() and t[:1].isalpha() for t in (a_txt, b_txt)):
        sep = m.string[m.end("a2"):m.start("b2")]
        if "to" not in sep.lower():  # "twenty-five", "ten-thousand": one number
            return _parse_number(m.string[m.start("a2"):m.end("b2")])[0]
    (a, a_mult), (b, b_mult) = _parse_number(a_txt), _parse_number(b_txt)
    # "3-5k words" / "1-2万字": the multiplier on the upper bound applies to both.
    if b_mult and not a_mult:
        raw_b = float(re.match(r"[\d.,]+", b_txt.strip()).group().replace(",", ""))
        if 0 < raw_b and a <= raw_b:
            a *= b / raw_b
    # "Chapter 3 - 500 words" is not a range: ignore implausible lower bounds.
    if a <= 0 or a > b or a < b / 10:
        return b
    return (a + b) / 2


def _accept(m: re.Match[str] | None) -> int | None:
    if m is None:
        return None
    n = m.group("n")
    if n and len(n) == 1 and n in "零〇一二两三四五六七八九十":
        return None  # idioms, not lengths: 十字(架), 八字, 三字经, 一字一句
    value = round(_value_from_match(m))
    return value if value > 0 else None


def parse_target_length(instruction: str) -> int | None:
    """Find the requested output length (words / 字) in an instruction.

    Needed to score length-following when a dataset row has no explicit
    target. Only numbers attached to a length unit ("words", "word", "字",
    "词") or introduced by "word count"/"字数" are accepted, so "Top 10 tips"
    or "the 1990s" are ignored and "5 pages" gives None; a lone Chinese digit
    before 字 (十字, 八字) is an idiom, not a length, and is skipped. Handles digits
    ("1,500", "1.5k", "1.5万"), English number words ("two thousand five
    hundred"), Chinese numerals ("一千五百", "两万") and ranges ("800-1200",
    "between 800 and 1200", "800到1000"), which yield their midpoint. When
    several lengths appear, the first one wins. Linear in the instruction's length (only its
    first MAX_PROMPT_CHARS characters are read); the result is None or a positive integer
    below 10^14 (numbers have at most 9 digits and one multiplier). Callers check it against
    their own maximum (AgentWrite rejects targets above ``max_length`` with a clear error).
    """
    text = instruction[:MAX_PROMPT_CHARS]
    units = [m.start() for m in _UNIT_WORD.finditer(text)]
    if units:
        for start in _NUMBER_START.finditer(text):
            pos = start.start()
            i = bisect.bisect_left(units, pos)
            if i == len(units):
                break
            if units[i] - pos > _UNIT_REACH:
                continue
            value = _accept(_UNIT_RE.match(text, pos))
            if value:
                return value
    for k, m in enumerate(_COUNT_WORD.finditer(text)):
        if k >= _COUNT_TRIES:
            break
        value = _accept(_COUNT_RE.match(text, m.start()))
        if value:
            return value
    return None


# --------------------------------------------------------------------------
# Scoring and bucketing
# --------------------------------------------------------------------------

def length_score(required: int | float, produced: int | float) -> float:
    """LongBench-Write length score S_l in [0, 100].

    Overshooting is penalised more gently (1/3 per ratio unit) than
    undershooting (1/2 per ratio unit), as in the benchmark. An empty output
    scores 0; a non-positive requirement is a caller bug, hence ValueError.
    """
    if required <= 0:
        raise ValueError(f"required length must be > 0, got {required!r}")
    if produced <= 0:
        return 0.0
    if produced > required:
        return 100.0 * max(0.0, 1.0 - (produced / required - 1.0) / 3.0)
    return 100.0 * max(0.0, 1.0 - (required / produced - 1.0) / 2.0)


LENGTH_BUCKETS: list[tuple[int, int]] = [(0, 500), (500, 2000), (2000, 4000), (4000, 20000)]


def _fmt(n: int) -> str:
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def length_bucket(required: int | float) -> str:
    """Label the required-length bucket used to break down reported scores.

    Buckets are half-open ``[lo,hi)`` except the last, which is closed and
    also absorbs anything >= 20000 so no requirement falls outside the table.
    """
    if required < 0:
        raise ValueError(f"required length must be >= 0, got {required!r}")
    last = len(LENGTH_BUCKETS) - 1
    for i, (lo, hi) in enumerate(LENGTH_BUCKETS):
        if i == last:
            return f"[{_fmt(lo)},{_fmt(hi)}]"
        if lo <= required < hi:
            return f"[{_fmt(lo)},{_fmt(hi)})"
    raise AssertionError("unreachable")
