"""AgentWrite: plan first, then write section by section (LongWriter, 2024), over any Engine.

The state machine per document:

1. **Target**: the row's length, else one parsed from the instruction, else a default.
2. **Plan**: one structured-output call returns sections (main point, word budget); budgets are
   reconciled so there are a sensible number of sections that sum to the target.
3. **Write**: one call per section inside a single growing conversation (see core.prompts),
   so each step's prompt extends the previous one and hits vLLM's prefix cache. ``max_tokens``
   and ``min_tokens`` come from the section's word budget and a tokens-per-word ratio that
   starts from the tokenizer's estimate and is corrected by what this document actually wrote.
   Words over or under budget are carried into the remaining sections' budgets. A section that
   stops well short gets a continuation call; an answer that loops, or that is mostly echoed
   instructions, is sampled once more with a repetition penalty and the better one kept. When
   the conversation nears the context window, whole early sections are dropped at once (with
   hysteresis) so the new prefix stays stable.

Everything is async and engine-agnostic; many documents run concurrently on one engine.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from core import prompts
from core.config import AgentWriteConfig
from core.engines.base import Engine, EngineError, GenResult, Message, SamplingSpec
from core.errors import one_line
from core.plan import (DocumentError, adopt_named, check_plan, fallback_plan, named_sections, parse_plan,
                        plan_schema, reconcile_plan, resolve_target, section_count_range)
from core.records import CallStat, Document, Section
from core.text import (LOOP_RATIO, clean_section, count_words, cut_to_words, detect_language, first_sentence,
                       repeated_4gram_share, trim_to_sentence)

DEFAULT_TOKENS_PER_WORD = {"en": 1.4, "zh": 1.6}
EventFn = Callable[[str, Document], Any]


# ---------------------------------------------------------------- the writer


@dataclass
class WriteState:
    """What is needed to resume a document after a crash: the plan and finished sections."""

    plan: list[dict[str, Any]] = field(default_factory=list)
    sections: list[dict[str, Any]] = field(default_factory=list)
    history: list[list[Message]] = field(default_factory=list)  # per section, its turns
    calls: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, s: str) -> "WriteState":
        return cls(**json.loads(s))


class AgentWriter:
    """Writes documents with the AgentWrite method on one engine; share it across coroutines."""

    def __init__(self, engine: Engine, cfg: AgentWriteConfig | None = None):
        self.engine = engine
        self.cfg = cfg or AgentWriteConfig()
        tpw = getattr(engine, "tokens_per_word", None)
        self._tpw = dict(tpw) if isinstance(tpw, dict) else dict(DEFAULT_TOKENS_PER_WORD)

    # -- public

    async def write(
        self,
        instruction: str,
        *,
        doc_id: str = "doc",
        length: int | None = None,
        metadata: dict[str, Any] | None = None,
        state: WriteState | None = None,
        on_event: EventFn | None = None,
        on_state: Callable[[WriteState], Any] | None = None,
    ) -> Document:
        """Write one document. Failures become ``status="failed"`` with a one-line ``error``.

        ``state`` resumes a document (plan and finished sections are reused, not regenerated);
        ``on_state`` is called after the plan and after each section so a caller can persist it.
        ``on_event(kind, doc)`` reports "plan", "section" and "done" for progress displays.
        """
        t0 = time.perf_counter()
        instruction = (instruction or "").strip()
        doc = Document(id=doc_id, prompt=instruction, target_words=0, target_source="", metadata=metadata or {})
        doc.model = getattr(self.engine, "model_name", "")
        try:
            if not instruction:
                raise DocumentError("empty instruction")
            doc.language = detect_language(instruction)
            doc.target_words, doc.target_source = resolve_target(length, instruction, self.cfg)
            if not 0 < doc.target_words <= self.cfg.max_length:
                raise DocumentError(f"target length {doc.target_words} is outside 1..{self.cfg.max_length} words")
            st = state or WriteState()
            doc.calls = [CallStat(**c) for c in st.calls]
            if not st.plan:
                st.plan = await self._plan(doc)
                st.calls = [asdict(c) for c in doc.calls]
                await _maybe(on_state, st)
            doc.plan = st.plan
            doc.sections = [Section(**s) for s in st.sections]
            await _maybe(on_event, "plan", doc)
            await self._write_sections(doc, st, on_event, on_state)
            doc.text = "\n\n".join(s.text for s in doc.sections if s.text)
            doc.word_count = count_words(doc.text)
            if doc.word_count == 0:  # e.g. a small model degenerating into digits
                raise DocumentError("the model wrote no words (degenerate output)")
        except (DocumentError, EngineError, ValueError) as e:
            doc.status, doc.error, doc.retryable = "failed", one_line(e, 500), isinstance(e, EngineError)
        doc.latency_s = time.perf_counter() - t0
        doc.model = getattr(self.engine, "model_name", "") or doc.model  # HTTP engines learn it on first call
        await _maybe(on_event, "done", doc)
        return doc

    async def write_direct(self, instruction: str, *, doc_id: str = "doc", length: int | None = None,
                           metadata: dict[str, Any] | None = None) -> Document:
        """One call, no plan: for models already trained to write long (mode "direct")."""
        t0 = time.perf_counter()
        instruction = (instruction or "").strip()
        doc = Document(id=doc_id, prompt=instruction, target_words=0, target_source="", mode="direct",
                       metadata=metadata or {}, model=getattr(self.engine, "model_name", ""))
        try:
            if not instruction:
                raise DocumentError("empty instruction")
            doc.language = detect_language(instruction)
            doc.target_words, doc.target_source = resolve_target(length, instruction, self.cfg)
            msgs = [{"role": "user", "content": instruction}]
            room = self.engine.max_model_len - self.engine.count_tokens(msgs) - self.cfg.context_margin
            if room < 16:
                raise DocumentError(self._too_long(msgs))
            cap = int(doc.target_words * self._tpw.get(doc.language, 1.5) * self.cfg.direct_max_share) + 64
            res = await self.engine.generate(msgs, sampling=SamplingSpec(
                max_tokens=min(room, cap), temperature=self.cfg.temperature, top_p=self.cfg.top_p, seed=self._seed(doc, 0)))
            doc.calls.append(_stat("direct", 0, res))
            doc.text = res.text.strip()
            doc.word_count = count_words(doc.text)
            if doc.word_count == 0:
                raise DocumentError("the model wrote no words (degenerate output)")
        except (DocumentError, EngineError, ValueError) as e:
            doc.status, doc.error, doc.retryable = "failed", one_line(e, 500), isinstance(e, EngineError)
        doc.latency_s = time.perf_counter() - t0
        doc.model = getattr(self.engine, "model_name", "") or doc.model  # HTTP engines learn it on first call
        return doc

    # -- plan

    async def _plan(self, doc: Document) -> list[dict[str, Any]]:
        lang, cfg = doc.language, self.cfg
        n_min, n_max = section_count_range(doc.target_words, cfg)
        user = prompts.PLAN[lang].format(instruction=doc.prompt, n_min=n_min, n_max=n_max, target=doc.target_words)
        msgs = [{"role": "system", "content": prompts.SYSTEM[lang]}, {"role": "user", "content": user}]
        max_tokens = 48 + 64 * n_max
        if self.engine.count_tokens(msgs) + max_tokens + cfg.context_margin > self.engine.max_model_len:
            raise DocumentError(self._too_long(msgs))
        schema = plan_schema(n_min, n_max, doc.target_words)
        names = named_sections(doc.prompt)
        reason = "no plan"
        for attempt in range(cfg.plan_retries + 1):
            res = await self.engine.generate(msgs, sampling=SamplingSpec(
                max_tokens=max_tokens, temperature=cfg.plan_temperature + 0.15 * attempt, top_p=cfg.top_p,
                seed=self._seed(doc, 1000 + attempt), json_schema=schema))
            doc.calls.append(_stat("plan", -1, res))
            if res.finish_reason == "length":
                reason = "plan was cut off at max_tokens"
                continue
            try:
                entries, problem = check_plan(parse_plan(res.text), doc.prompt, prompts.SYSTEM[lang], n_min)
                if problem:
                    raise DocumentError(problem)
            except DocumentError as e:
                reason = str(e)
                continue
            entries, named = adopt_named(entries, names)
            notes = ([f"retried {attempt}x: {reason}"] if attempt else []) + (["named sections adopted"] if named else [])
            if notes:
                doc.calls.append(_note(-1, "; ".join(notes)))
            return reconcile_plan(entries, doc.target_words, cfg)
        if not cfg.plan_fallback:
            raise DocumentError(f"no usable plan after {cfg.plan_retries + 1} attempts: {reason}")
        if names:  # the instruction's own section list beats generic points
            doc.calls.append(_note(-1, f"fell back to the named sections: {reason}"))
            return reconcile_plan([{"point": n, "words": 0} for n in names], doc.target_words, cfg)
        doc.calls.append(_note(-1, f"fell back to an even plan: {reason}"))
        return fallback_plan(doc.target_words, lang, cfg)

    # -- sections

    def _outline(self, doc: Document, dropped: int) -> str:
        lang = doc.language
        plan = "\n".join(prompts.PLAN_LINE[lang].format(k=i + 1, point=p["point"], words=p["words"])
                         for i, p in enumerate(doc.plan))
        text = prompts.OUTLINE[lang].format(instruction=doc.prompt, target=doc.target_words, plan=plan)
        if dropped:  # what left the window stays as a recap, so later parts do not repeat it
            recap = [prompts.RECAP_LINE[lang].format(k=s.index + 1, gist=first_sentence(s.text))
                     for s in doc.sections[:dropped]]
            text += "\n\n" + prompts.OMITTED[lang].format(k=dropped) + "\n" + "\n".join(recap)
        return text

    def _messages(self, doc: Document, history: list[list[Message]], dropped: int) -> list[Message]:
        msgs: list[Message] = [{"role": "system", "content": prompts.SYSTEM[doc.language]}]
        for j, turns in enumerate(history[dropped:]):
            for t, m in enumerate(turns):
                if j == 0 and t == 0:  # the outline rides on the first visible user turn
                    m = {"role": "user", "content": self._outline(doc, dropped) + "\n\n" + m["content"]}
                msgs.append(m)
        return msgs

    def _fit(self, doc: Document, history: list[list[Message]], dropped: int, max_tokens: int) -> tuple[list[Message], int]:
        """Messages that fit the context, dropping whole early sections with hysteresis."""
        room = self.engine.max_model_len - max_tokens - self.cfg.context_margin
        msgs = self._messages(doc, history, dropped)
        if self.engine.count_tokens(msgs) <= room:
            return msgs, dropped
        last = len(history) - 1
        while dropped < last:
            dropped += 1
            msgs = self._messages(doc, history, dropped)
            if self.engine.count_tokens(msgs) <= 0.6 * room:
                break
        if self.engine.count_tokens(msgs) > room:
            raise DocumentError(self._too_long(msgs))
        return msgs, dropped

    def _tokens_per_word(self, doc: Document) -> float:
        """Tokenizer prior, pulled toward what this document's sections actually used."""
        prior = self._tpw.get(doc.language, 1.5)
        words = sum(s.words for s in doc.sections)
        toks = sum(c.generated_tokens for c in doc.calls if c.kind in ("section", "continue"))
        est = (prior * 300 + toks) / (300 + words) if words else prior
        return min(max(est, 0.5 * prior), 2.0 * prior)

    async def _write_sections(self, doc: Document, st: WriteState, on_event: EventFn | None,
                              on_state: Callable[[WriteState], Any] | None) -> None:
        cfg, lang = self.cfg, doc.language
        history = [list(h) for h in st.history]
        dropped = 0
        n = len(doc.plan)
        for k in range(len(doc.sections), n):
            point = doc.plan[k]["point"]
            planned_before = sum(p["words"] for p in doc.plan[:k])
            written = sum(s.words for s in doc.sections)
            carry = (planned_before - written) / (n - k)  # spread any surplus / deficit forward
            budget = int(max(0.5 * doc.plan[k]["words"], min(1.5 * doc.plan[k]["words"], doc.plan[k]["words"] + carry)))
            history.append([{"role": "user", "content": prompts.STEP[lang].format(k=k + 1, n=n, words=budget, point=point)}])
            part, raw, finish, dropped = await self._section_call(doc, k, budget, history, dropped, "section")
            parts = [part]
            history[-1].append({"role": "assistant", "content": raw})
            for _ in range(cfg.max_continuations):
                have = count_words("\n\n".join(parts))
                # Only a model that chose to stop short gets asked for more: one cut off at
                # max_tokens already used its budget (the tokens-per-word estimate adapts).
                if finish != "stop" or have >= cfg.continue_below * budget:
                    break
                history[-1].append({"role": "user", "content": prompts.CONTINUE[lang].format(k=k + 1, words=budget - have)})
                part, raw, finish, dropped = await self._section_call(doc, k, budget - have, history, dropped, "continue")
                history[-1].append({"role": "assistant", "content": raw})
                parts.append(part)
            text = "\n\n".join(p for p in parts if p)
            if cfg.trim_over > 0 and count_words(text) > (1 + cfg.trim_over) * budget:
                cut = cut_to_words(text, int((1 + cfg.trim_over) * budget))
                if cut != text:
                    doc.calls.append(_note(k, f"cut {count_words(text) - count_words(cut)} words over the "
                                              f"{budget}-word budget at a sentence end"))
                    text = cut
            sec = Section(index=k, point=point, budget=doc.plan[k]["words"], text=text, words=count_words(text))
            doc.sections.append(sec)
            st.sections = [asdict(s) for s in doc.sections]
            st.history, st.calls = history, [asdict(c) for c in doc.calls]
            await _maybe(on_state, st)
            await _maybe(on_event, "section", doc)

    async def _section_call(self, doc: Document, k: int, words: int, history: list[list[Message]],
                            dropped: int, kind: str) -> tuple[str, str, str, int]:
        """One section call: (clean text for the document, raw text for the history, finish, dropped).

        The history keeps the model's text exactly as generated, so the next step's prompt
        extends this step's tokens and the prefix cache serves all of it; cleaning the history
        (a dropped preamble or heading) would break the cached prefix at that point.
        """
        cfg = self.cfg
        tpw = self._tokens_per_word(doc)
        max_tokens = int(words * tpw * cfg.max_budget_share) + 16
        min_tokens = int(words * tpw * cfg.min_budget_share)
        msgs, dropped = self._fit(doc, history, dropped, max_tokens)
        # Lines that repeat the step instruction, the outline or the system prompt are not prose.
        echoes = tuple(m["content"] for m in msgs if m["role"] != "assistant")
        best: tuple[float, float, CallStat, str, GenResult] | None = None  # score, loop share, ...
        for attempt in range(cfg.resample_tries + 1):
            # A small model at temperature > 0 now and then loops ("Tidal waves" x 9) or echoes
            # the instructions, which clean-up removes: such an answer is sampled again, with a
            # repetition penalty, and the better of the two is kept. An answer that may still be
            # resampled is stopped as soon as it loops (where the engine streams), rather than
            # running on to max_tokens only to be thrown away.
            guard = LOOP_RATIO if cfg.stop_loops and attempt < cfg.resample_tries else 0.0
            res = await self.engine.generate(msgs, sampling=SamplingSpec(
                max_tokens=max_tokens, min_tokens=min(min_tokens, max_tokens - 1), temperature=cfg.temperature,
                top_p=cfg.top_p, seed=self._seed(doc, k * 10 + (kind == "continue") + 2 * attempt),
                repetition_penalty=cfg.resample_repetition_penalty if attempt else 1.0, loop_guard=guard))
            stat = _stat(kind, k, res)
            doc.calls.append(stat)
            text = clean_section(res.text, echoes)
            if res.finish_reason in ("length", "loop"):
                text = trim_to_sentence(text)
            loop = repeated_4gram_share(text)
            score = count_words(text) * (1.0 - loop)
            if best is None or score > best[0]:
                if best is not None:
                    best[2].kind = "discarded"
                best = (score, loop, stat, text, res)
            else:
                stat.kind = "discarded"
            _, loop, _, text, res = best
            short = res.finish_reason == "length" and count_words(text) < cfg.continue_below * words
            if loop <= LOOP_RATIO and not short and res.finish_reason != "loop":
                break
        _, _, _, text, res = best
        return text, res.text, res.finish_reason, dropped

    # -- helpers

    def _seed(self, doc: Document, step: int) -> int | None:
        if self.cfg.seed is None:
            return None
        import zlib

        return (self.cfg.seed * 1_000_003 + zlib.crc32(doc.id.encode()) + step) % (2**31)

    def _too_long(self, msgs: list[Message]) -> str:
        return (f"instruction too long: the prompt takes {self.engine.count_tokens(msgs)} tokens of the "
                f"model's {self.engine.max_model_len}-token context")


def _stat(kind: str, step: int, r: GenResult) -> CallStat:
    return CallStat(kind=kind, step=step, prompt_tokens=r.prompt_tokens, cached_tokens=r.cached_tokens,
                    generated_tokens=r.generated_tokens, latency_s=round(r.latency_s, 4),
                    finish_reason=r.finish_reason)


def _note(step: int, what: str) -> CallStat:
    """A zero-token entry in the call stats recording a decision (kind "note", reason in finish_reason)."""
    return CallStat(kind="note", step=step, prompt_tokens=0, cached_tokens=0, generated_tokens=0, latency_s=0.0,
                    finish_reason=what)


async def _maybe(fn: Callable[..., Any] | None, *args: Any) -> None:
    if fn is None:
        return
    out = fn(*args)
    if asyncio.iscoroutine(out):
        await out
