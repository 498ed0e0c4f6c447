"""What an evaluation reads: the benchmark, and the documents a generate run wrote for it.

The benchmark file is decoded and each record checked by :mod:`core.inputs` (the rules of every
job's input: JSONL, JSON or Parquet, gzip, BOM, one-line reasons naming ``file:line``), then held
to what a benchmark needs: every row has a ``length``; ``type`` is optional text; ids are
``bench-0000``, ``bench-0001``, ... in file order (a prompt may repeat, with another length).
No Ray here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow.dataset as pads

from core import inputs, storage
from core.config import StorageConfig
from core.text import detect_language


@dataclass
class BenchRow:
    id: str
    prompt: str
    length: int
    type: str | None
    language: str


def read_bench(uri: str, scfg: StorageConfig | None = None, limit: int | None = None) -> list[BenchRow]:
    """Benchmark rows; the first bad record raises ValueError naming it (``bench.jsonl:7: ...``)."""
    loc = storage.resolve(uri, scfg)
    name = loc.uri.rsplit("/", 1)[-1]
    rows: list[BenchRow] = []
    # core.inputs' own record reader (and validate): the decoding and reasons of every job's input,
    # without read_prompts' id rules (a benchmark may repeat a prompt with another length).
    for where, _, value in inputs._records(name, storage.read_bytes(loc)):
        row = value if isinstance(value, ValueError) else inputs.validate(value, where)
        if not isinstance(row, inputs.PromptRow):
            raise ValueError(f"{where}: {row.reason if isinstance(row, inputs.InputError) else row}")
        if row.length is None:
            raise ValueError(f"{where}: field 'length' is missing (a whole number of words)")
        typ = row.metadata.get("type")
        if typ is not None and not isinstance(typ, str):
            raise ValueError(f"{where}: field 'type' must be a string, got {typ!r}")
        rows.append(BenchRow(f"bench-{len(rows):04d}", row.prompt, row.length, typ, detect_language(row.prompt)))
    if not rows:
        raise ValueError(f"{name}: no benchmark rows")
    return rows[:limit] if limit is not None else rows


GEN_COLUMNS = ["id", "prompt", "text", "status", "error", "sections", "calls", "mode", "model",
               "generated_tokens", "latency_s"]


def read_generations(uri: str, scfg: StorageConfig | None = None, run_id: str | None = None) -> list[dict[str, Any]]:
    """Document rows of a generate output (a root with run_id=... partitions, or one run folder)."""
    loc = storage.resolve(uri, scfg)
    files = storage.list_files(loc, ".parquet")
    if not files:
        raise storage.StorageError(f"no generations (Parquet files) under {uri}")
    ds = pads.dataset(files, filesystem=loc.fs, format="parquet",
                      partitioning=pads.partitioning(flavor="hive"), partition_base_dir=loc.path)
    names = set(ds.schema.names)
    for need in ("id", "prompt", "text"):
        if need not in names:
            raise ValueError(f"{uri}: generations lack column {need!r}")
    cols = [c for c in GEN_COLUMNS if c in names] + (["run_id"] if "run_id" in names else [])
    rows = ds.to_table(columns=cols).to_pylist()
    runs = sorted({str(r["run_id"]) for r in rows if r.get("run_id") is not None})
    if len(runs) > 1:
        if run_id in runs:
            rows = [r for r in rows if str(r["run_id"]) == run_id]
        else:
            raise ValueError(f"{uri} holds several runs ({', '.join(runs)}): point --generations at one "
                             f"run_id=... folder or pass --run-id")
    return rows


def join_generations(rows: list[BenchRow], gens: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
    """Generation per bench row: by id, else by identical prompt; ok documents win duplicates."""
    by_id: dict[str, dict[str, Any]] = {}
    by_prompt: dict[str, dict[str, Any]] = {}
    for g in gens:
        for key, table in ((g["id"], by_id), ((g.get("prompt") or "").strip(), by_prompt)):
            old = table.get(key)
            if old is None or (old.get("status") != "ok" and g.get("status", "ok") == "ok"):
                table[key] = g
    out = []
    for r in rows:
        g = by_id.get(r.id)
        if g is None or (g.get("prompt") or "").strip() != r.prompt:
            g = by_prompt.get(r.prompt)
        out.append(g)
    return out


def run_id_of(gen_rows: list[dict[str, Any]], gen_uri: str, default: str) -> str:
    """The run a set of existing generations belongs to: its one run_id column value, else the
    ``run_id=...`` folder it was read from, else ``default``."""
    found = sorted({str(g["run_id"]) for g in gen_rows if g.get("run_id") is not None})
    tail = gen_uri.rstrip("/").rsplit("/", 1)[-1]
    return found[0] if len(found) == 1 else tail[len("run_id="):] if tail.startswith("run_id=") else default
