"""What the SFT and DPO jobs share: reading Parquet in the driver, the Ray Train run, and the
per-worker loop around a trl trainer (checkpoints to the run's storage, resume, export).

Driver side (``run_training``): the prepared data (an Arrow table) is put once in the object
store; a ``TorchTrainer`` starts ``num_workers`` workers whose storage is ``OUTPUT/ray_train``
(local or S3) under the run name. ``FailureConfig(max_failures)`` restarts the worker group from
the latest checkpoint when a worker dies, and rerunning with the same run name continues the run.

Worker side (``train_loop_per_worker``): build the model, wrap the job's trl trainer with
``prepare_trainer`` and ``RayTrainReportCallback`` (each ``save_steps`` the HF checkpoint is
uploaded; every rank uploads its own files into the same checkpoint directory), resume from
``ray.train.get_checkpoint()`` if there is one, train, then export a plain HF directory
(safetensors, tokenizer, chat template; LoRA merged) to ``OUTPUT/model``.

Storage layout of ``--output``::

    ray_train/RUN/checkpoint_*/checkpoint/   HF Trainer checkpoints (model, optimizer, scheduler, RNG)
    _runs/RUN.json                           what the last attempt's rank 0 reported at the end
    model/                                   final model, loadable by transformers and vLLM
    summary.json                             steps, losses, tokens/s, where things are
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import os
import posixpath
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from core import credentials, storage
from core.config import StorageConfig
from core.train_config import TrainJobConfig
from ray_jobs import console

# Non-secret settings for the workers' runtime_env; credentials go by value (core/credentials.py).
WORKER_ENV = ("LONGWRITER_HOME", "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_VERBOSITY", "TOKENIZERS_PARALLELISM")


class DataError(ValueError):
    """The training data cannot be used (missing column, no rows, ...); one line."""


# ---------------------------------------------------------------- CLI helpers


def add_train_flags(p: Any, cls: type) -> None:
    from ray_jobs.cli import add_config_flags

    p.add_argument("--config", default=None, help="YAML with a train: section (and storage:)")
    add_config_flags(p, cls)
    add_config_flags(p, StorageConfig)


def configs_from_args(cls: type, args: Any) -> tuple[Any, StorageConfig]:
    from ray_jobs.cli import build_config, load_yaml

    y = load_yaml(args.config)
    return build_config(cls, args, y.get("train")), build_config(StorageConfig, args, y.get("storage"))


# ---------------------------------------------------------------- reading data in the driver


def read_parquet(uri: str, scfg: StorageConfig | None, what: str) -> tuple[pads.Dataset, storage.Location]:
    """A Parquet file or (hive-partitioned) folder as a pyarrow dataset; one-line errors."""
    loc = storage.resolve(uri, scfg)
    fi = storage.info(loc)  # StorageError "cannot reach ..." when the store is unreachable
    if fi.type == pafs.FileType.NotFound:
        raise storage.StorageError(f"{what} not found: {uri}")
    if fi.type == pafs.FileType.Directory:
        files = storage.list_files(loc, ".parquet")
        if not files:
            raise DataError(f"{what} at {uri} has no .parquet files")
        try:
            return pads.dataset(files, filesystem=loc.fs, format="parquet", partitioning="hive",
                                partition_base_dir=loc.path), loc
        except (OSError, pa.ArrowInvalid) as e:
            raise DataError(f"cannot read {what} at {uri}: {storage._short(e)}") from None
    try:
        return pads.dataset(loc.path, filesystem=loc.fs, format="parquet"), loc
    except (OSError, pa.ArrowInvalid) as e:
        raise DataError(f"cannot read {what} at {uri}: {storage._short(e)}") from None


def resolve_model_path(model: str | None) -> str:
    from core.models import resolve_model

    return resolve_model(model)


def load_tokenizer(model_path: str) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if not getattr(tok, "chat_template", None):
        raise DataError(f"tokenizer of {model_path} has no chat template (needed to render messages)")
    return tok


def chat_ids(tok: Any, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> list[int]:
    """Token ids of ``messages`` rendered with the model's chat template."""
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    return tok(text, add_special_tokens=False)["input_ids"]


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


# ---------------------------------------------------------------- the Ray Train run (driver)


def storage_for_ray(out: storage.Location) -> tuple[str, pafs.FileSystem | None]:
    """(storage_path, storage_filesystem) for RunConfig: OUTPUT/ray_train."""
    path = posixpath.join(out.path, "ray_train")
    if isinstance(out.fs, pafs.LocalFileSystem):
        return path, None
    return path, out.fs


def run_training(job: str, cfg: TrainJobConfig, scfg: StorageConfig, table: pa.Table, builder: str,
                 info: dict[str, Any]) -> dict[str, Any]:
    """Run ``builder`` ("module:function" building the trl trainer) on Ray Train; returns the summary."""
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    import ray
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    out = storage.resolve(cfg.output, scfg)
    storage.makedirs(out)
    run_name = cfg.resolved_run_name(job)
    result_loc = out.join("_runs", f"{run_name}.json")
    storage.delete(result_loc)
    storage_path, storage_fs = storage_for_ray(out)
    model_path = resolve_model_path(cfg.model)
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), log_to_driver=True, include_dashboard=False,
                 configure_logging=False)
    env = {k: os.environ[k] for k in WORKER_ENV if k in os.environ}
    env["RAY_TRAIN_ENABLE_PRINT_PATCH"] = "0"
    if _debug():
        env["LONGWRITER_DEBUG"] = "1"
    data_ref = ray.put(table)
    loop_config = {"job": job, "cfg": cfg, "scfg": scfg, "data_ref": data_ref, "model_path": model_path,
                   "builder": builder, "run_name": run_name, "credentials": credentials.capture()}
    trainer = TorchTrainer(
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
            logging_config=LoggingConfig(log_level="INFO" if _debug() else "WARNING"),
        ),
    )
    print(f"[{job}] run {run_name}: {info.get('rows', table.num_rows)} sequences on {cfg.num_workers} "
          f"worker(s) ({'GPU' if cfg.use_gpu else 'CPU'}), checkpoints -> {out.join('ray_train', run_name).uri}",
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


def _debug() -> bool:
    return bool(os.environ.get("LONGWRITER_DEBUG"))


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


# ---------------------------------------------------------------- worker side


def training_kwargs(cfg: TrainJobConfig, output_dir: str) -> dict[str, Any]:
    """TrainingArguments fields common to SFTConfig and DPOConfig."""
    import torch

    bf16 = bool(cfg.use_gpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    kw: dict[str, Any] = dict(
        output_dir=output_dir,
        max_steps=cfg.max_steps,
        num_train_epochs=cfg.epochs,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay,
        per_device_train_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation,
        gradient_checkpointing=cfg.gradient_checkpointing,
        logging_steps=cfg.logging_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=1,  # local copies only; Ray keeps --keep-checkpoints in storage
        report_to=[],
        seed=cfg.seed,
        data_seed=cfg.seed,
        use_cpu=not cfg.use_gpu,
        bf16=bf16,
        disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",
        ddp_find_unused_parameters=False,
        dataloader_num_workers=0,
        max_length=cfg.max_length,
    )
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


def make_trainer(cfg: TrainJobConfig, model_path: str, builder: str, table: Any, output_dir: str) -> tuple[Any, Any]:
    """The job's HF trainer on this process's device, from the pre-tokenized table: (trainer, tokenizer).

    Has no Ray in it, so the GPU check (benchmarks/train_gpu.py) builds exactly what a worker
    builds on a machine without Ray.
    """
    import datasets
    import torch
    from transformers import AutoModelForCausalLM

    train_ds = datasets.Dataset(table) if isinstance(table, pa.Table) else table
    tok = load_tokenizer(model_path)
    dtype = torch.bfloat16 if (cfg.use_gpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported()) \
        else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
    model.config.pad_token_id = tok.pad_token_id
    module, fn = builder.split(":")
    build: Callable[..., Any] = getattr(importlib.import_module(module), fn)
    trainer = build(model=model, tokenizer=tok, train_dataset=train_ds, cfg=cfg,
                    kwargs=training_kwargs(cfg, output_dir), peft_config=lora_config(cfg))
    return trainer, tok


def train_loop_per_worker(config: dict[str, Any]) -> None:
    import datasets
    import ray
    import ray.train
    from ray.train.huggingface.transformers import RayTrainReportCallback, prepare_trainer
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback

    credentials.install(config.get("credentials"))
    cfg: TrainJobConfig = config["cfg"]
    if not _debug():
        datasets.disable_progress_bars()
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        logging.getLogger("accelerate").setLevel(logging.ERROR)
        logging.getLogger("ray.train").setLevel(logging.WARNING)
        try:  # Ray Train names this module's logger by its file path, outside "ray.train"
            from ray.train.v2._internal.execution import context as _train_ctx

            logging.getLogger(_train_ctx.__file__).setLevel(logging.WARNING)
        except ImportError:  # pragma: no cover - other Ray versions
            pass
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    job = config["job"]
    workdir = tempfile.mkdtemp(prefix=f"lw-{config['run_name']}-r{rank}-")
    try:
        resume_dir, start_state = None, {}
        ckpt = ray.train.get_checkpoint()
        if ckpt is not None:
            local = ckpt.to_directory(os.path.join(workdir, "resume"))
            resume_dir = os.path.join(local, RayTrainReportCallback.CHECKPOINT_NAME)
            start_state = json.loads(Path(resume_dir, "trainer_state.json").read_text())
        resumed_from = int(start_state.get("global_step", 0))
        if rank == 0:
            print(f"[{job}] worker group of {world}: "
                  + (f"resuming from checkpoint at step {resumed_from}" if resume_dir else "starting from step 0"),
                  flush=True)

        trainer, tok = make_trainer(cfg, config["model_path"], config["builder"], ray.get(config["data_ref"]),
                                    os.path.join(workdir, "hf"))

        class Progress(TrainerCallback):
            """One compact line per log on rank 0 (visible in the driver)."""

            def on_log(self, args, state, control, logs=None, **kw):  # noqa: ANN001
                if rank != 0 or not logs or "loss" not in logs:
                    return
                extra = "".join(f" {k.split('/')[-1]} {logs[k]:.4f}" for k in ("rewards/margins", "rewards/accuracies")
                                if k in logs)
                print(f"[{job}] step {state.global_step}/{state.max_steps} loss {logs['loss']:.4f} "
                      f"lr {logs.get('learning_rate', 0):.2e}{extra}", flush=True)

        class Saved(TrainerCallback):
            """Runs after RayTrainReportCallback: the checkpoint is in the run's storage now."""

            def on_save(self, args, state, control, **kw):  # noqa: ANN001
                if rank == 0:
                    print(f"[{job}] step {state.global_step}: checkpoint stored", flush=True)

        class FailOnce(TrainerCallback):
            """Testing hook: the last worker exits hard once, before any checkpoint was restored."""

            def on_step_end(self, args, state, control, **kw):  # noqa: ANN001
                if state.global_step == cfg.fail_at_step and resume_dir is None and rank == world - 1:
                    print(f"[{job}] fail_at_step: rank {rank} exits at step {state.global_step}", flush=True)
                    time.sleep(2.0)  # let the controller collect the checkpoint reported before this step
                    shutil.rmtree(workdir, ignore_errors=True)
                    os._exit(1)

        trainer.remove_callback(PrinterCallback)  # replaced by the compact line above
        trainer.add_callback(Progress())
        trainer.add_callback(RayTrainReportCallback())
        trainer.add_callback(Saved())
        if cfg.fail_at_step is not None:
            trainer.add_callback(FailOnce())
        trainer = prepare_trainer(trainer)

        tokens_before = int(start_state.get("num_input_tokens_seen", 0))
        target = cfg.max_steps if cfg.max_steps > 0 else int(start_state.get("max_steps", 0) or 0)
        if resume_dir and target and resumed_from >= target:
            # The run already finished (a rerun of a completed command): load, don't step again.
            from transformers import TrainerState

            trainer._load_from_checkpoint(resume_dir)
            trainer.state = TrainerState.load_from_json(os.path.join(resume_dir, "trainer_state.json"))
            runtime = 0.0
        else:
            out = trainer.train(resume_from_checkpoint=resume_dir)
            runtime = float(out.metrics.get("train_runtime", 0.0))
        state = trainer.state
        steps_done = state.global_step - resumed_from
        tokens = int(state.num_input_tokens_seen) - tokens_before
        model_uri = export_model(trainer, tok, config, rank, workdir)
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
        if rank == 0:
            out_loc = storage.resolve(cfg.output, config["scfg"])
            storage.write_bytes(out_loc.join("_runs", f"{config['run_name']}.json"),
                                json.dumps(metrics, indent=1).encode())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def export_model(trainer: Any, tok: Any, config: dict[str, Any], rank: int, workdir: str) -> str:
    """Save the final model as a plain HF directory and copy it to OUTPUT/model (rank 0 writes)."""
    cfg: TrainJobConfig = config["cfg"]
    raw = os.path.join(workdir, "final")
    trainer.save_model(raw)  # every rank calls it (FSDP/DeepSpeed gather); rank 0 writes
    out = storage.resolve(cfg.output, config["scfg"]).join("model")
    if rank != 0:
        return out.uri
    final = raw
    if cfg.lora:  # the trainer saved an adapter: merge it into the base weights for vLLM
        import torch
        from peft import AutoPeftModelForCausalLM

        merged = AutoPeftModelForCausalLM.from_pretrained(raw, dtype=torch.float32).merge_and_unload()
        final = os.path.join(workdir, "merged")
        merged.save_pretrained(final, safe_serialization=True)
    tok.save_pretrained(final)  # tokenizer files and the chat template
    for junk in ("training_args.bin",):
        Path(final, junk).unlink(missing_ok=True)
    upload_dir(final, out)
    return out.uri


def upload_dir(local_dir: str, dest: storage.Location) -> None:
    """Replace ``dest`` with the contents of ``local_dir`` (local path or S3 prefix)."""
    try:
        if storage.exists(dest):
            dest.fs.delete_dir_contents(dest.path, missing_dir_ok=True)
        dest.fs.create_dir(dest.path, recursive=True)
        pafs.copy_files(local_dir, dest.path, source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=dest.fs)
    except OSError as e:
        raise storage.StorageError(f"cannot write the model to {dest.uri}: {storage._short(e)}") from None


# ---------------------------------------------------------------- tiny models (tests, benchmarks)


def build_tiny_model(out_dir: str, tokenizer_dir: str | None = None, hidden: int = 64, layers: int = 2,
                     seed: int = 0, max_positions: int = 4096) -> str:
    """A randomly initialised Llama with the embedded model's tokenizer and chat template.

    Small enough to train in seconds on CPU; used by the tests and benchmarks/train_throughput.py.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from core.models import embedded_model_dir

    tdir = tokenizer_dir or str(embedded_model_dir())
    tok = AutoTokenizer.from_pretrained(tdir)
    torch.manual_seed(seed)
    heads = max(1, hidden // 64)  # head_dim 64: a size every attention backend (vLLM CPU too) supports
    conf = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2,
                       num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                       max_position_embeddings=max(4096, max_positions), tie_word_embeddings=True,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                       pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(conf)
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    return out_dir

