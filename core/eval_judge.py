"""The quality judge's engine and many judgments at once (``eval`` and ``make-pairs``).

:func:`judge_engine_config` is the one place a judge's :class:`~core.config.EngineConfig` is
derived from the generation engine's; :func:`judge_all` rates many documents concurrently with
:func:`core.scores.judge_document`. No Ray here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any, Callable

from core.config import EngineConfig
from core.models import EMBEDDED_NAME
from core.redact import safe_url
from core.scores import judge_document


def judge_engine_config(ecfg: EngineConfig, model: str | None, endpoint: str | None, *,
                        generation_model_default: bool) -> EngineConfig | None:
    """The judge's engine: ``ecfg``'s build settings (dtype, KV cache, threads, batch ...) with
    the judge's ``model`` and ``endpoint``; ``ecfg.api_key`` goes along only to ``ecfg.endpoint``.

    ``generation_model_default`` (``eval``): no ``model`` means the generation model, at
    ``endpoint`` or else the generation endpoint, with the generation context window; another
    model gets the default context window. Without it (``make-pairs``): no ``model`` and no
    ``endpoint`` means no judge (None); the context window is always ``ecfg``'s.
    """
    window = ecfg.max_model_len
    if generation_model_default and model is None:
        model, endpoint = ecfg.model, endpoint or ecfg.endpoint
    elif generation_model_default:
        endpoint, window = endpoint or None, EngineConfig().max_model_len
    elif not model and not endpoint:
        return None
    return dataclasses.replace(ecfg, model=model, endpoint=endpoint, max_model_len=window,
                               api_key=ecfg.api_key if endpoint == ecfg.endpoint else None)


def judge_label(jcfg: EngineConfig, engine: Any = None) -> str:
    """What the report calls the judge: the engine's model name, else its model or endpoint."""
    if engine is not None and getattr(engine, "model_name", None):
        return str(engine.model_name)
    return jcfg.model or (safe_url(jcfg.endpoint) or EMBEDDED_NAME)


async def judge_all(engine: Any, items: list[tuple[str, str]], in_flight: int = 32, retries: int = 2,
                    log: Callable[[str], None] | None = None) -> list[dict[str, int] | None]:
    """Judge (instruction, text) pairs concurrently; None where the judgment was dropped.
    ``log`` gets a progress line every 25 judgments and at the end."""
    sem = asyncio.Semaphore(max(1, in_flight))
    done = 0
    t0 = time.perf_counter()

    async def one(instr: str, text: str) -> dict[str, int] | None:
        nonlocal done
        async with sem:
            res = await judge_document(engine, instr, text, retries=retries)
        done += 1
        if log is not None and (done == len(items) or done % 25 == 0):
            log(f"[eval] judged {done}/{len(items)} ({time.perf_counter() - t0:.0f} s)")
        return res

    return list(await asyncio.gather(*(one(i, t) for i, t in items)))
