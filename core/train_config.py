"""Configuration of the training jobs (ray_jobs.sft, ray_jobs.dpo, ray_jobs.pairs).

Same style as core.config: one dataclass per job, every field documented in its ``help``
metadata, which ``longwriter sft --help`` shows with the default. No Ray imports here.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import dataclass

from core.config import _f

MAX_TRAIN_LENGTH = 32768  # tokens; longer sequences need sequence parallelism, which is not wired in


@dataclass
class TrainJobConfig:
    """Fields shared by the SFT and DPO jobs (Ray Train workers, checkpoints, export)."""

    model: str | None = _f(None, "base model: HF directory or hub id; default: the embedded SmolLM2-135M-Instruct")
    output: str = _f("", "output root, local or s3://: ray_train/RUN/checkpoint_* (resume state), model/ (final HF model), summary.json")
    run_name: str | None = _f(None, "Ray Train run name; default: derived from the job and --output, so rerunning the same command resumes")
    num_workers: int = _f(2, "Ray Train workers (data parallel; one per GPU with --use-gpu)", ge=1)
    use_gpu: bool = _f(False, "one GPU per worker (bf16 when supported); off: CPU workers")
    cpus_per_worker: float = _f(1.0, "Ray CPUs reserved per worker")
    max_steps: int = _f(-1, "optimizer steps; -1: run --epochs over the data", ge=-1)
    epochs: float = _f(1.0, "passes over the data (when --max-steps is -1)", gt=0)
    learning_rate: float = _f(2e-5, "peak learning rate (linear decay, --warmup-ratio warm-up)")
    warmup_ratio: float = _f(0.0, "share of the steps spent warming up the learning rate", le=1)
    weight_decay: float = _f(0.0, "AdamW weight decay")
    per_device_batch_size: int = _f(1, "sequences per worker per micro-batch", ge=1)
    gradient_accumulation: int = _f(1, "micro-batches per optimizer step (global batch = workers x batch x this)", ge=1)
    max_length: int = _f(2048, f"most tokens per sequence (up to {MAX_TRAIN_LENGTH}); see --on-too-long", ge=16, le=MAX_TRAIN_LENGTH)
    on_too_long: str = _f("drop", "sequences over --max-length: drop them, or truncate them (keeping the start)", choices=("drop", "truncate"))
    max_drop_share: float = _f(0.5, "stop before training when more than this share of the corpus is over --max-length "
                                    "(dropping that much is a --max-length too small for the corpus, not a filter)", le=1)
    gradient_checkpointing: bool = _f(False, "recompute activations in the backward pass (long sequences, less memory)")
    lora: bool = _f(False, "train LoRA adapters instead of all weights (the exported model has them merged)")
    lora_r: int = _f(16, "LoRA rank", ge=1)
    lora_alpha: int = _f(32, "LoRA alpha")
    lora_dropout: float = _f(0.05, "LoRA dropout", le=1)
    lora_target_modules: str = _f("all-linear", "LoRA target modules: comma-separated names or all-linear")
    save_steps: int = _f(50, "checkpoint every N optimizer steps (and at the end) to the run's storage", ge=1)
    keep_checkpoints: int = _f(2, "checkpoints kept in storage (oldest deleted first)")
    max_failures: int = _f(2, "worker-group restarts (from the latest checkpoint) before the job fails")
    logging_steps: int = _f(1, "log loss and learning rate every N steps", ge=1)
    seed: int = _f(42, "seed for weights init of new heads, data order and dropout", ge=None)
    fsdp: str | None = _f(None, "FSDP across the workers: 'true', or the HF trainer's option string (e.g. 'full_shard auto_wrap'); implied by --fsdp-config; needs --use-gpu")
    fsdp_config: str | None = _f(None, "FSDP config JSON for the HF trainer (example: configs/fsdp2_llama8b.json); turns FSDP on")
    deepspeed: str | None = _f(None, "DeepSpeed config JSON for the HF trainer (example: configs/deepspeed_zero3.json); needs --use-gpu and deepspeed installed")
    fail_at_step: int | None = _f(None, "testing only: worker rank 1 exits at this step once (before any checkpoint was restored)", ge=1)

    @property
    def fsdp_enabled(self) -> bool:
        """--fsdp-config, or --fsdp with anything but false/0/no/off."""
        off = (self.fsdp or "").strip().lower() in ("", "false", "0", "no", "off")
        return bool(self.fsdp_config) or not off

    def resolved_run_name(self, job: str) -> str:
        if self.run_name:
            return self.run_name
        key = f"{job}|{self.output.rstrip('/')}"
        return f"{job}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"

    def validate(self) -> None:
        if not self.output:
            raise ValueError("--output is required")
        if self.num_workers < 1:
            raise ValueError("--num-workers must be >= 1")
        if not 16 <= self.max_length <= MAX_TRAIN_LENGTH:
            raise ValueError(f"--max-length must be in 16..{MAX_TRAIN_LENGTH}, got {self.max_length}")
        if self.on_too_long not in ("drop", "truncate"):
            raise ValueError(f"--on-too-long must be drop or truncate, got {self.on_too_long!r}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError("--max-steps must be -1 (use --epochs) or >= 1")
        if self.per_device_batch_size < 1 or self.gradient_accumulation < 1 or self.save_steps < 1:
            raise ValueError("--per-device-batch-size, --gradient-accumulation and --save-steps must be >= 1")
        sharded = self.fsdp_enabled
        if sharded and self.deepspeed:
            raise ValueError("choose one of FSDP (--fsdp/--fsdp-config) and --deepspeed")
        if (sharded or self.deepspeed) and not self.use_gpu:
            raise ValueError("--fsdp/--fsdp-config/--deepspeed shard across GPUs: add --use-gpu")
        for flag, path in (("--fsdp-config", self.fsdp_config), ("--deepspeed", self.deepspeed)):
            if path:
                _check_json_file(flag, path)
        if self.deepspeed and importlib.util.find_spec("deepspeed") is None:
            raise ValueError("--deepspeed needs the deepspeed package on the driver and every GPU worker (pip install deepspeed)")


def _check_json_file(flag: str, path: str) -> None:
    """A sharding config must be a readable JSON object (checked on the driver, before Ray starts)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise ValueError(f"{flag} {path}: cannot read it ({e.strerror or e})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{flag} {path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{flag} {path}: expected a JSON object")


@dataclass
class SFTJobConfig(TrainJobConfig):
    """Supervised fine-tuning (ray_jobs.sft) on a generated corpus; loss on assistant tokens only."""

    data: str = _f("", "corpus: output of `longwriter generate` (Parquet folder, hive-partitioned), local or s3://; rows with status ok and a messages column")
    packing: bool = _f(False, "pack several short sequences into each --max-length row (BFD packing)")
    learning_rate: float = _f(2e-5, "peak learning rate (linear decay, --warmup-ratio warm-up)")

    def validate(self) -> None:
        if not self.data:
            raise ValueError("--data is required")
        super().validate()


@dataclass
class DPOJobConfig(TrainJobConfig):
    """Direct preference optimisation (ray_jobs.dpo) on chosen/rejected pairs (ray_jobs.pairs)."""

    pairs: str = _f("", "pairs Parquet (file or folder) from `longwriter make-pairs`, local or s3://")
    beta: float = _f(0.1, "DPO beta: how far the policy may move from the reference model", gt=0)
    learning_rate: float = _f(5e-7, "peak learning rate (linear decay, --warmup-ratio warm-up)")

    def validate(self) -> None:
        if not self.pairs:
            raise ValueError("--pairs is required")
        if self.beta <= 0:
            raise ValueError("--beta must be > 0")
        super().validate()


@dataclass
class PairsConfig:
    """Preference pairs (ray_jobs.pairs): k samples per instruction, ranked by length score (+ judge)."""

    input: str = _f("", "prompts: JSONL or Parquet file or folder, local or s3:// (fields: prompt; optional id, length)")
    output: str = _f("", "pairs Parquet: a .parquet file, or a folder (written as FOLDER/pairs.parquet), local or s3://")
    samples: int = _f(4, "outputs sampled per instruction", ge=2)
    mode: str = _f("direct", "how each sample is written: direct (one call) or agentwrite (plan, then sections)")
    in_flight: int = _f(32, "generations in flight at once", ge=1)
    min_margin: float = _f(5.0, "skip an instruction when best and worst scores differ by less than this")
    judge_model: str | None = _f(None, "also score quality with this judge model (HF directory or hub id); score = (S_l + S_q) / 2")
    judge_endpoint: str | None = _f(None, "OpenAI-compatible URL of the judge instead of a local judge engine")
    limit: int | None = _f(None, "only the first N valid prompts", ge=1)
