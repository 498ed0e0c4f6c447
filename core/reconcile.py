"""What a (re)run must write, and which rows already in the output it must retire.

The invariant (README, "Reruns"): after a finished run, the run's folder holds exactly one
generated row per valid input id, for the input row as it is now, plus one row per bad input
line. So a rerun

* reuses an ``ok`` row whose prompt and length still match its input row (byte for byte: its
  file is not touched);
* writes again, and retires the old row of, an id whose last row failed (an engine or storage
  failure, or a bad-input failure whose line now validates) or whose prompt or length changed;
* keeps a bad-input row while that line is still bad with the same error, and retires it once
  the line is fixed or gone.

Retiring rewrites the part file without those rows: the new file (named for the rows it keeps)
carries the old file's name in its Parquet metadata (``longwriter.replaces``) and is complete
before the old one is deleted, so a crash in between leaves both, and the next run finishes the
job (:func:`settle_replacements`) instead of counting rows twice.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections import defaultdict
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from core import storage
from core.inputs import InputError, PromptRow

REPLACES_KEY = b"longwriter.replaces"


def part_name(ids: list[str]) -> str:
    """Deterministic file name for a set of documents (a rerun of the same set overwrites)."""
    return "part-" + hashlib.sha1("\n".join(sorted(ids)).encode()).hexdigest()[:20] + ".parquet"


def state_key(doc_id: str, prompt: str, length: int | None) -> str:
    """File stem of a document's resume state: a changed prompt or length never resumes old state."""
    safe = doc_id if (all(c.isalnum() or c in "-_." for c in doc_id) and len(doc_id) < 100
                      and not doc_id.startswith(".")) else hashlib.sha1(doc_id.encode()).hexdigest()
    digest = hashlib.sha1(f"{prompt}\n{length}".encode()).hexdigest()[:12]
    return f"{safe}--{digest}"


@dataclass
class Row:
    """The columns of an output row that decide whether a rerun may reuse it."""

    id: str
    status: str
    prompt: str
    target_words: int
    target_source: str  # "" for a bad-input row (it was never generated)
    error: str
    file: str

    @property
    def bad_input(self) -> bool:
        return self.status != "ok" and not self.target_source


@dataclass
class RerunPlan:
    todo: list[PromptRow] = field(default_factory=list)
    reused: int = 0
    bad_to_write: list[InputError] = field(default_factory=list)
    retire: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # file -> ids


def read_rows(run: storage.Location) -> list[Row]:
    files = storage.list_files(run, ".parquet")
    if not files:
        return []
    cols = ["id", "status", "prompt", "target_words", "target_source", "error", "__filename"]
    t = pads.dataset(files, filesystem=run.fs, format="parquet").to_table(columns=cols)
    return [Row(r["id"], r["status"], r["prompt"] or "", r["target_words"] or 0, r["target_source"] or "",
                r["error"] or "", r["__filename"]) for r in t.to_pylist()]


def settle_replacements(run: storage.Location, rows: list[Row]) -> list[Row]:
    """Delete part files that a newer file says it replaces (a crash came between the two steps)."""
    files = {r.file for r in rows}
    by_id: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        by_id[r.id].add(r.file)
    suspects = {f for fs in by_id.values() if len(fs) > 1 for f in fs}
    stale = set()
    for f in sorted(suspects):
        meta = pq.read_schema(f, filesystem=run.fs).metadata or {}
        old = meta.get(REPLACES_KEY)
        if old:
            old_path = posixpath.join(posixpath.dirname(f), old.decode())
            if old_path in files:
                stale.add(old_path)
    for f in stale:
        storage.delete(storage.Location(run.fs, f, f))
    return [r for r in rows if r.file not in stale]


def matches(row: Row, want: PromptRow) -> bool:
    """Is this ok row the document for the input row as it is now?"""
    if row.prompt != want.prompt:
        return False
    if want.length is not None:
        return row.target_source == "row" and row.target_words == want.length
    return row.target_source != "row"


def plan_rerun(rows: list[Row], good: list[PromptRow], bad: list[InputError]) -> RerunPlan:
    plan = RerunPlan()
    generated: dict[str, list[Row]] = defaultdict(list)
    bad_rows: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for r in rows:
        if r.bad_input:
            bad_rows[(r.id, r.error)].append(r)
        else:
            generated[r.id].append(r)
    for want in good:  # ids no longer in the input at all keep their rows
        have = generated.get(want.id, [])
        keep = next((r for r in have if r.status == "ok" and matches(r, want)), None)
        if keep is None:
            plan.todo.append(want)
        else:
            plan.reused += 1
        for r in have:
            if r is not keep:
                plan.retire[r.file].add(r.id)
    wanted_bad = {(e.id, f"{e.where}: {e.reason}"): e for e in bad}
    for key, have in bad_rows.items():
        for r in have[1:] if key in wanted_bad else have:
            plan.retire[r.file].add(r.id)
    plan.bad_to_write = [e for key, e in wanted_bad.items() if key not in bad_rows]
    return plan


def retire(run: storage.Location, retire_ids: dict[str, set[str]]) -> None:
    """Rewrite each file without the rows to retire (the whole file goes when nothing is left)."""
    for f, ids in retire_ids.items():
        if not ids:
            continue
        loc = storage.Location(run.fs, f, f)
        t = pq.read_table(f, filesystem=run.fs)
        keep = [i for i, doc_id in enumerate(t.column("id").to_pylist()) if doc_id not in ids]
        if keep:
            kept = t.take(pa.array(keep, pa.int64()))
            meta = dict(kept.schema.metadata or {})
            meta[REPLACES_KEY] = posixpath.basename(f).encode()
            kept = kept.replace_schema_metadata(meta)
            name = part_name(kept.column("id").to_pylist())
            storage.write_parquet(run.join(name), kept)
        storage.delete(loc)
