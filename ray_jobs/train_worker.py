"""The worker side of the SFT and DPO jobs: what each Ray Train worker runs.

``train_loop_per_worker`` builds the model and the job's trl trainer (``make_trainer``), wraps it
with ``prepare_trainer`` and ``RayTrainReportCallback`` (each ``save_steps`` the HF checkpoint is
uploaded; every rank uploads its own files into the same checkpoint directory), resumes from
``ray.train.get_checkpoint()`` if there is one, trains, exports the model
(``ray_jobs.train_export``) and, on rank 0, writes what this attempt did to ``OUTPUT/_runs/RUN.json``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa

from core import credentials, storage
from core.train_config import TrainJobConfig
from ray_jobs.train_data import load_tokenizer
from ray_jobs.train_export import export_model

# TrainingArguments fields set from the TrainJobConfig field of the same name ...
_SAME_NAME = ("max_steps", "learning_rate", "weight_decay", "gradient_checkpointing", "logging_steps",
              "save_steps", "seed", "max_length")
# ... from a config field of another name (TrainingArguments name -> config name) ...
_RENAMED = {"num_train_epochs": "epochs", "warmup_steps": "warmup_ratio", "data_seed": "seed",
            "per_device_train_batch_size": "per_device_batch_size", "gradient_accumulation_steps": "gradient_accumulation"}
# ... and fixed by the jobs (save_total_limit: local copies only; Ray keeps --keep-checkpoints in storage).
_FIXED = {"lr_scheduler_type": "linear", "save_strategy": "steps", "save_total_limit": 1, "disable_tqdm": True,
          "include_num_input_tokens_seen": "non_padding", "ddp_find_unused_parameters": False,
          "dataloader_num_workers": 0}


def debug_requested() -> bool:
    return bool(os.environ.get("LONGWRITER_DEBUG"))


# ---------------------------------------------------------------- the trainer (no Ray)


def use_bf16(cfg: TrainJobConfig) -> bool:
    import torch

    return bool(cfg.use_gpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def training_kwargs(cfg: TrainJobConfig, output_dir: str) -> dict[str, Any]:
    """TrainingArguments fields common to SFTConfig and DPOConfig."""
    kw: dict[str, Any] = {name: getattr(cfg, name) for name in _SAME_NAME}
    kw.update({name: getattr(cfg, field) for name, field in _RENAMED.items()})
    kw.update(_FIXED, output_dir=output_dir, report_to=[], use_cpu=not cfg.use_gpu, bf16=use_bf16(cfg))
    if cfg.fsdp_enabled:
        legacy = cfg.fsdp and cfg.fsdp.strip().lower() not in ("true", "1", "yes", "on", "false", "0", "no", "off")
        kw["fsdp"] = cfg.fsdp if legacy else True
        if cfg.fsdp_config:
            kw["fsdp_config"] = cfg.fsdp_config
    if cfg.deepspeed:
        kw["deepspeed"] = cfg.deepspeed
    return kw


def lora_config(cfg: TrainJobConfig) -> Any:
    if not cfg.lora:
        return None
    from peft import LoraConfig

    targets: Any = cfg.lora_target_modules
    if targets != "all-linear":
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, task_type="CAUSAL_LM")


def make_trainer(cfg: TrainJobConfig, model_path: str, builder: Callable[..., Any], table: Any,
                 output_dir: str) -> tuple[Any, Any]:
    """The job's HF trainer on this process's device, from the pre-tokenized table: (trainer, tokenizer).

    ``builder`` is the job's ``build_trainer`` (``ray_jobs.sft`` / ``ray_jobs.dpo``). Has no Ray in
    it, so the GPU check (benchmarks/train_gpu.py) builds exactly what a worker builds on a machine
    without Ray.
    """
    import datasets
    import torch
    from transformers import AutoModelForCausalLM

    train_ds = datasets.Dataset(table) if isinstance(table, pa.Table) else table
    tok = load_tokenizer(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.bfloat16 if use_bf16(cfg) else torch.float32)
    model.config.pad_token_id = tok.pad_token_id
    trainer = builder(model=model, tokenizer=tok, train_dataset=train_ds, cfg=cfg,
                      kwargs=training_kwargs(cfg, output_dir), peft_config=lora_config(cfg))
    return trainer, tok


# ---------------------------------------------------------------- one attempt on a Ray Train worker


def train_loop_per_worker(config: dict[str, Any]) -> None:
    import ray.train

    credentials.install(config.get("credentials"))
    ctx = ray.train.get_context()
    if not debug_requested():
        quiet_worker_logs()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    workdir = tempfile.mkdtemp(prefix=f"lw-{config['run_name']}-r{rank}-")
    try:
        metrics = _train_attempt(config, rank, world, workdir)
        if rank == 0:
            out_loc = storage.resolve(config["cfg"].output, config["scfg"])
            storage.write_bytes(out_loc.join("_runs", f"{config['run_name']}.json"),
                                json.dumps(metrics, indent=1).encode())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def quiet_worker_logs() -> None:
    """Warnings and errors only from datasets, transformers, accelerate and Ray Train on a worker."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("accelerate").setLevel(logging.ERROR)
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    # Some Ray Train modules name their logger by their file path, outside "ray.train".
    marker = os.sep + os.path.join("ray", "train", "")
    for name in list(logging.root.manager.loggerDict):
        if name.endswith(".py") and marker in name:
            logging.getLogger(name).setLevel(logging.WARNING)


def _train_attempt(config: dict[str, Any], rank: int, world: int, workdir: str) -> dict[str, Any]:
    """Restore the latest checkpoint (if any), train to the end, export; what this attempt did."""
    import ray

    cfg: TrainJobConfig = config["cfg"]
    job = config["job"]
    resume_dir, start_state = restore_checkpoint(workdir)
    resumed_from = int(start_state.get("global_step", 0))
    if rank == 0:
        print(f"[{job}] worker group of {world}: "
              + (f"resuming from checkpoint at step {resumed_from}" if resume_dir else "starting from step 0"),
              flush=True)
    trainer, tok = make_trainer(cfg, config["model_path"], config["builder"], ray.get(config["data_ref"]),
                                os.path.join(workdir, "hf"))
    trainer = _prepare_for_ray(trainer, job, rank, world, cfg, resume_dir is not None, workdir)
    runtime = _train_or_reload(trainer, cfg, resume_dir, start_state)
    model_uri = export_model(trainer, tok, config, rank, workdir)
    return attempt_metrics(trainer.state, start_state, runtime, model_uri)


def restore_checkpoint(workdir: str) -> tuple[str | None, dict[str, Any]]:
    """(HF checkpoint directory, its trainer_state.json) of Ray Train's latest checkpoint; (None, {}) if none."""
    import ray.train
    from ray.train.huggingface.transformers import RayTrainReportCallback

    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return None, {}
    local = ckpt.to_directory(os.path.join(workdir, "resume"))
    resume_dir = os.path.join(local, RayTrainReportCallback.CHECKPOINT_NAME)
    return resume_dir, json.loads(Path(resume_dir, "trainer_state.json").read_text())


def _prepare_for_ray(trainer: Any, job: str, rank: int, world: int, cfg: TrainJobConfig, resumed: bool,
                     workdir: str) -> Any:
    """Our callbacks around RayTrainReportCallback (checkpoints to the run's storage), then prepare_trainer."""
    from ray.train.huggingface.transformers import RayTrainReportCallback, prepare_trainer
    from transformers.trainer_callback import PrinterCallback

    from ray_jobs.train_callbacks import FailOnce, Progress, Saved

    trainer.remove_callback(PrinterCallback)  # replaced by Progress's compact line
    trainer.add_callback(Progress(job, rank))
    trainer.add_callback(RayTrainReportCallback())
    trainer.add_callback(Saved(job, rank))
    if cfg.fail_at_step is not None:
        trainer.add_callback(FailOnce(job, rank, world, cfg.fail_at_step, resumed, workdir))
    return prepare_trainer(trainer)


def _train_or_reload(trainer: Any, cfg: TrainJobConfig, resume_dir: str | None, start_state: dict[str, Any]) -> float:
    """Train (resuming from ``resume_dir``); seconds in the training loop."""
    resumed_from = int(start_state.get("global_step", 0))
    target = cfg.max_steps if cfg.max_steps > 0 else int(start_state.get("max_steps", 0) or 0)
    if resume_dir and target and resumed_from >= target:
        _reload_finished_run(trainer, resume_dir)  # a rerun of a completed command: load, don't step again
        return 0.0
    out = trainer.train(resume_from_checkpoint=resume_dir)
    return float(out.metrics.get("train_runtime", 0.0))


def _reload_finished_run(trainer: Any, resume_dir: str) -> None:
    """Weights and trainer state of a checkpoint at the run's last step, without training.

    Private transformers API (checked on transformers 5.19.0): ``trainer.train(resume_from_checkpoint=...)``
    at global_step == max_steps still takes one more optimizer step and stores a new checkpoint, so
    the public route would change a finished run. ``_load_from_checkpoint`` also handles FSDP,
    DeepSpeed and PEFT adapters; re-check it on a transformers upgrade.
    """
    from transformers import TrainerState

    trainer._load_from_checkpoint(resume_dir)
    trainer.state = TrainerState.load_from_json(os.path.join(resume_dir, "trainer_state.json"))


def attempt_metrics(state: Any, start_state: dict[str, Any], runtime: float, model_uri: str) -> dict[str, Any]:
    """Steps, losses, tokens/s (and DPO reward margins) of this attempt, from the trainer state."""
    resumed_from = int(start_state.get("global_step", 0))
    steps_done = state.global_step - resumed_from
    tokens = int(state.num_input_tokens_seen) - int(start_state.get("num_input_tokens_seen", 0))
    losses = [(h["step"], h["loss"]) for h in state.log_history if "loss" in h]
    metrics: dict[str, Any] = {
        "global_step": int(state.global_step),
        "max_steps": int(state.max_steps),
        "resumed_from_step": resumed_from,
        "steps_this_attempt": int(steps_done),
        "first_loss": losses[0][1] if losses else None,
        "final_loss": losses[-1][1] if losses else None,
        "losses": [[int(s), float(v)] for s, v in losses],
        "train_runtime_s": round(runtime, 2),
        "tokens_this_attempt": tokens,
        "tokens_per_s": round(tokens / runtime, 1) if runtime > 0 and steps_done > 0 else None,
        "model_uri": model_uri,
    }
    margins = [(h["step"], h["rewards/margins"]) for h in state.log_history if "rewards/margins" in h]
    if margins:
        k = max(1, min(3, len(margins) // 3))
        metrics["margins"] = [[int(s), float(v)] for s, v in margins]
        metrics["mean_margin_first"] = sum(v for _, v in margins[:k]) / k
        metrics["mean_margin_last"] = sum(v for _, v in margins[-k:]) / k
    return metrics
