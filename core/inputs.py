"""Read and validate prompt rows (JSONL or Parquet, local or s3://).

Bad rows do not stop a job: each becomes an :class:`InputError` naming the line and the reason,
which the job writes as a ``status="failed"`` document, while every good row goes on.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass, field
from typing import Any, Iterator

import pyarrow.parquet as pq

from core import storage
from core.config import StorageConfig

MAX_LENGTH = 50_000  # words; above this a "length" is treated as a typo, not a request


@dataclass
class PromptRow:
    id: str
    prompt: str
    length: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class InputError:
    id: str
    where: str  # "file.jsonl:12"
    reason: str
    prompt: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


def stable_id(prompt: str) -> str:
    """Same prompt, same id, on every machine and every rerun."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]


def validate(raw: Any, where: str, max_length: int = MAX_LENGTH) -> PromptRow | InputError:
    """One decoded record -> a PromptRow, or an InputError with a one-line reason."""
    fallback_id = f"bad-{stable_id(where)}"
    if not isinstance(raw, dict):
        return InputError(fallback_id, where, f"record is a {type(raw).__name__}, not an object")
    rid = raw.get("id")
    prompt = raw.get("prompt")
    meta = {k: v for k, v in raw.items() if k not in ("id", "prompt", "length")}
    if rid is not None and not isinstance(rid, (str, int)) or (isinstance(rid, str) and not rid.strip()):
        return InputError(fallback_id, where, "field 'id' must be a non-empty string or integer", str(prompt or ""), meta)
    if not isinstance(prompt, str) or not prompt.strip():
        what = "missing" if prompt is None else ("empty" if isinstance(prompt, str) else f"a {type(prompt).__name__}")
        return InputError(str(rid) if rid is not None else fallback_id, where, f"field 'prompt' is {what}", "", meta)
    rid = str(rid) if rid is not None else stable_id(prompt)
    length = raw.get("length")
    if length is not None:
        if isinstance(length, bool) or not isinstance(length, (int, float, str)):
            return InputError(rid, where, f"field 'length' is not a number: {length!r}", prompt, meta)
        try:
            value = float(length)
        except ValueError:
            return InputError(rid, where, f"field 'length' is not a number: {length!r}", prompt, meta)
        if not (0 < value <= max_length) or value != int(value):
            return InputError(rid, where, f"field 'length' {length!r} is outside 1..{max_length} words", prompt, meta)
        length = int(value)
    return PromptRow(rid, prompt.strip(), length, meta)


def _jsonl_records(name: str, data: bytes) -> Iterator[tuple[Any, str] | InputError]:
    for i, line in enumerate(data.split(b"\n"), start=1):
        where = f"{name}:{i}"
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            yield InputError(f"bad-{stable_id(where)}", where, f"line is not valid UTF-8 (byte {e.start})")
            continue
        try:
            yield json.loads(text), where
        except json.JSONDecodeError as e:
            yield InputError(f"bad-{stable_id(where)}", where, f"malformed JSON: {e.msg} at column {e.colno}")


def read_prompts(uri: str, cfg: StorageConfig | None = None, max_length: int = MAX_LENGTH,
                 ) -> tuple[list[PromptRow], list[InputError]]:
    """All rows of a JSONL/Parquet file or folder; duplicate ids after the first are errors."""
    loc = storage.resolve(uri, cfg)
    fi = storage.info(loc)
    if fi.type == storage.pafs.FileType.NotFound:
        raise storage.StorageError(f"input not found: {uri}")
    if fi.type == storage.pafs.FileType.Directory:
        paths = [p for p in storage.list_files(loc) if p.endswith((".jsonl", ".json", ".parquet"))]
        if not paths:
            raise storage.StorageError(f"no .jsonl or .parquet files under {uri}")
    else:
        paths = [loc.path]
    good: list[PromptRow] = []
    bad: list[InputError] = []
    seen: set[str] = set()
    for path in paths:
        name = posixpath.basename(path)
        if path.endswith(".parquet"):
            with loc.fs.open_input_file(path) as fh:
                rows = pq.read_table(fh).to_pylist()
            records: Iterator = ((r, f"{name}:{i}") for i, r in enumerate(rows, start=1))
        else:
            records = _jsonl_records(name, storage.read_bytes(storage.Location(loc.fs, path, path)))
        for rec in records:
            item = rec if isinstance(rec, InputError) else validate(rec[0], rec[1], max_length)
            if isinstance(item, PromptRow):
                if item.id in seen:
                    item = InputError(f"{item.id}-dup-{stable_id(rec[1])[:6]}", rec[1],
                                      f"duplicate id {item.id!r}", item.prompt, item.metadata)
                else:
                    seen.add(item.id)
            (good if isinstance(item, PromptRow) else bad).append(item)
    return good, bad
