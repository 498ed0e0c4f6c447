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
import math
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from core import prompts
from core.config import AgentWriteConfig
from core.engines.base import Engine, EngineError, GenResult, Message, SamplingSpec
from core.length import count_words, detect_language, parse_target_length
from core.records import CallStat, Document, Section
from core.scores import repeated_4gram_share

DEFAULT_TOKENS_PER_WORD = {"en": 1.4, "zh": 1.6}
EventFn = Callable[[str, Document], Any]


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


# ---------------------------------------------------------------- text clean-up

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
_LOOP_RATIO = 0.3  # repeated_4gram_share above this is a loop (prose stays under ~0.05)
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
            doc.status, doc.error, doc.retryable = "failed", _one_line(e), isinstance(e, EngineError)
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
            doc.status, doc.error, doc.retryable = "failed", _one_line(e), isinstance(e, EngineError)
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
                return reconcile_plan(parse_plan(res.text), doc.target_words, cfg)
            except DocumentError as e:
                reason = str(e)
        if cfg.plan_fallback:
            return fallback_plan(doc.target_words, lang, cfg)
        raise DocumentError(f"no usable plan after {cfg.plan_retries + 1} attempts: {reason}")

    # -- sections

    def _outline(self, doc: Document, dropped: int) -> str:
        lang = doc.language
        plan = "\n".join(prompts.PLAN_LINE[lang].format(k=i + 1, point=p["point"], words=p["words"])
                         for i, p in enumerate(doc.plan))
        text = prompts.OUTLINE[lang].format(instruction=doc.prompt, target=doc.target_words, plan=plan)
        if dropped:
            text += "\n\n" + prompts.OMITTED[lang].format(k=dropped)
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
        best: tuple[float, float, CallStat, str, GenResult] | None = None  # score, loop share, ...
        for attempt in range(cfg.resample_tries + 1):
            # A small model at temperature > 0 now and then loops ("Tidal waves" x 9) or echoes
            # the instructions, which clean-up removes: such an answer is sampled again, with a
            # repetition penalty, and the better of the two is kept. An answer that may still be
            # resampled is stopped as soon as it loops (where the engine streams), rather than
            # running on to max_tokens only to be thrown away.
            guard = _LOOP_RATIO if cfg.stop_loops and attempt < cfg.resample_tries else 0.0
            res = await self.engine.generate(msgs, sampling=SamplingSpec(
                max_tokens=max_tokens, min_tokens=min(min_tokens, max_tokens - 1), temperature=cfg.temperature,
                top_p=cfg.top_p, seed=self._seed(doc, k * 10 + (kind == "continue") + 2 * attempt),
                repetition_penalty=cfg.resample_repetition_penalty if attempt else 1.0, loop_guard=guard))
            stat = _stat(kind, k, res)
            doc.calls.append(stat)
            text = clean_section(res.text)
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
            if loop <= _LOOP_RATIO and not short and res.finish_reason != "loop":
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


def _one_line(e: BaseException) -> str:
    msg = " ".join(str(e).split()) or type(e).__name__
    return msg[:500]


async def _maybe(fn: Callable[..., Any] | None, *args: Any) -> None:
    if fn is None:
        return
    out = fn(*args)
    if asyncio.iscoroutine(out):
        await out
