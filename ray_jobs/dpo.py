"""Direct preference optimisation on length-ranked pairs, on Ray Train (trl DPOTrainer per worker).

    longwriter dpo --pairs s3://bucket/pairs --model s3-synced/sft/model --output s3://bucket/dpo
    python -m ray_jobs.dpo --pairs pairs.parquet --output out/dpo --max-steps 100 --beta 0.1

Pairs come from ``longwriter make-pairs`` (``ray_jobs.pairs.PAIRS_SCHEMA``: prompt, chosen,
rejected, ...). Each becomes a conversational DPO example (user prompt; assistant chosen /
rejected), rendered by the model's chat template on the workers. The reference model is the
base model itself (``ref_model=None``: trl loads a frozen copy, or disables the adapter with
``--lora``). Pairs longer than ``--max-length`` tokens are dropped and counted (never truncated: see prepare_dpo_data).

Checkpoints, resume (worker failure or rerunning the same command), and the export to
``OUTPUT/model`` work exactly as for ``longwriter sft`` (``ray_jobs.train_worker``). The summary
reports the reward margin (chosen minus rejected implicit reward) at the start and the end.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import pyarrow as pa

from core.config import StorageConfig
from core.train_config import DPOJobConfig
from ray_jobs.train_data import DataError, chat_ids, check_drop_share, load_tokenizer, read_parquet, resolve_model_path
from ray_jobs.train_launch import register_job, run_training
from ray_jobs import console

_MSGS = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
DPO_DATA_SCHEMA = pa.schema([("prompt", _MSGS), ("chosen", _MSGS), ("rejected", _MSGS)])


def register(sub: argparse._SubParsersAction) -> None:
    register_job(sub, "dpo", "DPO on chosen/rejected pairs (Ray Train + trl)", __doc__, DPOJobConfig, run_dpo)


def read_pairs(cfg: DPOJobConfig, scfg: StorageConfig | None) -> list[dict[str, str]]:
    ds, _ = read_parquet(cfg.pairs, scfg, "pairs")
    missing = [c for c in ("prompt", "chosen", "rejected") if c not in ds.schema.names]
    if missing:
        raise DataError(f"pairs at {cfg.pairs} have no {', '.join(repr(c) for c in missing)} column "
                        "(expected the output of longwriter make-pairs)")
    rows = [r for r in ds.to_table(columns=["prompt", "chosen", "rejected"]).to_pylist()
            if r["prompt"] and r["chosen"] and r["rejected"]]
    if not rows:
        raise DataError(f"pairs at {cfg.pairs} are empty")
    return rows


def prepare_dpo_data(cfg: DPOJobConfig, rows: list[dict[str, str]], tok: Any) -> tuple[pa.Table, dict[str, Any]]:
    """Conversational DPO rows within --max-length, and counts for the summary."""
    if cfg.on_too_long != "drop":
        raise DataError("--on-too-long truncate is not offered for DPO: the trainer would cut prompt+chosen and "
                        "prompt+rejected separately, removing exactly the tails where they differ; over-long pairs "
                        "are dropped (raise --max-length to keep them)")
    out, too_long = [], 0
    for r in rows:
        prompt = [{"role": "user", "content": r["prompt"]}]
        longest = max(len(chat_ids(tok, prompt + [{"role": "assistant", "content": r[k]}])) for k in ("chosen", "rejected"))
        if longest > cfg.max_length:
            too_long += 1
            if cfg.on_too_long == "drop":
                continue
        out.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": r["chosen"]}],
                    "rejected": [{"role": "assistant", "content": r["rejected"]}]})
    verb = "dropped" if cfg.on_too_long == "drop" else "truncated"
    if too_long:
        print(f"[dpo] {too_long} of {len(rows)} pairs are longer than --max-length {cfg.max_length} tokens: {verb}",
              file=console.stream())
    check_drop_share("dpo", too_long, len(rows), cfg)
    if not out:
        raise DataError(f"no pairs left: all {len(rows)} are longer than --max-length {cfg.max_length} tokens")
    return pa.Table.from_pylist(out, schema=DPO_DATA_SCHEMA), {
        "rows": len(out), "pairs_rows": len(rows), "too_long": too_long, "too_long_action": verb}


def build_trainer(*, model: Any, tokenizer: Any, train_dataset: Any, cfg: DPOJobConfig, kwargs: dict[str, Any],
                  peft_config: Any) -> Any:
    """Runs on each worker: a DPOTrainer whose reference is the base model (ref_model=None)."""
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(**kwargs, beta=cfg.beta)
    return DPOTrainer(model=model, ref_model=None, args=args, train_dataset=train_dataset,
                      processing_class=tokenizer, peft_config=peft_config)


def run_dpo(cfg: DPOJobConfig, scfg: StorageConfig | None = None) -> dict[str, Any]:
    scfg = scfg or StorageConfig()
    cfg.validate()
    rows = read_pairs(cfg, scfg)  # bad input fails here, before any model is loaded
    tok = load_tokenizer(resolve_model_path(cfg.model))
    table, info = prepare_dpo_data(cfg, rows, tok)
    print(f"[dpo] {info['rows']} pairs", file=console.stream())
    return run_training("dpo", cfg, scfg, table, build_trainer, info)


def main(argv: list[str] | None = None) -> int:
    from ray_jobs.cli import main as cli_main

    return cli_main(["dpo", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    sys.exit(main())
