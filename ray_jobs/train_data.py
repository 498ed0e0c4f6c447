"""Reading and tokenizing training data in the driver (no Ray here): Parquet input, the tokenizer,
chat-template token ids. Used by ``ray_jobs.sft`` and ``ray_jobs.dpo`` before Ray Train starts."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from core.errors import one_line
from core import storage
from core.config import StorageConfig


class DataError(ValueError):
    """The training data cannot be used (missing column, no rows, ...); one line."""


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
            raise DataError(f"cannot read {what} at {uri}: {one_line(e)}") from None
    try:
        return pads.dataset(loc.path, filesystem=loc.fs, format="parquet"), loc
    except (OSError, pa.ArrowInvalid) as e:
        raise DataError(f"cannot read {what} at {uri}: {one_line(e)}") from None


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


def check_drop_share(job: str, dropped: int, total: int, cfg: Any) -> None:
    """A --max-length that drops most of the corpus is a mistake to stop on, not a filter."""
    if cfg.on_too_long == "drop" and total and dropped / total > cfg.max_drop_share:
        raise DataError(f"{dropped} of {total} {job} rows ({100 * dropped / total:.0f}%) are longer than --max-length "
                        f"{cfg.max_length} tokens and would be dropped (more than --max-drop-share "
                        f"{cfg.max_drop_share:g}): raise --max-length")
