"""AgentWrite state-machine logic, driven by a scripted engine.

Why a scripted engine and not vLLM: these tests need the model to misbehave on demand (answer
a section far too short, return a broken plan, fail mid-document, overshoot budgets) and to do
so deterministically. A real model cannot be made to do that reliably. The scripted engine is
a small, complete implementation of the Engine protocol that records every call (messages and
SamplingSpec) and answers from a per-test script. The real engine is exercised end to end in
tests/test_vllm_engine.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import re
from dataclasses import dataclass
from typing import Any, Callable

import pytest

from core import prompts
from core.agentwrite import DEFAULT_TOKENS_PER_WORD, AgentWriter, WriteState
from core.plan import DocumentError, named_sections, parse_plan, reconcile_plan, resolve_target, section_count_range
from core.config import AgentWriteConfig
from core.engines.base import Engine, EngineError, GenResult, Message, SamplingSpec, check_one_input
from core.text import clean_section, count_words, nonprose_spans, is_looping, repeated_4gram_share, trim_to_sentence

pytestmark = pytest.mark.timeout(60)
CFG = AgentWriteConfig()
INSTRUCTION = "Write an essay on the history of lighthouses and their keepers."


# ---------------------------------------------------------------- the scripted engine


@dataclass
class Call:
    messages: list[Message]
    sampling: SamplingSpec
    kind: str  # "plan" | "section" | "continue", read off the request
    part: int | None  # 1-based part number named in the last user turn
    asked: int | None  # the "about N words" of the last user turn


class ScriptedEngine:
    """Engine protocol; tokens are counted as characters // 4."""

    model_name = "scripted-model"

    def __init__(self, script: Callable[[Call], str | GenResult], max_model_len: int = 32768):
        self.script, self.max_model_len, self.calls = script, max_model_len, []
        self.closed = False

    async def generate(self, messages: list[Message] | None = None, *, prompt: str | None = None,
                       sampling: SamplingSpec | None = None) -> GenResult:
        check_one_input(messages, prompt)
        msgs = [dict(m) for m in (messages if messages is not None else [{"role": "user", "content": prompt}])]
        sampling = sampling or SamplingSpec()
        last = msgs[-1]["content"]
        part = re.search(r"(?:Write|Continue) part (\d+)", last)
        asked = re.search(r"about (\d+) (?:more )?words", last)
        kind = "plan" if sampling.json_schema else "continue" if "Continue part" in last else "section"
        call = Call(msgs, sampling, kind, part and int(part.group(1)), asked and int(asked.group(1)))
        self.calls.append(call)
        out = self.script(call)
        res = GenResult(out, "stop") if isinstance(out, str) else out
        res.prompt_tokens = self.count_tokens(msgs)
        res.generated_tokens = round(1.4 * count_words(res.text))
        return res

    def count_tokens(self, messages: list[Message]) -> int:
        return sum(len(m["content"]) for m in messages) // 4

    async def close(self) -> None:
        self.closed = True

    def of(self, kind: str) -> list[Call]:
        return [c for c in self.calls if c.kind == kind]


def tag(k: int, cont: bool = False) -> str:
    """A letters-only marker word (so count_words counts it) naming section k."""
    return ("cont" if cont else "mark") + "abcdefghijklmnopqrstuvwxyz"[k]


def prose(n: int, first: str = "filler") -> str:
    """Exactly n words (count_words), in ten-word sentences."""
    # Made-up words that do not repeat as 4-grams for 1,001 words, so no answer looks like a loop.
    a, b, c = "ka lo mi ne ru sa to".split(), "ber dan fel gor hin jul kem lar mon pel rit".split(), "ax".split()
    filler = [a[i % 7] + b[(i // 7) % 11] + c[0] * (1 + (i // 77) % 13) for i in range(1001)]
    words = [first] + [filler[i % len(filler)] for i in range(n - 1)]
    return " ".join(" ".join(words[i:i + 10]) + "." for i in range(0, n, 10))


def plan_json(words: list[int]) -> str:
    return json.dumps({"sections": [{"point": f"Point number {tag(i)}", "words": w} for i, w in enumerate(words)]})


def scripted(words: list[int], length: Callable[[Call], int] = lambda c: c.asked) -> Callable[[Call], str]:
    """Plan calls get `words` as the plan; section k answers length(call) words tagged tag(k)."""
    def script(c: Call) -> str:
        if c.kind == "plan":
            return plan_json(words)
        return prose(length(c), tag(c.part - 1, c.kind == "continue"))
    return script


def write(engine: ScriptedEngine, instruction: str = INSTRUCTION, cfg: AgentWriteConfig = CFG, **kw: Any):
    return asyncio.run(AgentWriter(engine, cfg).write(instruction, **kw))


def test_scripted_engine_is_an_engine() -> None:
    assert isinstance(ScriptedEngine(lambda c: ""), Engine)


# ---------------------------------------------------------------- pure functions


def test_section_count_range() -> None:
    lo, hi = section_count_range(300, CFG)
    assert (lo, hi) == (1, 2)
    assert section_count_range(600, CFG) == (2, 3)  # never a one-section plan past 2 x min words
    lo, hi = section_count_range(10000, CFG)
    assert lo >= 15 and hi <= 30 and lo <= hi
    prev = (0, 0)
    for target in range(1, CFG.max_length + 1, 37):
        cur = section_count_range(target, CFG)
        assert 1 <= cur[0] <= cur[1] <= CFG.max_sections
        assert cur[0] >= prev[0] and cur[1] >= prev[1], target
        prev = cur


def test_reconcile_plan_random_plans_sum_to_target() -> None:
    rng = random.Random(20240607)
    merged = split = 0
    for _ in range(200):
        target = rng.randint(100, 20000)
        entries = [{"point": f"point {i}", "words": rng.choice([0, -40, rng.randint(1, 60), rng.randint(100, 3000)])}
                   for i in range(rng.randint(1, 40))]
        n_min, n_max = section_count_range(target, CFG)
        out = reconcile_plan(entries, target, CFG)
        assert sum(e["words"] for e in out) == target
        assert n_min <= len(out) <= n_max
        assert all(e["words"] > 0 and isinstance(e["words"], int) for e in out)
        merged += len(entries) > n_max
        split += len(entries) < n_min
    assert merged > 10 and split > 10  # both repair paths were exercised


def test_reconcile_plan_merges_and_splits() -> None:
    many = [{"point": f"p{i:02d}", "words": 100} for i in range(10)]
    out = reconcile_plan(many, 300, CFG)  # at most 2 sections for 300 words
    assert len(out) == 2 and sum(e["words"] for e in out) == 300
    assert "; " in out[0]["point"] and all(f"p{i:02d}" in "; ".join(e["point"] for e in out) for i in range(10))
    out = reconcile_plan([{"point": "everything", "words": 9000}], 9000, CFG)  # at least 13
    assert len(out) == section_count_range(9000, CFG)[0]
    assert sum(e["words"] for e in out) == 9000 and all("(continued)" in e["point"] for e in out[1:])
    with pytest.raises(DocumentError):
        reconcile_plan([], 1000, CFG)


def test_reconcile_plan_extreme_weights_still_sum_to_target() -> None:
    # One entry 500x the others: every item is clamped (4 to lo, 1 to hi) in the first pass of
    # _apportion, nothing is left free, and the budgets sum to 1305 instead of 1395.
    out = reconcile_plan([{"point": "point", "words": w} for w in (10, 5000, 10, 10, 10)], 1395, CFG)
    assert sum(e["words"] for e in out) == 1395


def test_parse_plan() -> None:
    good = '{"sections": [{"point": "Open with the storm", "words": 300}, {"point": "The keeper", "words": "x"}]}'
    assert parse_plan(good) == [{"point": "Open with the storm", "words": 300}, {"point": "The keeper", "words": 0}]
    fenced = 'Here is the plan:\n```json\n{"sections": [{"point": "  A   point ", "words": 250}]}\n```\nDone.'
    assert parse_plan(fenced) == [{"point": "A point", "words": 250}]
    skipping = ('{"sections": [{"words": 100}, {"point": "ab", "words": 5}, "junk", {"point": "1},{", "words": 9},'
                ' {"point": "Kept", "words": 7}]}')
    assert parse_plan(skipping) == [{"point": "Kept", "words": 7}]
    for bad in ("not json at all", '{"sections": [', '{"parts": []}', '{"sections": [{"words": 100}]}'):
        with pytest.raises(DocumentError):
            parse_plan(bad)


@pytest.mark.parametrize(("raw", "expected"), [
    ("Part 3 - The Lamp\nThe lamp burned all night.", "The lamp burned all night."),
    ("## Section 2: Foo\n\nBody text here.", "Body text here."),
    ("**Part 4**\nBody text here.", "Body text here."),
    ("第三部分：灯塔\n灯塔在夜里发光。", "灯塔在夜里发光。"),
    ("Sure, here is part 2:\n\nThe sea was calm.", "The sea was calm."),
    ("Write part 1 of 10 now: about 300 words: the storm\nThe storm came.", "The storm came."),
    ("## The keepers\n\nThey lived alone.\n\nPart of the job was waiting.",
     "## The keepers\n\nThey lived alone.\n\nPart of the job was waiting."),
])
def test_clean_section(raw: str, expected: str) -> None:
    assert clean_section(raw) == expected


def test_clean_section_keeps_body_lines_that_start_with_a_label() -> None:
    text = "Step 1: preheat the oven to 180 degrees.\nChapter 11 bankruptcy is a legal process."
    assert clean_section(text) == text


def test_trim_to_sentence() -> None:
    assert trim_to_sentence("One sentence here. Two sentences here. Three is cu") == \
        "One sentence here. Two sentences here."
    assert trim_to_sentence('He left. She said "go now." And then the') == 'He left. She said "go now."'
    assert trim_to_sentence("Complete. Also complete.") == "Complete. Also complete."
    assert trim_to_sentence("no sentence end at all") == "no sentence end at all"
    tail = "Short. " + "and a very long unfinished clause that keeps going " * 3  # trimming would lose >40%
    assert trim_to_sentence(tail) == tail


def test_trim_to_sentence_chinese() -> None:
    assert trim_to_sentence("灯塔守护者每晚点亮灯火。风暴来临时他彻夜不眠。第二天清晨他写下日") == \
        "灯塔守护者每晚点亮灯火。风暴来临时他彻夜不眠。"


def test_resolve_target() -> None:
    assert resolve_target(1234, "Write 2000 words about X", CFG) == (1234, "row")
    assert resolve_target(None, "Write 2000 words about X", CFG) == (2000, "instruction")
    assert resolve_target(None, "Write about X", CFG) == (CFG.default_length, "default")


# ---------------------------------------------------------------- full write


def test_full_write_plan_sections_and_prefix_layout() -> None:
    eng = ScriptedEngine(scripted([200, 400, 600, 800]))
    doc = write(eng, length=2000)
    assert doc.status == "ok", doc.error
    plan_call = eng.calls[0]
    assert plan_call.kind == "plan" and plan_call.sampling.json_schema is not None
    n_min, n_max = section_count_range(2000, CFG)
    items = plan_call.sampling.json_schema["properties"]["sections"]
    assert (items["minItems"], items["maxItems"]) == (n_min, n_max)
    assert [p["point"] for p in doc.plan] == [f"Point number {tag(i)}" for i in range(4)]
    budgets = [p["words"] for p in doc.plan]
    assert sum(budgets) == 2000 and budgets == sorted(budgets) and len(set(budgets)) == 4
    secs = eng.of("section")
    assert [c.part for c in secs] == [1, 2, 3, 4] and [c.kind for c in doc.calls] == ["plan"] + ["section"] * 4
    assert not eng.of("continue")
    first = secs[0].messages
    assert [m["role"] for m in first] == ["system", "user"]
    assert INSTRUCTION in first[1]["content"] and "Point number markd" in first[1]["content"]
    for k in range(1, 4):  # each prompt = previous prompt + previous answer + one new user turn
        prev, cur = secs[k - 1].messages, secs[k].messages
        assert cur[:len(prev)] == prev and len(cur) == len(prev) + 2
        assert cur[len(prev)] == {"role": "assistant", "content": doc.sections[k - 1].text}
        assert cur[-1]["role"] == "user" and cur[-1]["content"].startswith(f"Write part {k + 1} of 4")
    # Carry is zero (each section is exactly on budget), so asked == planned, and tokens scale.
    assert [c.asked for c in secs] == budgets
    for c in secs:
        s = c.sampling
        assert c.asked * 1.4 * CFG.min_budget_share * 0.9 <= s.min_tokens < s.max_tokens
        assert s.max_tokens <= c.asked * 1.4 * CFG.max_budget_share * 1.1 + 16 and s.json_schema is None
    assert [c.sampling.max_tokens for c in secs] == sorted(c.sampling.max_tokens for c in secs)
    assert [s.words for s in doc.sections] == budgets and doc.word_count == 2000
    assert all(tag(k) in s.text for k, s in enumerate(doc.sections))
    assert doc.text == "\n\n".join(s.text for s in doc.sections) and doc.model == "scripted-model"


def test_short_section_gets_exactly_one_continuation() -> None:
    # Part 2 answers 20 words, and its continuation is short again: still only one continuation.
    eng = ScriptedEngine(scripted([500] * 4, lambda c: 20 if c.part == 2 else c.asked))
    doc = write(eng, length=2000)
    assert doc.status == "ok", doc.error
    cont = eng.of("continue")
    assert len(cont) == 1 and cont[0].part == 2
    assert [(c.kind, c.step) for c in doc.calls if c.kind == "continue"] == [("continue", 1)]
    assert cont[0].asked == doc.plan[1]["words"] - 20
    assert cont[0].messages[-2] == {"role": "assistant", "content": prose(20, tag(1))}
    text = doc.sections[1].text
    assert tag(1) in text and tag(1, cont=True) in text and doc.sections[1].words == 40
    # The next part's prompt carries both halves of part 2 in the conversation.
    nxt = eng.of("section")[2].messages
    assert [m["role"] for m in nxt[-4:]] == ["assistant", "user", "assistant", "user"]


def test_truncated_answer_is_trimmed_to_a_sentence() -> None:
    def script(c: Call) -> str | GenResult:
        if c.kind == "plan":
            return plan_json([300])
        return GenResult(prose(c.asked, tag(0)) + " and then the keeper", "length")
    doc = write(ScriptedEngine(script), length=300)
    assert doc.status == "ok" and doc.sections[0].text.endswith(".") and "keeper" not in doc.sections[0].text


def test_invalid_plan_is_retried() -> None:
    answers = iter(["Sure! Here is a plan: first the storm, then the keeper.", plan_json([400, 400])])
    good = scripted([400, 400])
    eng = ScriptedEngine(lambda c: next(answers) if c.kind == "plan" else good(c))
    doc = write(eng, length=800)
    assert doc.status == "ok", doc.error
    plans = eng.of("plan")
    assert len(plans) == 2 and plans[1].sampling.temperature > plans[0].sampling.temperature
    assert [c.kind for c in doc.calls] == ["plan", "plan", "note", "section", "section"]
    assert doc.calls[2].finish_reason == "retried 1x: plan is not valid JSON"


@pytest.mark.parametrize("bad", ["no json here", GenResult('{"sections": [{"point": "Cut', "length")])
def test_plan_always_unusable_fails_without_fallback(bad: str | GenResult) -> None:
    eng = ScriptedEngine(lambda c: bad)
    doc = write(eng, length=800, cfg=dataclasses.replace(CFG, plan_fallback=False))
    assert doc.status == "failed" and "plan" in doc.error and not doc.sections
    assert len(eng.calls) == CFG.plan_retries + 1 and all(c.kind == "plan" for c in eng.calls)


@pytest.mark.parametrize(("bad", "lang_prompt", "length"), [
    ('{"sections": [{"point": "123", "words": 123}, {"point": "1.1.1", "words": 99}]}', None, 800),
    ("no json here", None, 2000),
    ('{"sections": [{"point": "1234567890", "words": 178}]}', "请写一篇800字的短文，介绍秋天。", 800),
])
def test_unplannable_prompt_gets_the_even_fallback_plan(bad: str, lang_prompt: str | None, length: int) -> None:
    good = scripted([length])

    def script(c: Call) -> str:
        return bad if c.kind == "plan" else good(c) if lang_prompt is None else "秋天来了，树叶变黄。" * 20

    eng = ScriptedEngine(script)
    doc = write(eng, length=length, instruction=lang_prompt) if lang_prompt else write(eng, length=length)
    assert doc.status == "ok", doc.error
    assert len(eng.of("plan")) == CFG.plan_retries + 1
    n_min, n_max = section_count_range(length, CFG)
    assert n_min <= len(doc.plan) <= n_max and sum(p["words"] for p in doc.plan) == length
    assert max(p["words"] for p in doc.plan) - min(p["words"] for p in doc.plan) <= 1  # even budgets
    assert len(doc.sections) == len(doc.plan) and not any(ch.isdigit() for p in doc.plan for ch in p["point"])
    assert all(p["point"] in prompts.FALLBACK_POINTS[doc.language] for p in doc.plan)


def test_engine_error_becomes_a_failed_document() -> None:
    good = scripted([400] * 3)

    def script(c: Call) -> str:
        if c.part == 2:
            raise EngineError("backend said 503 Service Unavailable")
        return good(c)
    doc = write(ScriptedEngine(script), length=1200)
    assert doc.status == "failed" and "503 Service Unavailable" in doc.error and len(doc.sections) == 1


def test_bad_inputs_fail_without_engine_calls() -> None:
    eng = ScriptedEngine(scripted([400]))
    assert write(eng, "   ").error == "empty instruction"
    doc = write(eng, length=CFG.max_length + 1)
    assert doc.status == "failed" and str(CFG.max_length) in doc.error
    small = ScriptedEngine(scripted([400]), max_model_len=2000)
    doc = write(small, "Write about the sea. " * 800, length=400)
    assert doc.status == "failed" and "too long" in doc.error
    assert eng.calls == [] and small.calls == []


# ---------------------------------------------------------------- windowing, resume, carry


def test_window_drops_early_sections_and_fits_the_context() -> None:
    eng = ScriptedEngine(scripted([400] * 10), max_model_len=3000)
    doc = write(eng, length=4000)
    assert doc.status == "ok", doc.error
    secs = eng.of("section")
    assert len(secs) == 10
    omitted_re = re.escape(prompts.OMITTED["en"]).replace(r"\{k\}", r"(\d+)")
    first = {j: doc.sections[j].text.split(".")[0] + "." for j in range(10)}
    dropped = []
    for c in secs:
        assert eng.count_tokens(c.messages) + c.sampling.max_tokens + CFG.context_margin <= eng.max_model_len
        first_user = c.messages[1]
        assert first_user["role"] == "user" and INSTRUCTION in first_user["content"]
        assert "Point number markj (400 words)" in first_user["content"]  # the full outline is kept
        m = re.search(omitted_re, first_user["content"])
        dropped.append(int(m.group(1)) if m else 0)
        body = "".join(m["content"] for m in c.messages[2:] if m["role"] == "assistant")
        assert all(tag(j) not in body for j in range(dropped[-1]))  # dropped parts really are gone
        # ... except for a recap of how each began, beside the outline
        assert all(f"Part {j + 1}: {first[j]}" in first_user["content"] for j in range(dropped[-1]))
    assert dropped[0] == 0 and dropped[-1] > 0 and dropped == sorted(dropped)
    for k in range(1, 10):  # between drops the prompt still grows by extension (prefix cache)
        if dropped[k] == dropped[k - 1]:
            assert secs[k].messages[:len(secs[k - 1].messages)] == secs[k - 1].messages
    assert len(set(dropped)) < len(dropped) - 3  # hysteresis: whole blocks are dropped at once


def test_resume_reuses_plan_and_finished_sections() -> None:
    class Interrupted(Exception):
        pass

    saved: list[str] = []

    def on_state(st: WriteState) -> None:
        saved.append(st.to_json())
        if len(st.sections) == 2:
            raise Interrupted

    first = ScriptedEngine(scripted([400] * 5))
    with pytest.raises(Interrupted):
        write(first, length=2000, on_state=on_state)
    state = WriteState.from_json(saved[-1])
    assert len(state.sections) == 2 and len(first.of("plan")) == 1
    done_texts = [s["text"] for s in state.sections]

    second = ScriptedEngine(scripted([999] * 3))  # a different plan, if it were asked again
    doc = write(second, length=2000, state=state)
    assert doc.status == "ok", doc.error
    assert not second.of("plan") and [c.part for c in second.calls] == [3, 4, 5]
    assert [s.text for s in doc.sections[:2]] == done_texts and len(doc.sections) == 5
    assert [p["words"] for p in doc.plan] == [400] * 5
    assert [c.kind for c in doc.calls] == ["plan"] + ["section"] * 5
    resumed = second.calls[0].messages  # the conversation so far is restored, not rebuilt
    assert [m["content"] for m in resumed if m["role"] == "assistant"] == done_texts
    assert all(tag(k) in doc.text for k in range(5))


def test_overshoot_is_carried_into_later_budgets() -> None:
    eng = ScriptedEngine(scripted([400] * 5, lambda c: int(c.asked * 1.4) if c.part <= 2 else c.asked))
    doc = write(eng, length=2000, cfg=dataclasses.replace(CFG, trim_over=0))  # carry alone, no cut
    assert doc.status == "ok", doc.error
    asked = [c.asked for c in eng.of("section")]
    written = [s.words for s in doc.sections]
    assert asked[0] == 400 and written[:2] == [560, int(asked[1] * 1.4)]
    assert all(200 <= a < 400 for a in asked[1:]), asked  # lowered, but not below half the plan
    for k in range(1, 5):  # surplus so far, spread over the parts still to write
        assert asked[k] == int(400 + (400 * k - sum(written[:k])) / (5 - k))
    assert [s.budget for s in doc.sections] == [400] * 5  # the record keeps the plan's budget
    assert abs(doc.word_count - 2000) < abs(1120 + 3 * 400 - 2000)


def test_write_direct_is_one_call() -> None:
    eng = ScriptedEngine(lambda c: "  " + prose(50) + "  \n")
    doc = asyncio.run(AgentWriter(eng, CFG).write_direct("Write 300 words about the sea."))
    assert doc.status == "ok" and doc.mode == "direct" and len(eng.calls) == 1
    call = eng.calls[0]
    assert call.messages == [{"role": "user", "content": "Write 300 words about the sea."}]
    assert call.sampling.json_schema is None
    room = eng.max_model_len - eng.count_tokens(call.messages) - CFG.context_margin
    cap = int(300 * DEFAULT_TOKENS_PER_WORD["en"] * CFG.direct_max_share) + 64  # twice the target, at most
    assert call.sampling.max_tokens == min(room, cap)
    assert [c.kind for c in doc.calls] == ["direct"] and doc.text == prose(50) and doc.word_count == 50
    assert (doc.target_words, doc.target_source) == (300, "instruction")


def test_document_without_words_fails() -> None:
    """Degenerate output (digits only) must not land in the corpus as an ok document."""
    def script(c):
        if c.kind == "plan":
            return json.dumps({"sections": [{"point": "Numbers only", "words": 100}]})
        return "2018-08-08 12:25:34 10:00:00 2018-08-08"

    doc = asyncio.run(AgentWriter(ScriptedEngine(script), CFG).write("Write 100 words about clocks."))
    assert doc.status == "failed" and "no words" in doc.error and doc.messages() == []


def test_echoed_step_instructions_are_removed_anywhere() -> None:
    text = ("Rain smells of earth.\nWrite part 5 of 1 now, about 400 words: \nThe air cools.\n"
            "Do not add a title or a number.\nDo not repeat earlier parts and do not add a title or a part number.\nEnd.")
    assert clean_section(text) == "Rain smells of earth.\nThe air cools.\nEnd."


def test_echoed_step_keeps_the_prose_that_follows_it_on_the_line() -> None:
    text = ("Write part 2 of 3 now: Salt is a mineral. The sea holds a lot of it. People mine it too.\n"
            "It keeps food. Do not repeat earlier parts.")
    assert clean_section(text) == "Salt is a mineral. The sea holds a lot of it. People mine it too.\nIt keeps food."


def test_loop_measure_tells_loops_from_test_prose() -> None:
    assert repeated_4gram_share("Tidal waves\n\n" * 9) > 0.8
    assert repeated_4gram_share(prose(900)) == 0.0  # the scripted answers below never look like loops


VARIED = ("Rain fell on the harbour while the keeper counted ships. Each lantern had a name, and the "
          "oldest was called Margaret after his mother. Gulls argued over fish heads near the pier. ")


def test_looping_answer_is_resampled_with_a_penalty_and_the_better_kept() -> None:
    def script(c: Call) -> str | GenResult:
        if c.kind == "plan":
            return plan_json([120])
        if c.sampling.repetition_penalty == 1.0:
            return GenResult("Tidal waves\n" * 40, "length")
        return VARIED * 3
    eng = ScriptedEngine(script)
    doc = write(eng, length=120)
    assert doc.status == "ok" and doc.text == (VARIED * 3).strip()
    assert [c.kind for c in doc.calls] == ["plan", "discarded", "section"]
    assert eng.calls[2].sampling.repetition_penalty == CFG.resample_repetition_penalty > 1
    assert eng.calls[1].messages == eng.calls[2].messages  # the same prompt, sampled again
    # Only the answer that can still be resampled is guarded (stopped early where the engine streams).
    assert eng.calls[1].sampling.loop_guard > 0 and eng.calls[2].sampling.loop_guard == 0


def test_answer_stopped_as_a_loop_is_resampled_even_when_clean_up_leaves_prose() -> None:
    def script(c: Call) -> str | GenResult:
        if c.kind == "plan":
            return plan_json([120])
        if c.sampling.loop_guard:
            return GenResult(VARIED + "Rain fell on the harbour while", "loop")  # cut where the engine stopped it
        return VARIED * 3
    doc = write(ScriptedEngine(script), length=120)
    assert doc.text == (VARIED * 3).strip()
    assert [(c.kind, c.finish_reason) for c in doc.calls][1:] == [("discarded", "loop"), ("section", "stop")]
    eng = ScriptedEngine(script)
    write(eng, length=120, cfg=AgentWriteConfig(stop_loops=False))
    assert all(c.sampling.loop_guard == 0 for c in eng.calls)


def test_is_looping_needs_enough_words() -> None:
    assert is_looping("Tidal waves crash here. " * 20, 0.3)
    assert not is_looping("Tidal waves crash here. " * 10, 0.3)  # 40 words: too few to judge
    assert not is_looping(prose(200), 0.3) and not is_looping("Tidal waves crash here. " * 20, 0.0)


def test_resample_keeps_the_first_answer_when_the_second_is_worse() -> None:
    first = "The keeper wrote one line."  # short and cut off: worth another sample
    def script(c: Call) -> str | GenResult:
        if c.kind == "plan":
            return plan_json([150])
        return GenResult(first, "length") if c.sampling.repetition_penalty == 1.0 else GenResult("Waves " * 50, "length")
    doc = write(ScriptedEngine(script), length=150)
    assert doc.text == first and [c.kind for c in doc.calls] == ["plan", "section", "discarded"]


def test_good_answer_is_not_resampled() -> None:
    eng = ScriptedEngine(scripted([150]))
    doc = write(eng, length=150, cfg=AgentWriteConfig(resample_tries=3))
    assert [c.kind for c in doc.calls] == ["plan", "section"]


def test_section_far_over_budget_is_cut_at_a_sentence_end() -> None:
    eng = ScriptedEngine(scripted([150], lambda c: int(c.asked * 1.6)))
    doc = write(eng, "Write a short note on tides.", length=150)
    assert doc.status == "ok" and len(doc.sections) == 1
    # 240 words written in ten-word sentences; the band is 150 x 1.1 = 165: cut back to 160.
    assert doc.word_count == 160 and doc.text.endswith(".")
    note = [c for c in doc.calls if c.kind == "note"]
    assert [(c.step, c.finish_reason) for c in note] == [(0, "cut 80 words over the 150-word budget at a sentence end")]
    assert sum(c.generated_tokens for c in note) == 0


def test_plan_with_repeated_and_debris_points_is_retried() -> None:
    junk = json.dumps({"sections": [{"point": "{'1,500-word'_urban_heat_map_report'", "words": 300}] * 4
                       + [{"point": "1. The first atomic clock", "words": 300}, {"point": "The first atomic clock.", "words": 300}]})
    answers = iter([junk, plan_json([400, 400, 400])])
    good = scripted([400, 400, 400])
    eng = ScriptedEngine(lambda c: next(answers) if c.kind == "plan" else good(c))
    doc = write(eng, length=1200)
    assert doc.status == "ok" and len(eng.of("plan")) == 2
    assert [p["point"] for p in doc.plan] == [f"Point number {tag(i)}" for i in range(3)]
    note = next(c for c in doc.calls if c.kind == "note")
    assert note.finish_reason == "retried 1x: plan has 1 usable of 6 points (4 debris, 1 repeated)"


def test_named_sections_become_the_plan_in_order() -> None:
    instruction = "Write a 1,600-word report on urban heat with sections on trees, roofs, water and policy."
    answer = json.dumps({"sections": [{"point": "Why roofs matter", "words": 800}, {"point": "Cooling cities", "words": 800}]})
    good = scripted([400] * 4)
    eng = ScriptedEngine(lambda c: answer if c.kind == "plan" else good(c))
    doc = write(eng, instruction)
    assert doc.status == "ok"
    assert [p["point"] for p in doc.plan] == ["trees", "Why roofs matter", "water", "policy"]
    assert sum(p["words"] for p in doc.plan) == 1600
    assert any(c.kind == "note" and c.finish_reason == "named sections adopted" for c in doc.calls)


def test_unplannable_prompt_with_named_sections_falls_back_to_them() -> None:
    eng = ScriptedEngine(lambda c: "no plan here" if c.kind == "plan" else "秋天来了，树叶变黄。" * 20)
    doc = write(eng, "写一篇关于茶文化的文章，分为起源、发展和影响三部分。", length=900)
    assert doc.status == "ok" and [p["point"] for p in doc.plan] == ["起源", "发展", "影响"]
    assert any(c.kind == "note" and c.finish_reason.startswith("fell back to the named sections") for c in doc.calls)


@pytest.mark.parametrize("instruction, names", [
    ("Write a guide with four parts: setup, usage, tuning, and troubleshooting.", ["setup", "usage", "tuning", "troubleshooting"]),
    ("An essay in sections on the past and the future.", ["the past", "the future"]),
    ("写一篇文章，包括历史、现状以及未来三个方面。", ["历史", "现状", "未来"]),
    ("Write 500 words about cats.", []),
    ("Write the part about the storm.", []),  # one name is not a list of sections
])
def test_named_sections(instruction: str, names: list[str]) -> None:
    assert named_sections(instruction) == names


def test_echoed_prompt_lines_and_junk_neither_ship_nor_count() -> None:
    junk = "；" * 30 + "ZHANGWEILIHUAWANGFANGLIUYANGCHENJINGZHAOLEIHUANGMIN"

    def script(c: Call) -> str:
        if c.kind == "plan":
            return plan_json([300, 300])
        return f"Point number {tag(c.part - 1)}\n" + prose(c.asked, tag(c.part - 1)) + "\n" + junk

    doc = write(ScriptedEngine(script), length=600)
    assert doc.status == "ok" and doc.word_count == 600, doc.word_count
    assert "Point number" not in doc.text and "；；" not in doc.text and "ZHANG" not in doc.text


def test_real_instructions_have_no_nonprose_spans_and_few_named_lists() -> None:
    from conftest import LONGBENCH

    prompts_ = [json.loads(line)["prompt"] for line in (LONGBENCH / "longbench_write.jsonl").open(encoding="utf-8")]
    assert len(prompts_) == 120
    assert [p for p in prompts_ if nonprose_spans(p)] == []
    assert [p for p in prompts_ if named_sections(p)] == []  # none of the 120 names a section list


@pytest.mark.parametrize("text, kinds", [
    ("秋天来了。；；；；；；后来", ["punctuation"]),
    ("Fine prose. " + "QWERTYUIOPASDFGHJKLZXCVBNMQWERTYUIOPASDFGH" + " more.", ["letters"]),
    ("正文。ge中Ren国xue生ba的ma好zi了ka在", ["mixed"]),
    ("Wait... really?! Yes -- and ---- and ==== and | a | b |.", []),  # ellipses and markdown stay
    ("使用Python和Java以及C语言编写。", []),
    ("……他说。", []),
])
def test_nonprose_spans(text: str, kinds: list[str]) -> None:
    assert [k for _, _, k in nonprose_spans(text)] == kinds


def test_loop_guard_stops_degenerate_text_early() -> None:
    assert not is_looping("Short prose. " * 3, 0.3)
    assert is_looping("Short prose. " * 3 + "；" * 45, 0.3)
    assert not is_looping("Short prose. " * 3 + "；" * 45, 0.0)  # the guard off is off
