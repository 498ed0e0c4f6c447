"""Read and validate prompt rows (JSONL, JSON, Parquet; plain or gzip'd; local or s3://).

The job never dies on a row. Every input record becomes a :class:`PromptRow` or one
:class:`InputError` naming where it came from (``file.jsonl:12``, or ``file.parquet#3`` for the
third row of a Parquet file; paths relative to the input folder) and why; other records go on.
The rules (README, "Bad input and security"):

* A UTF-8 byte-order mark, CRLF line ends and gzip'd files (whatever their name) are accepted;
  UTF-16 files with a byte-order mark are decoded. A ``.json`` file holding one array gives one
  record per element (``file.json#N``), one holding one object gives that record (``#1``); any
  other file is JSON Lines: one object per line. In a folder, files ending in ``.jsonl``,
  ``.json``, ``.parquet`` (``.gz`` allowed) are read, in path order; others, and names starting
  with ``_`` or ``.``, are skipped. A file that cannot be read at all is one rejected record.
* A record is rejected, with a one-line reason, when its line is over :data:`MAX_RECORD_BYTES`,
  is not UTF-8 or not JSON (including numbers too long for Python, nesting too deep, NaN where a
  number is needed), repeats a key, or is not an object; when ``prompt`` is not a non-empty
  string of at most :data:`MAX_PROMPT_CHARS` characters without NUL; when ``id`` is not a
  non-empty string (at most :data:`MAX_ID_CHARS`, no control characters, not starting with the
  reserved ``bad-``) or integer; when ``length`` is not a whole number of words in
  ``1..max_length`` (a bool is not a number); or when any text is not valid Unicode (a lone
  surrogate from a ``\\ud800`` escape).
* Duplicate ids: the first valid record with an id (files in path order, then lines) wins;
  later valid records with that id are rejected as duplicates, naming the first.
* A rejected record's id is ``bad-`` + a digest of its file's relative path and its own bytes,
  so it never equals a valid id (``bad-`` is reserved) and does not move when other lines are
  added or removed; identical bad lines in one file get ``-2``, ``-3`` ... in order.
* Every other field is kept as metadata, made JSON-safe by :func:`json_safe` (its docstring
  gives the encoding of timestamps, decimals, binary, NaN ...).
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import hashlib
import io
import json
import math
import posixpath
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterator

import pyarrow.parquet as pq

from core import storage
from core.config import StorageConfig
from core.errors import one_line
from core.length import MAX_PROMPT_CHARS, MAX_TARGET_WORDS

MAX_LENGTH = MAX_TARGET_WORDS  # words; above this a "length" is treated as a typo, not a request
MAX_RECORD_BYTES = 1 << 20  # a JSONL line over 1 MiB is not decoded (prompts are at most MAX_PROMPT_CHARS)
MAX_ID_CHARS = 200
MAX_METADATA_DEPTH = 32
MAX_DECOMPRESSED_BYTES = 4 << 30  # a gzip'd input may expand to 4 GiB, no more (a "zip bomb" stops there)
FAILED_ID_PREFIX = "bad-"
SUFFIXES = (".jsonl", ".json", ".parquet", ".jsonl.gz", ".json.gz")


@dataclass
class PromptRow:
    id: str
    prompt: str
    length: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class InputError:
    id: str
    where: str  # "file.jsonl:12" or "file.parquet#3"
    reason: str
    prompt: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


class _Bad(ValueError):
    """A record-level problem; its text is the one-line reason."""


def stable_id(prompt: str) -> str:
    """Same prompt, same id, on every machine and every rerun."""
    return hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).hexdigest()[:16]


# -- JSON-safe metadata

def json_safe(value: Any, *, strict: bool = True, _depth: int = 0, _path: str = "") -> Any:
    """A value that ``json.dumps(..., allow_nan=False)`` writes and any JSON reader reads back.

    The encoding: timestamps, dates and times as ISO 8601 strings (a time zone kept as its
    offset); durations as seconds (a number); decimals as strings (exact digits); binary as
    ``{"$base64": "..."}``; NaN and infinities as the strings ``"NaN"``, ``"Infinity"``,
    ``"-Infinity"``; tuples and sets as lists; map entries (Arrow maps arrive as pairs) as
    ``[key, value]`` lists; object keys as strings; anything else as its ``str()``. With
    ``strict`` a lone surrogate in a string raises (the record is rejected); without it the
    character is replaced by U+FFFD (for storing what a rejected record held).
    """
    if _depth > MAX_METADATA_DEPTH:
        raise _Bad(f"field {_path.lstrip('.')[:40]!r} is nested deeper than {MAX_METADATA_DEPTH} levels")
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, str):
        return _text(value, _path, strict)
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$base64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, dict):
        return {_text(str(k), _path, strict): json_safe(v, strict=strict, _depth=_depth + 1, _path=f"{_path}.{k}")
                for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [json_safe(v, strict=strict, _depth=_depth + 1, _path=f"{_path}[{i}]") for i, v in enumerate(items)]
    return _text(str(value), _path, strict)


def _text(s: str, path: str, strict: bool) -> str:
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        if strict:
            raise _Bad(f"field {path.lstrip('.') or 'key'!r} holds a lone surrogate (not valid Unicode)") from None
        return s.encode("utf-8", "replace").decode("utf-8")


# -- one record

def validate(raw: Any, where: str, max_length: int = MAX_LENGTH) -> PromptRow | InputError:
    """One decoded record -> a PromptRow, or an InputError with a one-line reason.

    The InputError's id here is a placeholder digest of ``where``; :func:`read_prompts`
    replaces it with the content-based id described in the module docstring.
    """
    try:
        return _validate(raw, max_length)
    except (_Bad, RecursionError) as e:
        reason = str(e) if isinstance(e, _Bad) else "record is nested too deeply"
        prompt, meta = _salvage(raw)
        return InputError(FAILED_ID_PREFIX + stable_id(where), where, reason, prompt, meta)


def _validate(raw: Any, max_length: int) -> PromptRow:
    if not isinstance(raw, dict):
        raise _Bad(f"record is {_a(raw)}, not an object")
    prompt = raw.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        what = "missing" if prompt is None else ("empty" if isinstance(prompt, str) else _a(prompt))
        raise _Bad(f"field 'prompt' is {what}")
    _text(prompt, "prompt", True)
    if len(prompt) > MAX_PROMPT_CHARS:
        raise _Bad(f"field 'prompt' has {len(prompt):,} characters, over the limit of {MAX_PROMPT_CHARS:,}")
    if "\x00" in prompt:
        raise _Bad("field 'prompt' contains a NUL character")
    rid = _check_id(raw.get("id"), prompt)
    length = _check_length(raw.get("length"), max_length)
    meta = json_safe({k: v for k, v in raw.items() if k not in ("id", "prompt", "length")})
    return PromptRow(rid, prompt.strip(), length, meta)


def _check_id(rid: Any, prompt: str) -> str:
    if rid is None:
        return stable_id(prompt)
    if isinstance(rid, bool) or not isinstance(rid, (str, int)):
        raise _Bad(f"field 'id' must be a non-empty string or an integer, not {_a(rid)}")
    if isinstance(rid, int):
        return str(rid)
    _text(rid, "id", True)
    if not rid.strip():
        raise _Bad("field 'id' is empty")
    if len(rid) > MAX_ID_CHARS:
        raise _Bad(f"field 'id' has {len(rid):,} characters, over the limit of {MAX_ID_CHARS}")
    if any(ord(c) < 32 or ord(c) == 127 for c in rid):
        raise _Bad("field 'id' contains a control character")
    if rid.startswith(FAILED_ID_PREFIX):
        raise _Bad(f"field 'id' {rid[:40]!r} starts with {FAILED_ID_PREFIX!r}, which is reserved for rejected records")
    return rid


def _check_length(length: Any, max_length: int) -> int | None:
    if length is None:
        return None
    shown = _short(length)
    if isinstance(length, bool) or not isinstance(length, (int, float, str)):
        raise _Bad(f"field 'length' is not a number: {shown}")
    if isinstance(length, str):
        s = length.strip().replace("_", "")
        if len(s) > 32:
            raise _Bad(f"field 'length' is not a number: {shown}")
        try:
            length = int(s) if s.isdigit() else float(s)
        except ValueError:
            raise _Bad(f"field 'length' is not a number: {shown}") from None
    if isinstance(length, float):
        if not math.isfinite(length):
            raise _Bad(f"field 'length' is not a number: {shown}")
        if length != int(length):
            raise _Bad(f"field 'length' {shown} is not a whole number of words")
        length = int(length)
    if not 0 < length <= max_length:  # plain int comparison: fine for any size
        raise _Bad(f"field 'length' {shown} is outside 1..{max_length} words")
    return length


def _a(v: Any) -> str:
    name = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null",
            int: "integer", float: "number"}.get(type(v), type(v).__name__)
    return ("an " if name[0] in "aeiou" else "a ") + name


def _short(v: Any) -> str:
    s = repr(v) if not isinstance(v, int) or isinstance(v, bool) or abs(v) < 10 ** 30 else f"<{len(str(abs(v)))}-digit integer>"
    return s if len(s) <= 60 else s[:57] + "..."


def _salvage(raw: Any) -> tuple[str, dict[str, Any]]:
    """What a rejected record held, fit to store beside its error (text repaired, size bounded)."""
    if not isinstance(raw, dict):
        return "", {}
    prompt = raw.get("prompt")
    prompt = _text(prompt[:MAX_PROMPT_CHARS], "", False) if isinstance(prompt, str) else ""
    try:
        meta = json_safe({k: v for k, v in raw.items() if k != "prompt"}, strict=False)
    except (_Bad, RecursionError):
        meta = {}
    if len(json.dumps(meta, ensure_ascii=False, default=str)) > MAX_RECORD_BYTES:
        meta = {}
    return prompt, meta


# -- files -> records

def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _Bad(f"key {k[:40]!r} appears twice in one object")
        out[k] = v
    return out


def _loads(text: str) -> Any:
    """json.loads that turns every way a line can break the decoder into a one-line reason."""
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except _Bad:
        raise
    except json.JSONDecodeError as e:
        raise _Bad(f"malformed JSON: {e.msg} (column {e.colno})") from None
    except RecursionError:
        raise _Bad("malformed JSON: nested too deeply") from None
    except ValueError as e:  # e.g. an integer of more than 4,300 digits
        raise _Bad(f"malformed JSON: {one_line(e, 120)}") from None


def _decompress(data: bytes) -> bytes:
    if data[:2] != b"\x1f\x8b":
        return data
    d = zlib.decompressobj(zlib.MAX_WBITS | 16)
    out = d.decompress(data, MAX_DECOMPRESSED_BYTES + 1)
    if len(out) > MAX_DECOMPRESSED_BYTES:
        raise _Bad(f"gzip'd input expands to more than {MAX_DECOMPRESSED_BYTES >> 30} GiB")
    if not d.eof:
        raise _Bad("gzip'd input is truncated")
    return out


def _as_utf8(data: bytes) -> bytes:
    """UTF-8 without a BOM (a UTF-16 file with a BOM is converted)."""
    if data[:3] == b"\xef\xbb\xbf":
        return data[3:]
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return data.decode("utf-16", "replace").encode("utf-8", "surrogatepass")
    return data


def _jsonl(name: str, data: bytes) -> Iterator[tuple[str, bytes, Any]]:
    """(where, raw bytes, decoded value or _Bad) per non-blank line."""
    for i, line in enumerate(data.split(b"\n"), start=1):
        line = line[:-1] if line.endswith(b"\r") else line
        if not line.strip():
            continue
        where = f"{name}:{i}"
        if len(line) > MAX_RECORD_BYTES:
            yield where, line[:4096], _Bad(f"line has {len(line):,} bytes, over the limit of {MAX_RECORD_BYTES:,}")
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            yield where, line, _Bad(f"line is not valid UTF-8 (byte {e.start + 1})")
            continue
        try:
            yield where, line, _loads(text)
        except _Bad as e:
            yield where, line, e


def _json_document(name: str, data: bytes) -> list[tuple[str, bytes, Any]] | None:
    """A ``.json`` file that is one JSON array (its elements) or one object (itself, even
    pretty-printed over many lines); else None, and the file is read as JSON Lines."""
    head = data.lstrip()[:1]
    if head not in (b"[", b"{"):
        return None
    try:
        doc = _loads(data.decode("utf-8"))
    except (_Bad, UnicodeDecodeError):
        return None
    items = doc if isinstance(doc, list) else [doc]
    return [(f"{name}#{i}", json.dumps(json_safe(v, strict=False), sort_keys=True).encode(), v)
            for i, v in enumerate(items, start=1)]


def _parquet(name: str, data: bytes) -> Iterator[tuple[str, bytes, Any]]:
    try:
        rows = pq.read_table(io.BytesIO(data)).to_pylist()
    except Exception as e:  # noqa: BLE001 - any Arrow failure: the file is one bad record
        yield name, data[:4096], _Bad(f"not a readable Parquet file: {one_line(e, 160)}")
        return
    for i, row in enumerate(rows, start=1):
        raw = json.dumps(json_safe(row, strict=False), sort_keys=True).encode()
        yield f"{name}#{i}", raw, row


def _records(name: str, data: bytes) -> Iterator[tuple[str, bytes, Any]]:
    try:
        data = _decompress(data)
    except (_Bad, OSError, EOFError, zlib.error) as e:
        yield name, data[:4096], e if isinstance(e, _Bad) else _Bad(f"gzip'd input is corrupt: {e}")
        return
    if data[:4] == b"PAR1" or name.endswith(".parquet"):
        yield from _parquet(name, data)
        return
    data = _as_utf8(data)
    if name.endswith((".json", ".json.gz")):
        items = _json_document(name, data)
        if items is not None:
            yield from items
            return
    yield from _jsonl(name, data)


def read_prompts(uri: str, cfg: StorageConfig | None = None, max_length: int = MAX_LENGTH,
                 ) -> tuple[list[PromptRow], list[InputError]]:
    """Every record of a file or folder, as valid rows and rejected ones (rules: module docstring)."""
    loc = storage.resolve(uri, cfg)
    fi = storage.info(loc)
    if fi.type == storage.pafs.FileType.NotFound:
        raise storage.StorageError(f"input not found: {uri}")
    if fi.type == storage.pafs.FileType.Directory:
        paths = sorted(p for p in storage.list_files(loc) if p.endswith(SUFFIXES)
                       and not posixpath.basename(p).startswith(("_", ".")))
        if not paths:
            raise storage.StorageError(f"no {', '.join(SUFFIXES)} files under {uri}")
        base = loc.path.rstrip("/")
    else:
        paths, base = [loc.path], posixpath.dirname(loc.path)
    good: list[PromptRow] = []
    bad: list[InputError] = []
    first_at: dict[str, str] = {}
    for path in paths:
        name = posixpath.relpath(path, base) if base else path
        data = storage.read_bytes(storage.Location(loc.fs, path, path))
        seen_bad: Counter[str] = Counter()
        for where, raw_bytes, value in _records(name, data):
            item = (InputError("", where, str(value)) if isinstance(value, _Bad)
                    else validate(value, where, max_length))
            if isinstance(item, PromptRow) and item.id in first_at:
                item = InputError("", where, f"duplicate id {item.id[:60]!r} (first at {first_at[item.id]})",
                                  item.prompt, item.metadata)
            if isinstance(item, PromptRow):
                first_at[item.id] = where
                good.append(item)
                continue
            digest = hashlib.sha256(name.encode("utf-8", "replace") + b"\n" + raw_bytes).hexdigest()[:16]
            seen_bad[digest] += 1
            n = seen_bad[digest]
            item.id = FAILED_ID_PREFIX + digest + (f"-{n}" if n > 1 else "")
            bad.append(item)
    return good, bad
