"""The engine protocol: what AgentWrite needs from any model backend.

AgentWrite only ever asks an engine for one completion at a time (chat messages or a raw
prompt) and reads back the text, why it stopped, and the token accounting that the
benchmarks and the document record report. Backends: :mod:`core.engines.vllm_engine`
(in-process vLLM, CPU or GPU) and :mod:`core.engines.openai_http` (any OpenAI-compatible
server). Keeping the protocol this small is what lets the same state machine run inside a
Ray Data actor, a Serve replica, or a plain CLI process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

Message = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": "..."}


class EngineError(RuntimeError):
    """A generation call failed for good (after any retries). Never stored as text."""


@dataclass
class SamplingSpec:
    """Backend-neutral sampling parameters for one call."""

    max_tokens: int = 512
    min_tokens: int = 0
    temperature: float = 0.7
    top_p: float = 0.95
    stop: list[str] | None = None
    seed: int | None = None
    repetition_penalty: float = 1.0  # > 1 discourages repeats (vLLM; sent to HTTP servers only when != 1)
    # Stop the answer early, with finish_reason "loop", once over this share of its word 4-grams
    # are repeats (core.text.is_looping); 0 = off.  Backends that stream (the
    # in-process vLLM engine) honour it; the HTTP engine, which does not stream, ignores it.
    loop_guard: float = 0.0
    json_schema: dict[str, Any] | None = None  # structured output, when the backend has it


@dataclass
class GenResult:
    """One finished call. ``finish_reason``: "stop", "length" (cut off at max_tokens) or "loop"
    (stopped by ``SamplingSpec.loop_guard``)."""

    text: str
    finish_reason: str
    prompt_tokens: int = 0
    cached_tokens: int = 0  # of prompt_tokens, served from the prefix cache
    generated_tokens: int = 0
    latency_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Engine(Protocol):
    """Async text generation. Implementations must be safe to call concurrently."""

    model_name: str
    max_model_len: int  # context window in tokens (prompt + output)

    async def generate(self, messages: list[Message] | None = None, *, prompt: str | None = None,
                       sampling: SamplingSpec | None = None) -> GenResult:
        """Generate for chat ``messages`` or a raw ``prompt`` (exactly one of them)."""
        ...

    def count_tokens(self, messages: list[Message]) -> int:
        """Prompt tokens the chat ``messages`` would take (exact, or a close estimate)."""
        ...

    async def close(self) -> None: ...


def check_one_input(messages: list[Message] | None, prompt: str | None) -> None:
    if (messages is None) == (prompt is None):
        raise ValueError("pass exactly one of messages= or prompt=")
