"""Engine backends behind one protocol (base.Engine); ``build_engine`` picks one from config."""

from __future__ import annotations

from core.config import EngineConfig
from core.engines.base import Engine, EngineError, GenResult, SamplingSpec

__all__ = ["Engine", "EngineError", "GenResult", "SamplingSpec", "build_engine"]


def build_engine(cfg: EngineConfig) -> Engine:
    """An OpenAI-compatible client when ``cfg.endpoint`` is set, else an in-process vLLM engine.

    The vLLM engine itself starts lazily on the first call; model resolution (and the one-time
    conversion of the embedded model) happens here, so a bad ``--model`` fails fast.
    """
    if cfg.endpoint:
        from core.engines.openai_http import OpenAIHTTPEngine

        return OpenAIHTTPEngine(cfg.endpoint, model=cfg.model, api_key=cfg.api_key,
                                max_model_len=cfg.max_model_len)
    from core.engines.vllm_engine import VLLMEngine
    from core.models import EMBEDDED_NAME, resolve_model

    path = resolve_model(cfg.model)
    name = EMBEDDED_NAME if cfg.model in (None, "", "embedded", EMBEDDED_NAME) else cfg.model
    return VLLMEngine(path, cfg, model_name=name)
