"""Supervised fine-tuning on a generated corpus, on Ray Train (trl SFTTrainer per worker).

    longwriter sft --data s3://bucket/corpus --output s3://bucket/sft-run --num-workers 4 --use-gpu
    python -m ray_jobs.sft --data out/examples --model ./base --output out/sft --max-steps 200

The driver reads the corpus (``longwriter generate`` output: hive-partitioned Parquet; rows
with ``status == "ok"`` and a ``messages`` list) with pyarrow, renders each conversation with
the model's chat template and tokenizes it once. Labels are -100 on everything but the
assistant turns (prompt, system text and template tokens carry no loss). Sequences over
``--max-length`` are dropped or truncated (``--on-too-long``); the count is reported.

Workers train with checkpoints every ``--save-steps`` under ``OUTPUT/ray_train/RUN`` (local or
S3). A worker that dies restarts the group from the latest checkpoint (``--max-failures``);
rerunning the same command continues the run. The final model lands in ``OUTPUT/model`` as a
plain Hugging Face directory (safetensors + tokenizer + chat template) that vLLM loads.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads

from core.config import StorageConfig
from core.train_config import SFTJobConfig
from ray_jobs.train_data import DataError, chat_ids, check_drop_share, common_prefix, load_tokenizer, read_parquet, resolve_model_path
from ray_jobs.train_launch import register_job, run_training
from ray_jobs import console

TOKENIZED_SCHEMA = pa.schema([("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32()))])


def register(sub: argparse._SubParsersAction) -> None:
    register_job(sub, "sft", "supervised fine-tuning on a generated corpus (Ray Train + trl)", __doc__,
                 SFTJobConfig, run_sft)


# ---------------------------------------------------------------- data (driver)


def read_conversations(uri: str, scfg: StorageConfig | None) -> list[list[dict[str, str]]]:
    """``messages`` of the ok rows of a corpus; one-line errors for unusable input."""
    ds, _ = read_parquet(uri, scfg, "corpus")
    names = ds.schema.names
    if "messages" not in names:
        raise DataError(f"corpus at {uri} has no 'messages' column (expected the output of longwriter generate)")
    flt = (pads.field("status") == "ok") if "status" in names else None
    try:
        table = ds.to_table(columns=["messages"], filter=flt)
    except (OSError, pa.ArrowInvalid) as e:
        raise DataError(f"cannot read corpus at {uri}: {' '.join(str(e).split())[:300]}") from None
    convs = []
    for msgs in table.column("messages").to_pylist():
        msgs = [{"role": str(m.get("role") or ""), "content": str(m.get("content") or "")} for m in (msgs or [])]
        if any(m["role"] == "assistant" and m["content"].strip() for m in msgs):
            convs.append(msgs)
    if not convs:
        raise DataError(f"corpus at {uri} is empty: no rows with status ok and an assistant message")
    return convs


def tokenize_conversation(tok: Any, msgs: list[dict[str, str]]) -> tuple[list[int], list[int]]:
    """(input_ids, labels): loss on assistant turns only.

    Each assistant turn spans from the end of the rendered conversation before it (with the
    generation prompt) to the end of the conversation including it; comparing token prefixes
    makes this robust to templates that render a prefix slightly differently.
    """
    ids = chat_ids(tok, msgs)
    labels = [-100] * len(ids)
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        start = common_prefix(chat_ids(tok, msgs[:i], add_generation_prompt=True), ids)
        end = len(ids) if i == len(msgs) - 1 else common_prefix(chat_ids(tok, msgs[: i + 1]), ids)
        labels[start:end] = ids[start:end]
    return ids, labels


def prepare_sft_data(cfg: SFTJobConfig, scfg: StorageConfig | None, tok: Any) -> tuple[pa.Table, dict[str, Any]]:
    return tokenize_corpus(read_conversations(cfg.data, scfg), cfg, tok)


def tokenize_corpus(convs: list[list[dict[str, str]]], cfg: SFTJobConfig, tok: Any) -> tuple[pa.Table, dict[str, Any]]:
    """(input_ids, labels) rows within --max-length, and counts for the summary."""
    out_ids, out_labels = [], []
    too_long = 0
    for msgs in convs:
        ids, labels = tokenize_conversation(tok, msgs)
        if len(ids) > cfg.max_length:
            too_long += 1
            if cfg.on_too_long == "drop":
                continue
            ids, labels = ids[: cfg.max_length], labels[: cfg.max_length]
        if all(x == -100 for x in labels):
            continue  # nothing to learn (e.g. truncation removed the whole answer)
        out_ids.append(ids)
        out_labels.append(labels)
    verb = "dropped" if cfg.on_too_long == "drop" else "truncated"
    if too_long:
        print(f"[sft] {too_long} of {len(convs)} sequences are longer than --max-length {cfg.max_length} "
              f"tokens: {verb}", file=console.stream())
    check_drop_share("sft", too_long, len(convs), cfg)
    if not out_ids:
        raise DataError(f"no training sequences left: all {len(convs)} are longer than --max-length {cfg.max_length} "
                        f"tokens (raise it or use --on-too-long truncate)")
    table = pa.Table.from_arrays([pa.array(out_ids, pa.list_(pa.int32())), pa.array(out_labels, pa.list_(pa.int32()))],
                                 schema=TOKENIZED_SCHEMA)
    lengths = [len(x) for x in out_ids]
    info = {"rows": len(out_ids), "corpus_rows": len(convs), "too_long": too_long, "too_long_action": verb,
            "tokens_in_data": sum(lengths), "max_seq_tokens": max(lengths),
            "trained_tokens_in_data": sum(sum(1 for v in lab if v != -100) for lab in out_labels)}
    return table, info


# ---------------------------------------------------------------- the job


def build_trainer(*, model: Any, tokenizer: Any, train_dataset: Any, cfg: SFTJobConfig, kwargs: dict[str, Any],
                  peft_config: Any) -> Any:
    """Runs on each worker: an SFTTrainer on the pre-tokenized (input_ids, labels) rows."""
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(**kwargs, packing=cfg.packing)
    return SFTTrainer(model=model, args=args, train_dataset=train_dataset, processing_class=tokenizer,
                      peft_config=peft_config)


def run_sft(cfg: SFTJobConfig, scfg: StorageConfig | None = None) -> dict[str, Any]:
    scfg = scfg or StorageConfig()
    cfg.validate()
    convs = read_conversations(cfg.data, scfg)  # bad input fails here, before any model is loaded
    tok = load_tokenizer(resolve_model_path(cfg.model))
    table, info = tokenize_corpus(convs, cfg, tok)
    print(f"[sft] {info['rows']} sequences, {info['tokens_in_data']} tokens "
          f"({info['trained_tokens_in_data']} with loss), longest {info['max_seq_tokens']}", file=console.stream())
    return run_training("sft", cfg, scfg, table, build_trainer, info)


def main(argv: list[str] | None = None) -> int:
    from ray_jobs.cli import main as cli_main

    return cli_main(["sft", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    sys.exit(main())
