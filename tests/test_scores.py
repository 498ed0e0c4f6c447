"""Tests for core.scores: S_q mapping, judge answer parsing, repetition, section budgets.

S_l is covered by tests/test_length.py. Everything here is pure Python (no engine).
"""

from __future__ import annotations

import asyncio
import json

import pytest

from core.engines.base import GenResult
from core.records import Section
from core.scores import (
    JUDGE_DIMENSIONS,
    dimension_scores,
    judge_document,
    judge_messages,
    judge_schema,
    overall_score,
    parse_judgment,
    quality_score,
    section_length_error,
)
from core.text import repetition_stats, tokenize


def judgment(*values: int) -> dict[str, int]:
    assert len(values) == len(JUDGE_DIMENSIONS)
    return dict(zip(JUDGE_DIMENSIONS, values))


# ---------------------------------------------------------------- S_q


def test_quality_all_fives_is_100_and_all_ones_is_0():
    assert quality_score([judgment(5, 5, 5, 5, 5, 5)] * 3) == pytest.approx(100.0)
    assert quality_score([judgment(1, 1, 1, 1, 1, 1)] * 2) == pytest.approx(0.0)
    assert quality_score([judgment(3, 3, 3, 3, 3, 3)]) == pytest.approx(50.0)


def test_quality_mixed_hand_computed():
    js = [judgment(5, 4, 3, 2, 1, 5), judgment(3, 4, 5, 2, 1, 2)]
    # per-dimension means: 4, 4, 4, 2, 1, 3.5 -> (m-1)*25: 75, 75, 75, 25, 0, 62.5
    dims = dimension_scores(js)
    assert [dims[d] for d in JUDGE_DIMENSIONS] == pytest.approx([75, 75, 75, 25, 0, 62.5])
    assert quality_score(js) == pytest.approx((75 + 75 + 75 + 25 + 0 + 62.5) / 6)  # 52.0833...
    assert overall_score(80.0, 60.0) == pytest.approx(70.0)
    assert overall_score(80.0, None) is None


def test_quality_skips_dropped_and_rejects_empty():
    assert quality_score([judgment(5, 5, 5, 5, 5, 5), None]) == pytest.approx(100.0)  # type: ignore[list-item]
    with pytest.raises(ValueError):
        quality_score([])


# ---------------------------------------------------------------- parse_judgment


def test_parse_valid_json():
    text = json.dumps({**judgment(4, 3, 5, 2, 1, 3), "comment": "fine"})
    assert parse_judgment(text) == judgment(4, 3, 5, 2, 1, 3)


def test_parse_embedded_in_text_and_lenient_number_forms():
    text = ('Here is my grading:\n```json\n{"relevance": 4, "accuracy": 4.0, "coherence": "3", '
            '"clarity": 5, "breadth_and_depth": 2, "reading_experience": 3}\n```\nThanks {not json}')
    assert parse_judgment(text) == judgment(4, 4, 3, 5, 2, 3)


def test_parse_missing_dimension():
    d = judgment(4, 3, 5, 2, 1, 3)
    del d["clarity"]
    with pytest.raises(ValueError, match="clarity"):
        parse_judgment(json.dumps(d))


@pytest.mark.parametrize("bad", [0, 6, -1, 3.5, True, "five", None])
def test_parse_out_of_range_or_not_integer(bad):
    d: dict = judgment(4, 3, 5, 2, 1, 3)
    d["accuracy"] = bad
    with pytest.raises(ValueError, match="accuracy"):
        parse_judgment(json.dumps(d))


@pytest.mark.parametrize("text", ["", "   ", "no json here", "[1, 2, 3]", '{"relevance": 4'])
def test_parse_unusable(text):
    with pytest.raises(ValueError):
        parse_judgment(text)


def test_schema_and_prompt():
    s = judge_schema()
    assert s["required"] == JUDGE_DIMENSIONS
    for d in JUDGE_DIMENSIONS:
        assert s["properties"][d] == {"type": "integer", "minimum": 1, "maximum": 5}
    assert "comment" not in s["required"] and s["properties"]["comment"]["maxLength"] > 0
    user = judge_messages("Write 500 words about owls.", "Owls hunt at night.")[-1]["content"]
    assert all(d in user for d in JUDGE_DIMENSIONS)
    assert "length" in user.lower() and "JSON" in user and "Owls hunt at night." in user


# ---------------------------------------------------------------- judge_document (fake engine)


class FakeEngine:
    """Scripted answers; counts tokens as whitespace-separated words."""

    model_name = "fake"

    def __init__(self, answers, max_model_len=8192):
        self.answers = list(answers)
        self.max_model_len = max_model_len
        self.seen = []

    def count_tokens(self, messages):
        return sum(len(m["content"].split()) for m in messages)

    async def generate(self, messages=None, *, prompt=None, sampling=None):
        self.seen.append((messages, sampling))
        text, finish = self.answers.pop(0)
        return GenResult(text=text, finish_reason=finish)

    async def close(self):
        pass


def test_judge_retries_then_succeeds():
    good = json.dumps(judgment(4, 4, 4, 4, 4, 4))
    eng = FakeEngine([("not json", "stop"), ('{"relevance": 4, "accur', "length"), (good, "stop")])
    out = asyncio.run(judge_document(eng, "Write about owls.", "Owls are birds.", retries=2))
    assert out == judgment(4, 4, 4, 4, 4, 4)
    specs = [s for _, s in eng.seen]
    assert all(s.json_schema == judge_schema() and s.max_tokens <= 256 for s in specs)
    assert specs[0].temperature < 0.5 and specs[0].temperature < specs[-1].temperature


def test_judge_dropped_after_retries():
    eng = FakeEngine([("nope", "stop")] * 3)
    assert asyncio.run(judge_document(eng, "Write about owls.", "Owls.", retries=2)) is None
    assert len(eng.seen) == 3


def test_judge_truncates_long_text_keeping_both_ends():
    good = json.dumps(judgment(3, 3, 3, 3, 3, 3))
    eng = FakeEngine([(good, "stop")], max_model_len=1200)
    text = "BEGINNING " + " ".join(f"w{i}" for i in range(5000)) + " ENDING"
    assert asyncio.run(judge_document(eng, "Write.", text)) == judgment(3, 3, 3, 3, 3, 3)
    msgs, spec = eng.seen[0]
    sent = msgs[-1]["content"]
    assert "BEGINNING" in sent and "ENDING" in sent and "omitted" in sent and "w2500 " not in sent
    assert eng.count_tokens(msgs) + spec.max_tokens <= 1200


# ---------------------------------------------------------------- repetition

UNIQUE = ("The lighthouse keeper climbed ninety steps every evening to light a lamp while storms "
          "gathered over grey seas and ships searched for harbour beyond dangerous rocks")  # no word twice


def test_tokenize_mixed_scripts():
    assert tokenize("AI模型 is Great, 2024年!") == ["ai", "模", "型", "is", "great", "2024", "年"]


def test_no_repetition():
    s = repetition_stats(UNIQUE)
    assert s["tokens"] == len(UNIQUE.split())
    assert s["repeated_4gram_share"] == 0.0
    assert s["longest_repeat"] == 0  # no word occurs twice


def test_text_repeated_twice():
    n = len(UNIQUE.split())
    s = repetition_stats(UNIQUE + ". " + UNIQUE)
    assert s["tokens"] == 2 * n
    # 2n-3 four-grams, n distinct (n-3 inside the text, 3 across the seam): (n-3)/(2n-3)
    assert s["repeated_4gram_share"] == pytest.approx((n - 3) / (2 * n - 3))
    assert 0.45 < s["repeated_4gram_share"] < 0.5
    assert s["longest_repeat"] == n


def test_loop_of_one_sentence_approaches_one():
    s = repetition_stats("the cat sat down. " * 50)
    assert s["repeated_4gram_share"] > 0.95
    assert s["longest_repeat"] == 4 * 49  # overlapping occurrences: all but one period


def test_mixed_chinese_english_repetition():
    part = "今天我们学习Python编程和machine learning的基础知识"
    s = repetition_stats(part + "。" + part)
    n = len(tokenize(part))
    assert tokenize(part)[:6] == ["今", "天", "我", "们", "学", "习"] and "python" in tokenize(part)
    assert s["longest_repeat"] == n
    assert s["repeated_4gram_share"] == pytest.approx((n - 3) / (2 * n - 3))
    assert repetition_stats("中文")["repeated_4gram_share"] == 0.0  # fewer than 4 tokens
    assert repetition_stats("")["tokens"] == 0


def test_repetition_is_capped_and_fast():
    import random
    import time

    rng = random.Random(0)
    text = " ".join(f"w{rng.randrange(10**9)}" for _ in range(30_000))
    t0 = time.perf_counter()
    s = repetition_stats(text)
    assert s["tokens"] == 20_000 and time.perf_counter() - t0 < 10


# ---------------------------------------------------------------- section_length_error


def test_section_length_error():
    assert section_length_error([]) is None
    assert section_length_error(None) is None
    secs = [{"budget": 100, "words": 110}, {"budget": 200, "words": 150}, {"budget": 50, "words": 50}]
    assert section_length_error(secs) == pytest.approx((0.1 + 0.25 + 0.0) / 3)
    objs = [Section(index=0, point="a", budget=400, text="x", words=300)]
    assert section_length_error(objs) == pytest.approx(0.25)
    assert section_length_error([{"budget": 0, "words": 5}]) is None


def test_evaluation_reports_fidelity_per_language_bucket() -> None:
    """Scored rows carry non-prose share, cross-section repetition and the plan's history, and
    the report tables them with S_l per language and length bucket."""
    from core.eval_data import BenchRow
    from core.eval_metrics import score_rows, summarize
    from core.eval_report import render_report

    rows = [BenchRow("a", "Write 40 words.", 40, None, "en"), BenchRow("b", "写三十字。", 30, None, "zh")]
    part = "Tides rise and fall twice a day because the moon pulls the sea toward it as it passes."
    gens = [
        {"id": "a", "text": part + " " + part, "status": "ok", "sections": [{"text": part}, {"text": part}],
         "calls": [{"kind": "note", "step": -1, "finish_reason": "retried 1x: plan is not valid JSON"}]},
        {"id": "b", "text": "秋天来了，树叶黄了。" * 3 + "；" * 10, "status": "ok", "sections": [{"text": "秋天来了。"}],
         "calls": [{"kind": "note", "step": -1, "finish_reason": "fell back to an even plan: no plan"}]},
    ]
    res = score_rows(rows, gens, {})
    assert res[0]["cross_section_repeat"] == 1.0 and res[0]["nonprose_share"] == 0.0
    assert res[0]["plan_check"] == "retried" and res[1]["plan_check"] == "fallback"
    assert 0.2 < res[1]["nonprose_share"] < 0.3  # 10 of 40 characters are one mark repeated
    summary = summarize(res)
    assert set(summary["by_language_bucket"]) == {"en [0,500)", "zh [0,500)"}
    summary.update(run_id="r", mode="agentwrite", model="m", judge_model=None, bench="b.jsonl", generations="g",
                   generations_reused=False, finished_at="now", seconds={"generate": 1.0, "judge": 0.0})
    report = render_report(summary, res)
    assert "## By language and length bucket" in report and "| overall | 12.5% | 50.0% | 1 | 1 |" in report and "| en | 0.0% | 100.0% | 1 | 0 |" in report


def test_preference_pairs_never_choose_a_cut_or_looping_sample() -> None:
    """A loop run to twice the target scores S_l 66.7 and an honest answer at half the target 0;
    by length alone the loop would be chosen. It may be rejected, never chosen."""
    from core.preference import chosen_problem, sample_score, select_pair
    from core.records import CallStat, Document

    def doc(words: int, text: str, finish: str = "stop", mode: str = "direct") -> Document:
        d = Document(id="x", prompt="p", target_words=100, target_source="row", text=text, word_count=words, mode=mode)
        d.calls = [CallStat("direct" if mode == "direct" else "section", 0, 1, 0, words, 0.1, finish)]
        return d

    honest = doc(100, " ".join(f"w{i}x" for i in range(100)))
    loop = doc(200, "the tide comes in again " * 40)
    cut = doc(90, " ".join(f"c{i}y" for i in range(90)), finish="length")
    half = doc(50, " ".join(f"h{i}z" for i in range(50)))
    assert (chosen_problem(honest), chosen_problem(loop), chosen_problem(cut)) == (None, "loops", "cut at max_tokens")
    assert chosen_problem(doc(90, cut.text, finish="length", mode="agentwrite")) is None  # sections are trimmed
    assert chosen_problem(doc(90, honest.text, finish="loop", mode="agentwrite")) == "stopped as a loop"
    scored = [(sample_score(d, None), d) for d in (loop, cut, half, honest)]
    pair, why = select_pair(scored, 5.0, "id-1")
    assert why == "" and pair[0][1] is honest and pair[1][1] in (loop, cut, half)
    drawn = {id(select_pair(scored, 5.0, f"id-{k}")[0][1][1]) for k in range(40)}
    assert drawn == {id(loop), id(cut), id(half)}  # drawn from the rest, not always the worst
    assert select_pair(scored[:2], 5.0, "k") == (None, "no sample may be chosen")
    assert select_pair([(100.0, honest), (98.0, half)], 5.0, "k") == (None, "small margin")
    assert select_pair([(100.0, honest)], 5.0, "k") == (None, "few samples")
