"""Engine backends behind one protocol (base.Engine); ``build_engine`` picks one from config."""

from __future__ import annotations

from core.config import EngineConfig
from core.engines.base import Engine, EngineError, GenResult, SamplingSpec

__all__ = ["Engine", "EngineError", "GenResult", "SamplingSpec", "build_engine", "check_source"]


def check_source(cfg: EngineConfig) -> None:
    """Fail in seconds, before Ray starts, on a model or endpoint no engine could use: a
    ValueError naming what was looked for (an unknown ``--model`` used to surface inside the
    engine actor, minutes later, as a remote traceback)."""
    if cfg.endpoint:
        from urllib.parse import urlsplit

        from core.redact import safe_url

        try:
            parts = urlsplit(cfg.endpoint)
            ok = parts.scheme in ("http", "https") and bool(parts.hostname) and (parts.port or 1) > 0
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"--endpoint {safe_url(cfg.endpoint)!r} is not an http(s)://host[:port]/v1 URL")
        return
    from core.models import resolve_model

    resolve_model(cfg.model)


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
