"""Bulk generation on Ray Data: prompts in, hive-partitioned Parquet documents out, resumable.

    python -m ray_jobs.generate --input prompts.jsonl --output s3://bucket/corpus
    longwriter generate --input prompts.jsonl --output ./out --engines 2 --in-flight 32

Layout of ``--output``::

    run_id=RUN/part-*.parquet        documents (core.records.DOCUMENT_SCHEMA), ok and failed
    run_id=RUN/_SUCCESS              JSON manifest, written last, deleted when a rerun starts
    _state/run_id=RUN/ID--DIGEST.json  plan + finished sections of documents still in progress

Rerunning the same command continues (core.reconcile): matching ok rows are reused, failed,
edited and new rows are written, old versions retired, so a finished run has one row per input
id; documents in progress resume from their last finished section. Exit code 0 when every row is ok, 1 when any
row failed (bad input or generation), 2 when the job itself could not run.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import sys
import threading
import time
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads

from core import credentials, lake, reconcile, run_lock, storage
from core.config import AgentWriteConfig, EngineConfig, GenerateConfig, StorageConfig, check_config
from core.engines import check_source
from core.engines.vllm_args import resolve_device
from core.inputs import InputError, read_prompts
from core.records import SCHEMA_VERSION, Document, documents_to_table
from core.redact import redact, safe_url
from ray_jobs import console

# YAML section -> config, in run_generate's argument order.
SECTIONS = {"generate": GenerateConfig, "engine": EngineConfig, "agentwrite": AgentWriteConfig,
            "storage": StorageConfig}


def register(sub: argparse._SubParsersAction) -> None:
    from ray_jobs.cli import add_job_parser

    add_job_parser(sub, "generate", "bulk AgentWrite generation on Ray Data -> Parquet", __doc__, SECTIONS, run)


def add_flags(p: argparse.ArgumentParser) -> None:
    """This job's flags on another parser (cluster job templates check their command lines with it)."""
    from ray_jobs.cli import add_sections

    add_sections(p, SECTIONS)


def run(args: argparse.Namespace) -> int:
    from ray_jobs.cli import build_sections

    gcfg, ecfg, acfg, scfg = build_sections(args, SECTIONS)
    summary = run_generate(gcfg, ecfg, acfg, scfg)
    print_summary(summary)
    print_excerpt(summary, scfg, embedded=not (ecfg.model or ecfg.endpoint))
    return 0 if summary["failed"] == 0 else 1


def default_run_id(gcfg: GenerateConfig, ecfg: EngineConfig) -> str:
    """What the run is (mode, model or endpoint), not where its input is or how the path is
    spelled: appending prompts to the input and rerunning continues the same run."""
    key = json.dumps([gcfg.mode, ecfg.model or "embedded", ecfg.endpoint])
    return f"{gcfg.mode}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def error_document(e: InputError, mode: str, model: str) -> Document:
    return Document(id=e.id, prompt=e.prompt, target_words=0, target_source="", mode=mode, model=model,
                    status="failed", error=f"{e.where}: {e.reason}", metadata=e.metadata)


def run_generate(gcfg: GenerateConfig, ecfg: EngineConfig, acfg: AgentWriteConfig,
                 scfg: StorageConfig | None = None, *, progress: bool = True) -> dict[str, Any]:
    """The whole job; returns the summary dict (also stored in ``_SUCCESS``)."""
    scfg = scfg or StorageConfig()
    if not gcfg.input or not gcfg.output:
        raise ValueError("--input and --output are required")
    for cfg in (gcfg, ecfg, acfg, scfg):  # callers from Python skip the CLI's check
        check_config(cfg)
    t0 = time.time()
    check_source(ecfg)  # before Ray starts: an unknown model is a one-line error in seconds
    good, bad = read_prompts(gcfg.input, scfg, max_length=acfg.max_length)
    if gcfg.limit is not None:
        good = good[: gcfg.limit]
    run_id = gcfg.run_id or default_run_id(gcfg, ecfg)
    table = _open_table(gcfg, scfg)  # before any work: a bad catalog is a one-line error now
    root = storage.resolve(gcfg.output, scfg)
    run = root.join(f"run_id={run_id}")
    state = root.join("_state", f"run_id={run_id}")
    storage.makedirs(run)
    lease = run_lock.acquire(run, gcfg.lock_ttl_s)  # one writer per run; refused with the holder's name
    with run_lock.Heartbeat(run, lease, gcfg.lock_ttl_s):
        storage.delete(run.join("_SUCCESS"))  # a run is in progress: the old manifest no longer holds
        storage.remove_stale_temporaries(run)
        existing = reconcile.settle_replacements(run, reconcile.read_rows(run))
        plan = reconcile.plan_rerun(existing, good, bad)
        reconcile.retire(run, plan.retire)
        model_label = ecfg.model or "SmolLM2-135M-Instruct"
        if plan.bad_to_write:
            docs = [error_document(e, gcfg.mode, model_label) for e in plan.bad_to_write]
            storage.write_parquet(run.join(reconcile.part_name([d.id for d in docs])), documents_to_table(docs))
        todo = plan.todo
        _drop_stale_state(state, todo)
        print(f"[generate] run_id={run_id}: {len(good)} valid prompts, {len(bad)} bad rows, "
              f"{plan.reused} already done, {len(todo)} to write -> {run.uri}", file=console.stream())
        if todo:
            _run_ray(todo, gcfg, ecfg, acfg, scfg, run, state, progress)
        _drop_stale_state(state, todo)  # the markers go; state of documents that failed stays for their retry
        summary = _summarize(run, run_id, gcfg, ecfg, time.time() - t0, len(good) + len(bad))
        summary["reused"] = plan.reused
        if table is not None:  # the run's rows, as the folder now holds them, in one table commit
            files = storage.list_files(run, ".parquet")
            parts = (pads.dataset([f], filesystem=run.fs, format="parquet").to_table() for f in files)
            summary["table"] = {"name": gcfg.table, **lake.commit_run(table, run_id, parts)}
        storage.write_bytes(run.join("_SUCCESS"), redact(json.dumps(summary, indent=1, default=str)).encode())
        return summary


def _open_table(gcfg: GenerateConfig, scfg: StorageConfig) -> Any:
    if not gcfg.table:
        if gcfg.catalog or gcfg.warehouse:
            raise ValueError("--catalog and --warehouse go with --table NAMESPACE.NAME")
        return None
    if not gcfg.catalog:
        raise ValueError("--table needs --catalog (sqlite:///PATH.db, an http(s):// REST catalog, or glue)")
    return lake.open_table(gcfg.table, gcfg.catalog, gcfg.warehouse, scfg)


def _drop_stale_state(state: storage.Location, todo: list) -> None:
    """Resume state of documents this run will not write (finished, or edited since) goes,
    and so do the previous run's "written" markers (doc_actor.DONE_SUFFIX)."""
    keep = {reconcile.state_key(r.id, r.prompt, r.length) + ".json" for r in todo}
    try:
        for f in storage.list_files(state):
            if f.rsplit("/", 1)[-1] not in keep:
                storage.delete(storage.Location(state.fs, f, f))
    except storage.StorageError as e:  # housekeeping only: never the reason a job fails
        console.say(f"[generate] could not clean {state.uri}: {e}")


def _run_ray(todo: list, gcfg: GenerateConfig, ecfg: EngineConfig, acfg: AgentWriteConfig,
             scfg: StorageConfig, run: storage.Location, state: storage.Location, progress: bool) -> None:
    from ray_jobs.ray_private import set_async_batches_per_actor

    # Several input batches run at once inside each actor, so the engine never idles on the
    # slowest document of a batch; the actor's semaphore keeps in_flight the real bound.
    set_async_batches_per_actor(math.ceil(gcfg.in_flight / gcfg.rows_per_file) + 1)
    import ray
    import ray.data

    from ray_jobs.doc_actor import DocumentStage
    from ray_jobs.progress import ProgressBoard

    env = {k: os.environ[k] for k in ("VLLM_LOGGING_LEVEL", "LONGWRITER_HOME", "VLLM_CPU_KVCACHE_SPACE",
                                      "VLLM_CPU_OMP_THREADS_BIND", "VLLM_CACHE_ROOT", "TORCHINDUCTOR_CACHE_DIR", "HF_HUB_OFFLINE")
           if k in os.environ}
    if not ray.is_initialized():
        console.say("[generate] starting Ray" + (f" (joining {os.environ['RAY_ADDRESS']})" if os.environ.get("RAY_ADDRESS") else ""))
        ray.init(address=os.environ.get("RAY_ADDRESS"), log_to_driver=console.worker_logs_to_driver())
    ips = {n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")}
    problem = local_output_problem(run.uri, len(ips), gcfg.shared_output)
    if problem:
        raise ValueError(problem)
    console.say(f"[generate] {gcfg.engines} engine actor(s): {_start_expectation(ecfg)}")
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    board = ProgressBoard.remote()
    rows = [{"id": r.id, "prompt": r.prompt, "length": r.length,
             "metadata": json.dumps(r.metadata, ensure_ascii=False, sort_keys=True)} for r in todo]
    table = pa.Table.from_pylist(rows, schema=pa.schema([("id", pa.string()), ("prompt", pa.string()),
                                                         ("length", pa.int64()), ("metadata", pa.string())]))
    blocks = max(gcfg.engines, math.ceil(len(rows) / (gcfg.in_flight * 4)))
    ds = ray.data.from_arrow(table).repartition(blocks)
    gpus = gcfg.engine_num_gpus
    if gpus is None:
        on_gpu = not ecfg.endpoint and resolve_device("auto", ray.cluster_resources().get("GPU", 0)) == "gpu"
        gpus = float(ecfg.tensor_parallel_size) if on_gpu else 0.0
    ds = ds.map_batches(
        DocumentStage,
        # Credentials by value, not in runtime_env: Ray logs runtime_envs (core/credentials.py).
        fn_constructor_kwargs=dict(ecfg=ecfg, acfg=acfg, gcfg=gcfg, scfg=scfg, run_uri=run.uri,
                                   state_uri=state.uri, board=board, creds=credentials.capture()),
        batch_size=gcfg.rows_per_file,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=gcfg.engines),
        num_cpus=gcfg.engine_num_cpus if not ecfg.endpoint else 0.1,
        num_gpus=gpus,
        # Per-actor env (not ray.init's): merging with a submitted job's own runtime_env is safe.
        runtime_env={"env_vars": env} if env else None,
    )
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(board, len(rows), stop, progress), daemon=True)
    watcher.start()
    try:
        for _ in ds.iter_batches(batch_size=None):
            pass
    finally:
        stop.set()
        watcher.join(timeout=5)


def local_output_problem(uri: str, machines: int, shared: bool) -> str | None:
    """A local --output on a cluster of several machines would scatter the run over their disks."""
    if uri.startswith("s3://") or machines <= 1 or shared:
        return None
    return (f"--output {uri} is a local path but the Ray cluster spans {machines} machines: each would write "
            f"its own copy; use s3://... or a path every node mounts, and then pass --shared-output")


def _start_expectation(ecfg: EngineConfig) -> str:
    """The phase line for the engines' start (they start on this machine's cache for local runs)."""
    if ecfg.endpoint:
        return f"HTTP clients of {safe_url(ecfg.endpoint)}"
    from core.engines import start_notes
    from core.models import EMBEDDED_NAME, resolve_model

    return start_notes.expectation(resolve_model(ecfg.model), ecfg, ecfg.model or EMBEDDED_NAME)


def _watch(board: Any, total: int, stop: threading.Event, show: bool) -> None:
    """Poll the progress board: a tqdm bar on a terminal, a log line every 30 s otherwise."""
    import ray
    from tqdm import tqdm

    tty = console.stream().isatty()
    bar = tqdm(total=total, unit="doc", desc="starting engines", file=console.stream(), disable=not (show and tty))
    last_log = 0.0
    while True:
        try:
            s = ray.get(board.snapshot.remote(), timeout=10)
        except Exception:
            s = None
        if s:
            starting = s["done"] + s["failed"] + s["in_flight"] == 0
            bar.set_description("starting engines" if starting else "documents", refresh=False)
            bar.update(s["done"] + s["failed"] - bar.n)
            bar.set_postfix(failed=s["failed"], in_flight=s["in_flight"], words=s["words"],
                            tok_s=f"{s['tokens_per_s']:.0f}")
            if show and not tty and time.time() - last_log > 30:
                last_log = time.time()
                if starting:
                    console.say(f"[generate] starting engines, {s['elapsed_s']:.0f} s")
                else:
                    console.say(f"[generate] {s['done']} done, {s['failed']} failed, {s['in_flight']} in flight, "
                                f"{s['words']} words, {s['tokens_per_s']:.0f} tok/s, {s['elapsed_s']:.0f} s")
        if stop.wait(1.0):
            break
    bar.close()


def _summarize(run: storage.Location, run_id: str, gcfg: GenerateConfig, ecfg: EngineConfig,
               seconds: float, input_rows: int) -> dict[str, Any]:
    files = storage.list_files(run, ".parquet")
    cols = ["id", "status", "word_count", "target_words", "generated_tokens", "error"]
    t = pads.dataset(files, filesystem=run.fs, format="parquet").to_table(columns=cols) if files else \
        pa.table({c: [] for c in cols})
    rows = t.to_pylist()
    ok = [r for r in rows if r["status"] == "ok"]
    failed = [r for r in rows if r["status"] != "ok"]
    return {
        "run_id": run_id,
        "output": run.uri,
        "schema_version": SCHEMA_VERSION,
        "input": gcfg.input,
        "mode": gcfg.mode,
        "model": safe_url(ecfg.endpoint) or ecfg.model or "SmolLM2-135M-Instruct",
        "input_rows": input_rows,
        "documents": len(rows),
        "ok": len(ok),
        "failed": len(failed),
        "words": sum(r["word_count"] or 0 for r in ok),
        "generated_tokens": sum(r["generated_tokens"] or 0 for r in rows),
        "seconds": round(seconds, 1),
        "files": [f.rsplit("/", 1)[-1] for f in files],
        "errors": [{"id": r["id"], "error": r["error"]} for r in failed][:50],
        "finished_at": datetime.now(timezone.utc).isoformat(),
        "config": {"generate": dataclasses.asdict(gcfg)},
    }


def print_summary(s: dict[str, Any]) -> None:
    lines = [
        ("run", s["run_id"]), ("output", s["output"]), ("documents", s["documents"]), ("ok", s["ok"]),
        ("failed", s["failed"]), ("words (ok docs)", s["words"]), ("generated tokens", s["generated_tokens"]),
        ("wall seconds (this call)", s["seconds"]), ("files", len(s["files"])),
    ] + ([("table", f"{s['table']['name']}: {s['table']['rows']} rows of this run, snapshot "
                    f"{s['table']['snapshot_id']}")] if s.get("table") else [])
    w = max(len(k) for k, _ in lines)
    print("\n".join(f"{k:<{w}}  {v}" for k, v in lines))
    for e in s["errors"][:20]:
        print(f"  failed {e['id']}: {e['error']}")
    print(f"query it: python -c \"import pyarrow.dataset as ds; print(ds.dataset('{s['output'].rsplit('/run_id=', 1)[0]}', "
          f"partitioning='hive').to_table(columns=['id','status','word_count']))\"")


def print_excerpt(s: dict[str, Any], scfg: StorageConfig, *, embedded: bool, chars: int = 400) -> None:
    """The start of one finished document, so the first run shows what was written and where."""
    if not s["ok"]:
        return
    run = storage.resolve(s["output"], scfg)
    files = storage.list_files(run, ".parquet")
    t = pads.dataset(files, filesystem=run.fs, format="parquet").to_table(
        columns=["id", "text", "word_count", "target_words", "language"], filter=pads.field("status") == "ok")
    if not t.num_rows:
        return
    # The English document closest to its target: what the job is for (length), readably.
    row = min(t.to_pylist(), key=lambda r: (r["language"] != "en", abs(r["word_count"] / max(1, r["target_words"]) - 1)))
    text = " ".join(row["text"].split())
    note = " (the embedded 135M model shows the mechanics and length control, not prose quality)" if embedded else ""
    print(f"\nexcerpt of {row['id']}, {row['word_count']} words for a target of {row['target_words']}{note}:")
    print("  " + text[:chars] + (" ..." if len(text) > chars else ""))
    print(f"all {s['ok']} documents: {s['output']}/*.parquet (column text; README 'Query it')")


def main(argv: list[str] | None = None) -> int:
    from ray_jobs.cli import main as cli_main

    return cli_main(["generate", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    sys.exit(main())
