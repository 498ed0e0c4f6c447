"""Say how long an engine start will take before it starts, from starts measured on this machine.

An engine start is the one long silence a user meets (seconds with a warm compile cache,
minutes when vLLM compiles the model for the first time), so the CLI names which case it is.
Each successful start of the in-process vLLM engine records its seconds in
``$LONGWRITER_HOME/engine_starts.json``, keyed by model, compile mode and vLLM version.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from core.config import EngineConfig, longwriter_home

FIRST_COMPILE_HINT = "about 2-3 min on 2 CPU cores"


def _file() -> Path:
    return longwriter_home() / "engine_starts.json"


def _vllm_version() -> str:
    from core.versions import installed

    return installed("vllm") or "?"


def _key(model_path: str, cfg: EngineConfig) -> str:
    mode = "eager" if cfg.enforce_eager else "compiled"
    return f"{model_path}|{mode}|{cfg.max_model_len}|{cfg.max_num_seqs}|vllm {_vllm_version()}"


def compile_cache_present() -> bool:
    """vLLM's compile cache folder (``$VLLM_CACHE_ROOT``, default ~/.cache/vllm) has artifacts."""
    root = Path(os.environ.get("VLLM_CACHE_ROOT", Path.home() / ".cache" / "vllm")).expanduser()
    aot = root / "torch_compile_cache" / "torch_aot_compile"
    return aot.is_dir() and any(aot.iterdir())


def _load() -> dict[str, Any]:
    try:
        data = json.loads(_file().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def last_start_s(model_path: str, cfg: EngineConfig) -> float | None:
    v = _load().get(_key(model_path, cfg))
    return float(v) if isinstance(v, (int, float)) else None


def record(model_path: str, cfg: EngineConfig, seconds: float) -> None:
    """Remember a successful start (atomic replace; a failure to write is not an error)."""
    data = _load()
    data[_key(model_path, cfg)] = round(seconds, 1)
    try:
        _file().parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".engine_starts-", dir=_file().parent)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1)
        os.replace(tmp, _file())
    except OSError:
        pass


def expectation(model_path: str, cfg: EngineConfig, name: str) -> str:
    """One line: what the coming start will do and roughly how long it takes."""
    last = last_start_s(model_path, cfg)
    if cfg.enforce_eager:
        how = f"last start took {last:.0f} s" if last else "no compilation, usually under a minute on CPU"
        return f"starting the vLLM engine for {name} (eager mode: {how})"
    if last is not None and compile_cache_present():
        return f"starting the vLLM engine for {name} (reusing the compiled model; last start took {last:.0f} s)"
    return (f"starting the vLLM engine for {name}: compiling the model, first start with these settings "
            f"on this machine ({FIRST_COMPILE_HINT}; later starts reuse the cache)")
