"""The end of a training run on the workers: the final model as a plain HF directory (safetensors,
tokenizer, chat template; LoRA merged) copied to ``OUTPUT/model``, which transformers and vLLM load."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from core.errors import one_line
from core import storage
from core.train_config import TrainJobConfig


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
        raise storage.StorageError(f"cannot write the model to {dest.uri}: {one_line(e)}") from None
