"""The driver side of the SFT and DPO jobs: their sub-commands, the Ray Train run, the summary.

``run_training`` puts the prepared data (an Arrow table) once in the object store; a
``TorchTrainer`` starts ``num_workers`` workers (``ray_jobs.train_worker``) whose storage is
``OUTPUT/ray_train`` (local or S3) under the run name. ``FailureConfig(max_failures)`` restarts
the worker group from the latest checkpoint when a worker dies, and rerunning with the same run
name continues the run.

Storage layout of ``--output``::

    ray_train/RUN/checkpoint_*/checkpoint/   HF Trainer checkpoints (model, optimizer, scheduler, RNG)
    _runs/RUN.json                           what the last attempt's rank 0 reported at the end
    model/                                   final model, loadable by transformers and vLLM
    summary.json                             steps, losses, tokens/s, where things are
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import posixpath
import time
from typing import Any, Callable

import pyarrow as pa
import pyarrow.fs as pafs

from core import credentials, storage
from core.config import StorageConfig
from core.train_config import TrainJobConfig
from ray_jobs import console
from ray_jobs.train_data import resolve_model_path
from ray_jobs.train_worker import debug_requested, train_loop_per_worker

# Non-secret settings for the workers' runtime_env; credentials go by value (core/credentials.py).
WORKER_ENV = ("LONGWRITER_HOME", "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_VERBOSITY", "TOKENIZERS_PARALLELISM")


# ---------------------------------------------------------------- the sub-commands


def register_job(sub: argparse._SubParsersAction, name: str, help_: str, doc: str | None, cls: type,
                 run_job: Callable[[Any, StorageConfig], dict[str, Any]]) -> None:
    """``longwriter NAME``: flags of ``cls`` and StorageConfig (or ``--config``); runs ``run_job``."""
    from ray_jobs.cli import add_config_flags

    p = sub.add_parser(name, help=help_, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="YAML with a train: section (and storage:)")
    add_config_flags(p, cls)
    add_config_flags(p, StorageConfig)
    p.set_defaults(func=functools.partial(_run_from_args, cls, run_job))


def _run_from_args(cls: type, run_job: Callable[[Any, StorageConfig], dict[str, Any]], args: Any) -> int:
    """Configs from defaults, the ``--config`` YAML (train: and storage: sections), then flags; run."""
    from ray_jobs.cli import build_config, load_yaml

    y = load_yaml(args.config)
    cfg, scfg = build_config(cls, args, y.get("train")), build_config(StorageConfig, args, y.get("storage"))
    print_summary(run_job(cfg, scfg))
    return 0


# ---------------------------------------------------------------- the Ray Train run


def storage_for_ray(out: storage.Location) -> tuple[str, pafs.FileSystem | None]:
    """(storage_path, storage_filesystem) for RunConfig: OUTPUT/ray_train."""
    path = posixpath.join(out.path, "ray_train")
    if isinstance(out.fs, pafs.LocalFileSystem):
        return path, None
    return path, out.fs


def run_training(job: str, cfg: TrainJobConfig, scfg: StorageConfig, table: pa.Table, builder: Callable[..., Any],
                 info: dict[str, Any]) -> dict[str, Any]:
    """Run ``builder`` (the job's function building its trl trainer) on Ray Train; returns the summary."""
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    import ray

    out = storage.resolve(cfg.output, scfg)
    storage.makedirs(out)
    run_name = cfg.resolved_run_name(job)
    result_loc = out.join("_runs", f"{run_name}.json")
    storage.delete(result_loc)
    model_path = resolve_model_path(cfg.model)
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), log_to_driver=True, include_dashboard=False,
                 configure_logging=False)
    loop_config = {"job": job, "cfg": cfg, "scfg": scfg, "data_ref": ray.put(table),
                   "model_path": model_path, "builder": builder, "run_name": run_name,
                   "credentials": credentials.capture()}
    trainer = _torch_trainer(cfg, out, run_name, loop_config)
    per_step = cfg.num_workers * cfg.per_device_batch_size * cfg.gradient_accumulation
    unit = f"packed rows of up to {cfg.max_length} tokens" if getattr(cfg, "packing", False) else "sequences"
    print(f"[{job}] run {run_name}: {info.get('rows', table.num_rows)} sequences on {cfg.num_workers} "
          f"worker(s) ({'GPU' if cfg.use_gpu else 'CPU'}), checkpoints -> {out.join('ray_train', run_name).uri}\n"
          f"[{job}] global batch: {cfg.num_workers} workers x {cfg.per_device_batch_size} per device x "
          f"{cfg.gradient_accumulation} accumulation = {per_step} {unit} per optimizer step",
          file=console.stream())
    t0 = time.time()
    try:
        result = trainer.fit()
    except Exception as e:  # TrainingFailedError carries the worker's traceback: keep its last line
        raise RuntimeError(f"training failed (after up to {cfg.max_failures} restart(s), --max-failures): "
                           f"{_last_line(e)}") from None
    try:
        m = json.loads(storage.read_bytes(result_loc))
    except storage.StorageError:
        raise RuntimeError(f"training finished without a final report at {result_loc.uri} "
                           "(see the worker logs above)") from None
    summary = {
        "job": job,
        "run_name": run_name,
        "model": out.join("model").uri,
        "checkpoints": out.join("ray_train", run_name).uri,
        "latest_checkpoint": _checkpoint_uri(out, result),
        "base_model": cfg.model or "embedded",
        "num_workers": cfg.num_workers,
        "seconds": round(time.time() - t0, 1),
        **info,
        **m,
        "config": dataclasses.asdict(cfg),
    }
    storage.write_bytes(out.join("summary.json"), json.dumps(summary, indent=1, default=str).encode())
    return summary


def _torch_trainer(cfg: TrainJobConfig, out: storage.Location, run_name: str, loop_config: dict[str, Any]) -> Any:
    """The TorchTrainer: workers, their env, checkpoints kept in OUTPUT/ray_train/RUN, restarts."""
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    env = {k: os.environ[k] for k in WORKER_ENV if k in os.environ}
    env["RAY_TRAIN_ENABLE_PRINT_PATCH"] = "0"
    if debug_requested():
        env["LONGWRITER_DEBUG"] = "1"
    storage_path, storage_fs = storage_for_ray(out)
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                     resources_per_worker={"CPU": cfg.cpus_per_worker}),
        run_config=RunConfig(
            name=run_name,
            storage_path=storage_path,
            storage_filesystem=storage_fs,
            checkpoint_config=CheckpointConfig(num_to_keep=max(1, cfg.keep_checkpoints)),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            worker_runtime_env={"env_vars": env},
            logging_config=LoggingConfig(log_level="INFO" if debug_requested() else "WARNING"),
        ),
    )


def _checkpoint_uri(out: storage.Location, result: Any) -> str | None:
    ck = getattr(result, "checkpoint", None)
    if ck is None:
        return None
    return ("s3://" + ck.path) if not isinstance(out.fs, pafs.LocalFileSystem) else ck.path


def _last_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for ln in reversed(lines):  # the innermost "SomeError: message" line of the remote traceback
        if ":" in ln and not ln.startswith(("File ", "^", "~")):
            return ln[:400]
    return (lines[-1] if lines else type(e).__name__)[:400]


def print_summary(s: dict[str, Any]) -> None:
    def num(v: Any, fmt: str = ".4f") -> str:
        return format(v, fmt) if isinstance(v, (int, float)) and v is not None else "-"

    rows = [
        ("run", s["run_name"]),
        ("steps", f"{s.get('global_step')} (this attempt from step {s.get('resumed_from_step', 0)})"),
        ("loss first -> last", f"{num(s.get('first_loss'))} -> {num(s.get('final_loss'))}"),
        ("tokens/s (all workers)", num(s.get("tokens_per_s"), ".0f")),
        ("wall seconds", s.get("seconds")),
        ("checkpoints", s["checkpoints"]),
        ("model", s["model"]),
    ]
    for k in ("mean_margin_first", "mean_margin_last"):
        if s.get(k) is not None:
            rows.insert(3, ("reward margin first -> last",
                            f"{num(s.get('mean_margin_first'))} -> {num(s.get('mean_margin_last'))}"))
            break
    w = max(len(k) for k, _ in rows)
    print("\n".join(f"{k:<{w}}  {v}" for k, v in rows))
