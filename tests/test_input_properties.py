"""Property-based tests (Hypothesis) for the two functions every untrusted instruction meets.

``inputs.validate`` sees every input record and ``parse_target_length`` every instruction,
from the bulk job and from ``/v1/longwrite``. Neither may raise, and the parser must stay
inside its time budget for any instruction up to the request limit.
"""

from __future__ import annotations

import json
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.inputs import FAILED_ID_PREFIX, MAX_LENGTH, InputError, PromptRow, read_prompts, validate
from core.length import MAX_PROMPT_CHARS, parse_target_length

BUDGET_S = 0.050  # the budget per instruction, on an idle machine
# A busy machine (other tests, other jobs) slows every parse alike, so the budget also scales with
# a benign instruction of the request limit's size, parsed in the same run. The parser this
# replaced took 2.1 s on the worst case, over 1,000x the benign one; the worst now is ~10x.
SLACK = 100


def _benign_s() -> float:
    text = ("Write a calm essay about tides and the moon, with examples from harbours. " * 300)[:MAX_PROMPT_CHARS]
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        parse_target_length(text)
        times.append(time.perf_counter() - t0)
    return sorted(times)[2]  # the median
PARSED_MAX = 10 ** 14  # documented bound of parse_target_length

# Pieces a hostile instruction is built from: everything the parser's patterns react to.
PIECES = ["one", "twenty", "twenty-one", "hundred", "thousand", "million", "and", "a", "between",
          "to", "-", "–", "~", "words", "word", "word count", "count", "k", " ", "  ", "\n", ",", ".",
          "1", "12", "1,500", "1.5", "999999999", "0", "字", "字数", "一", "十", "百", "千", "万",
          "两", "个", "单词", "词", "到", "至", "写", "Write", "essay", "\u00a0", "\x00", "\ud800"]

settings.register_profile("longwriter", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("longwriter")


def _check_parse(text: str) -> None:
    took = float("inf")
    for _ in range(3):  # the best of up to three tries: one slow try is the scheduler, not the parser
        t0 = time.perf_counter()
        value = parse_target_length(text)
        took = min(took, time.perf_counter() - t0)
        if took < BUDGET_S:
            break
    else:
        budget = max(BUDGET_S, SLACK * _benign_s())
        assert took < budget, f"{took * 1000:.1f} ms (budget {budget * 1000:.0f} ms) for {len(text)} characters: {text[:80]!r}"
    assert value is None or (isinstance(value, int) and 1 <= value < PARSED_MAX), value


@settings(max_examples=300)
@given(st.lists(st.sampled_from(PIECES) | st.text(max_size=8), max_size=60))
def test_parse_short_instructions_never_raises_and_stays_in_range(parts):
    _check_parse(" ".join(parts))


@settings(max_examples=60)
@given(st.lists(st.sampled_from(PIECES), min_size=1, max_size=40), st.sampled_from(["", " ", "-", " and "]))
def test_parse_repeated_pattern_up_to_the_request_limit_is_within_budget(parts, glue):
    """A pattern repeated to the request limit: the inputs that made the old parser cubic."""
    unit = glue.join(parts) + glue
    _check_parse((unit * (MAX_PROMPT_CHARS // max(1, len(unit)) + 1))[:MAX_PROMPT_CHARS])


def test_parse_known_worst_cases_within_budget():
    for text in ["Write " + "twenty-one " * 2000, "写" + "一" * 30000, "word count " * 2000, "字数" * 10000,
                 ("one " * 18 + "words ") * 800, "between " + "one and " * 3000, "1 - " * 6000 + "words"]:
        _check_parse(text)
    # Past the limit only the first MAX_PROMPT_CHARS characters are read.
    assert parse_target_length("x" * MAX_PROMPT_CHARS + " 500 words") is None


def test_parse_still_reads_real_requests():
    assert parse_target_length("Write a 1,500-word essay") == 1500
    assert parse_target_length("about two thousand five hundred words") == 2500
    assert parse_target_length("between eight hundred and twelve hundred words") == 1000
    assert parse_target_length("写一篇两万字的小说") == 20000


json_leaf = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
             | st.text(max_size=30))
json_value = st.recursive(json_leaf, lambda kids: st.lists(kids, max_size=4)
                          | st.dictionaries(st.text(max_size=6), kids, max_size=4), max_leaves=20)
field_value = json_value | st.sampled_from(["", "  ", "bad-x", "1e3", "1500", "NaN", "-5", "7.5", "\x00", "\ud800x"])


@settings(max_examples=400)
@given(st.dictionaries(st.sampled_from(["id", "prompt", "length", "meta", "x"]), field_value, max_size=5) | json_value)
def test_validate_never_raises_and_its_rows_are_storable(record):
    out = validate(record, "f.jsonl:1")
    assert isinstance(out, (PromptRow, InputError))
    if isinstance(out, PromptRow):
        assert out.prompt.strip() and "\x00" not in out.prompt and len(out.prompt) <= MAX_PROMPT_CHARS
        assert out.length is None or 1 <= out.length <= MAX_LENGTH
        assert out.id and not out.id.startswith(FAILED_ID_PREFIX)
        text = json.dumps(out.metadata, allow_nan=False, ensure_ascii=False)  # strict JSON ...
        text.encode("utf-8")  # ... that is valid UTF-8 (no lone surrogates)
    else:
        assert out.reason and "\n" not in out.reason
        json.dumps(out.metadata, allow_nan=False, ensure_ascii=False).encode("utf-8")
        out.prompt.encode("utf-8")


@settings(max_examples=150)
@given(st.lists(st.binary(max_size=40) | st.text(max_size=40).map(lambda s: s.encode("utf-8", "surrogatepass")),
                max_size=8))
def test_read_prompts_gives_one_row_per_nonblank_line(tmp_path_factory, lines):
    path = tmp_path_factory.mktemp("in") / "p.jsonl"
    data = b"\n".join(line.replace(b"\n", b" ") for line in lines)
    path.write_bytes(data)
    good, bad = read_prompts(str(path))
    body = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    if body[:2] == b"\x1f\x8b" or body[:4] == b"PAR1" or body[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return  # another format by its magic bytes
    nonblank = [ln for ln in body.split(b"\n") if ln.rstrip(b"\r").strip()]
    assert len(good) + len(bad) == len(nonblank)
    ids = [r.id for r in good] + [e.id for e in bad]
    assert len(set(ids)) == len(ids)
