"""What batch width buys on this machine: raw vLLM decode rate at 8 sequences vs wider batches.

    python benchmarks/engine_width.py                       # widths 8,16,32,64: ~3 min on 2 cores
    python benchmarks/engine_width.py --widths 8,64,256 --context 2000

The LongWriter-style baseline of ``generate_throughput.py`` keeps 8 sequences in the batch;
the pipeline keeps ``--in-flight`` documents.  Its speed-up over the baseline is bounded by
how much faster the engine decodes at the wider batch (plus the re-prefills the baseline
pays).  This prints that bound, as the ratio of each width's output tokens/s to width 8's,
on distinct prompts (no prefix-cache sharing) of about ``--context`` tokens, every request
forced to ``--tokens`` output tokens.  On a GPU the ratio grows almost with the width until
the KV cache or compute is full; on a few CPU cores it flattens early.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.config import EngineConfig  # noqa: E402
from core.engines.base import SamplingSpec  # noqa: E402
from core.engines.vllm_engine import VLLMEngine  # noqa: E402
from core.models import resolve_model  # noqa: E402


def prompts(n: int, context: int) -> list[str]:
    """n distinct prompts of about `context` tokens, cut from the bundled example texts."""
    path = Path(__file__).resolve().parents[1] / "core" / "examples" / "prompts.jsonl"
    words = " ".join(json.loads(line)["prompt"] for line in open(path, encoding="utf-8")).split()
    want = max(1, int(context * 0.7))
    return [f"[{i}] Continue this text:\n" + " ".join((words * (1 + want // max(1, len(words))))[i * 3: i * 3 + want])
            for i in range(n)]


async def rate(engine: VLLMEngine, texts: list[str], tokens: int) -> float:
    spec = SamplingSpec(max_tokens=tokens, min_tokens=tokens, temperature=0.7)
    t0 = time.perf_counter()
    res = await asyncio.gather(*(engine.generate([{"role": "user", "content": t}], sampling=spec) for t in texts))
    return sum(r.generated_tokens for r in res) / (time.perf_counter() - t0)


async def main_async(a: argparse.Namespace) -> None:
    widths = sorted({int(w) for w in a.widths.split(",")} | {8})
    eng = VLLMEngine(resolve_model(a.model), EngineConfig(max_num_seqs=max(widths), kv_cache_gib=a.kv_cache_gib)).start()
    await rate(eng, prompts(4, 32), 16)  # warm-up
    base = None
    print(f"| width | output tok/s | vs width 8 |   (prompts ~{a.context} tokens, {a.tokens} output tokens each)")
    print("|---|---|---|")
    for w in widths:
        r = await rate(eng, prompts(w, a.context), a.tokens)
        base = base or r
        print(f"| {w} | {r:.0f} | {r / base:.2f}x |", flush=True)
    await eng.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--widths", default="8,16,32,64", help="comma-separated batch widths (8 is always measured)")
    p.add_argument("--context", type=int, default=150, help="prompt tokens per request, about")
    p.add_argument("--tokens", type=int, default=160, help="output tokens per request")
    p.add_argument("--kv-cache-gib", type=float, default=6.0)
    p.add_argument("--model", default=None)
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
