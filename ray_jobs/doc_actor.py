"""The Ray Data stage that writes documents: a callable class that owns one engine.

Modelled on ray.data.llm's async engine stage, with one difference that stage cannot express:
a document is a chain of dependent calls (plan, then section 1, 2, ...). So each actor runs
many documents concurrently with asyncio (bounded by ``in_flight``) and the engine batches
whatever steps are ready. Finished documents go to Parquet files of up to ``rows_per_file``,
written as soon as that many are done or the oldest has waited ``flush_interval_s``, so a slow
document never holds its finished siblings back; a batch returns once its documents are in
files. Each document's plan and finished sections are saved under ``_state/`` as it goes, so a
crashed run resumes mid-document.

Input columns: id, prompt, length, metadata (JSON). Output columns: SUMMARY_COLUMNS.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import pyarrow as pa

from core import credentials, storage
from core.agentwrite import AgentWriter, WriteState
from core.plan import DocumentError
from core.config import AgentWriteConfig, EngineConfig, GenerateConfig, StorageConfig
from core.reconcile import part_name, state_key
from core.records import Document, documents_to_table
from core.redact import redact

# Marker of a document this run has written, beside its state: a batch that Ray runs again
# (after the actor restarted) skips it. Every run drops the markers when it starts and ends.
DONE_SUFFIX = ".done"
SUMMARY_COLUMNS = ["id", "status", "error", "target_words", "word_count", "prompt_tokens",
                   "cached_tokens", "generated_tokens", "latency_s"]


class DocumentStage:
    def __init__(self, ecfg: EngineConfig, acfg: AgentWriteConfig, gcfg: GenerateConfig,
                 scfg: StorageConfig, run_uri: str, state_uri: str, board: Any = None,
                 creds: credentials.Credentials | None = None):
        from core.engines import build_engine

        credentials.install(creds)

        self.engine = build_engine(ecfg)
        if hasattr(self.engine, "start"):
            self.engine.start()  # fail at actor start, with the model named, not per document
        self.writer = AgentWriter(self.engine, acfg)
        self.gcfg, self.scfg = gcfg, scfg
        self.run = storage.resolve(run_uri, scfg)
        self.state = storage.resolve(state_uri, scfg)
        self.board = board
        # Only a restarted actor can meet documents it already wrote: look for markers then only
        # (one storage read per document otherwise, a GET per document on S3).
        self._restarted = _was_restarted()
        self._sem: asyncio.Semaphore | None = None
        # Finished documents not yet in a file: (document, its state stem), oldest first.
        self._pending: list[tuple[Document, str]] = []
        self._oldest = 0.0
        self._flush_lock: asyncio.Lock | None = None
        self._ticker: asyncio.Task | None = None

    async def __call__(self, batch: pa.Table) -> pa.Table:
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.gcfg.in_flight)
            self._flush_lock = asyncio.Lock()
            self._ticker = asyncio.get_running_loop().create_task(self._tick())
        rows = batch.to_pylist()
        summary = await asyncio.gather(*(self._one(r) for r in rows))
        await self._flush()  # the batch returns only once its documents are in files
        return pa.Table.from_pylist(summary)

    async def _restart_actor(self, doc: Document) -> None:
        """The vLLM engine died under this actor. Its documents must not become failed rows:
        write what is finished, then end the process, so that Ray restarts the actor (map actors
        restart without limit) and runs its batches again, every document resuming from its
        saved sections."""
        print(f"[generate] the engine of this actor died ({redact(doc.error)}); restarting the actor", flush=True)
        await self._flush()
        os._exit(70)

    async def _finished(self, doc: Document, stem: str) -> None:
        if not self._pending:
            self._oldest = time.monotonic()
        self._pending.append((doc, stem))
        if len(self._pending) >= self.gcfg.rows_per_file:
            await self._flush()

    async def _tick(self) -> None:
        """A finished document waits at most ``flush_interval_s`` for siblings to share its file."""
        every = max(0.5, min(5.0, self.gcfg.flush_interval_s / 4))
        while True:
            await asyncio.sleep(every)
            if self._pending and time.monotonic() - self._oldest >= self.gcfg.flush_interval_s:
                try:
                    await self._flush()
                except storage.StorageError:
                    pass  # kept pending; the next tick or the batch's own flush tries again

    async def _flush(self) -> None:
        assert self._flush_lock is not None
        async with self._flush_lock:
            if not self._pending:
                return
            batch, self._pending = self._pending, []
            try:
                await asyncio.to_thread(self._write, batch)
            except BaseException:
                self._pending = batch + self._pending  # not written: try again with the next flush
                raise

    def _write(self, batch: list[tuple[Document, str]]) -> None:
        """Documents first, then their resume state: a crash in between only leaves state that
        the next run drops (the documents are already there)."""
        docs = [d for d, _ in batch]
        table = documents_to_table(docs)
        loc = self.run.join(part_name([d.id for d in docs]))
        storage.write_parquet(loc, table)  # storage retries an object store's bad moments itself
        for doc, stem in batch:
            try:  # "written" marker first, then the resume state goes
                summary = {c: getattr(doc, c) for c in SUMMARY_COLUMNS}
                storage.write_bytes(self.state.join(f"{stem}{DONE_SUFFIX}"), json.dumps(summary).encode())
                storage.delete(self.state.join(f"{stem}.json"))
            except storage.StorageError:
                pass  # stale state of a finished document is dropped by the next run

    async def _one(self, row: dict[str, Any]) -> dict[str, Any]:
        """Write one document (or find it written already) and return its SUMMARY_COLUMNS."""
        assert self._sem is not None
        stem = state_key(row["id"], row["prompt"], row.get("length"))
        done = self._load_done(stem) if self._restarted else None
        if done is not None:  # written before this actor restarted: Ray re-runs whole batches
            return done
        async with self._sem:
            if self.board is not None:
                self.board.started.remote(row["id"])
            meta = json.loads(row.get("metadata") or "{}")
            state_loc = self.state.join(f"{state_key(row['id'], row['prompt'], row.get('length'))}.json")
            state = self._load_state(state_loc)

            def save(st: WriteState) -> None:
                try:
                    storage.write_bytes(state_loc, st.to_json().encode())
                except storage.StorageError as e:  # this document fails with the reason; the job goes on
                    raise DocumentError(f"could not save its resume state: {e}") from None

            def on_event(kind: str, doc: Document) -> None:
                if kind == "section" and self.board is not None:
                    s = doc.sections[-1]
                    toks = sum(c.generated_tokens for c in doc.calls if c.step == s.index)
                    self.board.section.remote(s.words, toks)

            for attempt in range(self.gcfg.doc_retries + 1):
                if self.gcfg.mode == "direct":
                    doc = await self.writer.write_direct(row["prompt"], doc_id=row["id"], length=row.get("length"),
                                                         metadata=meta)
                else:
                    doc = await self.writer.write(row["prompt"], doc_id=row["id"], length=row.get("length"),
                                                  metadata=meta, state=state, on_state=save, on_event=on_event)
                if doc.status == "ok" or not doc.retryable:
                    break
                if getattr(self.engine, "dead", False):
                    await self._restart_actor(doc)
                state = self._load_state(state_loc)  # keep what the failed attempt finished
                await asyncio.sleep(min(30.0, 2.0 * 2**attempt))
            if doc.status != "ok" and doc.retryable and getattr(self.engine, "dead", False):
                await self._restart_actor(doc)
            if self.board is not None:
                self.board.finished.remote(doc.id, doc.status == "ok")
        await self._finished(doc, stem)
        return {c: getattr(doc, c) for c in SUMMARY_COLUMNS}

    def _load_done(self, stem: str) -> dict[str, Any] | None:
        try:
            return json.loads(storage.read_bytes(self.state.join(f"{stem}{DONE_SUFFIX}")))
        except (storage.StorageError, ValueError):
            return None

    def _load_state(self, loc: storage.Location) -> WriteState | None:
        try:
            return WriteState.from_json(storage.read_bytes(loc).decode())
        except storage.StorageError:
            return None
        except (ValueError, TypeError):  # a torn or foreign file: start the document afresh
            return None


def _was_restarted() -> bool:
    """Ray's public answer; when it cannot be had, assume a restart (the safe side)."""
    try:
        import ray

        return bool(ray.get_runtime_context().was_current_actor_reconstructed)
    except Exception:
        return True
