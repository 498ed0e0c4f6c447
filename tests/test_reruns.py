"""Reruns of the bulk job keep one row per input id (real Ray, real vLLM on CPU, local Parquet).

Run 1 has a bad length and one long document: a second job on the same output is refused while
it runs, and the short documents are readable before the long one ends. Run 2 is the same
command spelled ``./p.jsonl``, after the bad row was fixed, one prompt edited and one appended:
the same run folder, the fixed and edited rows written again (their old rows retired), the
untouched rows reused as they were.
Also the pure rules of core.reconcile, and crash recovery between a replacement's two steps.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from core import reconcile, storage
from core.inputs import InputError, PromptRow

ROOT = Path(__file__).resolve().parents[1]


def rows_of(run_dir: Path) -> list[dict]:
    return pads.dataset(str(run_dir), format="parquet").to_table(
        columns=["id", "status", "prompt", "target_words", "error", "metadata"]).to_pylist()


def test_rerun_retries_fixed_rows_rewrites_edited_ones_and_ignores_path_spelling(tmp_path):
    inp = tmp_path / "p.jsonl"
    rows = [{"id": "a", "prompt": "Write a short note about tea.", "length": 80},
            {"id": "b", "prompt": "Write a short note about moss.", "length": 80},
            {"id": "long", "prompt": "Write an essay about the history of bridges.", "length": 600},
            {"id": "n1", "prompt": "Write about ants.", "length": -5}]
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    base = [sys.executable, "-m", "ray_jobs.generate", "--output", str(out), "--rows-per-file", "16",
            "--flush-interval-s", "2", "--enforce-eager", "--resample-tries", "0"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_TMPDIR": f"/tmp/lwrerun{os.getpid()}"}
    proc = subprocess.Popen(base + ["--input", str(inp)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    # While it runs: a second job on the same output is refused, naming the holder.
    deadline = time.time() + 120
    while not list(out.glob("run_id=*/_LOCK")) and time.time() < deadline:
        time.sleep(0.5)
    second = subprocess.run(base + ["--input", str(inp)], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert second.returncode == 2 and f"is being written by {socket.gethostname()}:{proc.pid}" in second.stderr, \
        second.stderr[-1500:]
    # The short documents land while the long one (same batch of 16) is still being written.
    seen_early = False
    while proc.poll() is None:
        run_dirs = list(out.glob("run_id=*"))
        if run_dirs and list(run_dirs[0].glob("part-*.parquet")):
            ids = {r["id"] for r in rows_of(run_dirs[0])}
            if {"a", "b"} <= ids and "long" not in ids:
                seen_early = True
        time.sleep(0.5)
    stdout, stderr = proc.communicate()
    assert proc.returncode == 1, stderr[-2000:]  # n1 failed: exit 1
    assert seen_early, "the finished short documents were not readable before the long one ended"
    runs = list(out.glob("run_id=*"))
    assert len(runs) == 1 and not (runs[0] / "_LOCK").exists()
    first = {r["id"]: r for r in rows_of(runs[0])}
    failed = [r for r in first.values() if r["status"] == "failed"]  # a rejected row's id is bad-<digest> ...
    assert len(failed) == 1 and "length" in failed[0]["error"] and failed[0]["id"].startswith("bad-")
    assert json.loads(failed[0]["metadata"])["id"] == "n1"  # ... and its own fields stay in its metadata
    assert first["a"]["status"] == first["b"]["status"] == first["long"]["status"] == "ok"
    full_before = {r["id"]: r for r in pads.dataset(str(runs[0]), format="parquet").to_table().to_pylist()}

    rows[3]["length"] = 90  # fixed
    rows[1]["prompt"] = "Write a short note about glass."  # edited
    rows.append({"id": "c", "prompt": "Write a short note about salt.", "length": 80})  # appended
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    stale = runs[0] / "_tmp-part-x.parquet-0123.partial"
    stale.write_bytes(b"left by a kill")
    os.utime(stale, (1e9, 1e9))
    r2 = subprocess.run(base + ["--input", "./p.jsonl"], cwd=tmp_path, env=env, capture_output=True, text=True,
                        timeout=900)
    assert r2.returncode == 0, r2.stderr[-2000:]
    assert list(out.glob("run_id=*")) == runs  # same run: the path's spelling is not its identity
    after = pads.dataset(str(runs[0]), format="parquet").to_table().to_pylist()
    ids = [r["id"] for r in after]
    assert sorted(ids) == ["a", "b", "c", "long", "n1"], ids  # one row per id
    by_id = {r["id"]: r for r in after}
    assert all(r["status"] == "ok" for r in after)
    assert by_id["b"]["prompt"] == "Write a short note about glass."
    assert by_id["n1"]["target_words"] == 90
    for same in ("a", "long"):  # reused as they were, not written again
        assert by_id[same] == full_before[same]
    manifest = json.loads((runs[0] / "_SUCCESS").read_text())
    assert sorted(manifest["files"]) == sorted(p.name for p in runs[0].glob("part-*.parquet"))
    assert manifest["documents"] == 5 and manifest["reused"] == 2
    assert not list(runs[0].glob("*.partial"))  # the stale temp file is gone


def _row(i, status="ok", prompt="p", words=100, source="row", error="", file="f1"):
    return reconcile.Row(i, status, prompt, words, source, error, file)


def test_plan_rules():
    rows = [_row("keep"), _row("edited"), _row("gen-failed", "failed", error="engine died"),
            _row("fixed", "failed", source="", error="p.jsonl:3: field 'length' must be positive", file="bad"),
            _row("still-bad", "failed", source="", error="p.jsonl:4: field 'prompt' is empty", file="bad")]
    good = [PromptRow("keep", "p", 100), PromptRow("edited", "p2", 100), PromptRow("gen-failed", "p", 100),
            PromptRow("fixed", "p", 100), PromptRow("new", "p", None)]
    bad = [InputError("still-bad", "p.jsonl:4", "field 'prompt' is empty"),
           InputError("other", "p.jsonl:5", "field 'prompt' is missing")]
    plan = reconcile.plan_rerun(rows, good, bad)
    assert [r.id for r in plan.todo] == ["edited", "gen-failed", "fixed", "new"]
    assert plan.reused == 1
    assert dict(plan.retire) == {"f1": {"edited", "gen-failed"}, "bad": {"fixed"}}
    assert [e.id for e in plan.bad_to_write] == ["other"]
    # a length from the instruction (row length None) never reuses a row made for a row length
    assert not reconcile.matches(_row("x"), PromptRow("x", "p", None))
    assert reconcile.matches(_row("x", source="instruction"), PromptRow("x", "p", None))


def test_retire_then_crash_before_delete_is_settled_next_time(tmp_path):
    run = storage.resolve(str(tmp_path))
    t = pa.table({"id": ["a", "b"], "status": ["ok", "failed"], "prompt": ["p", "q"], "target_words": [1, 2],
                  "target_source": ["row", "row"], "error": ["", "boom"]})
    old = tmp_path / reconcile.part_name(["a", "b"])
    pq.write_table(t, old)
    reconcile.retire(run, {str(old): {"b"}})
    files = sorted(tmp_path.glob("part-*.parquet"))
    assert len(files) == 1 and files[0].name == reconcile.part_name(["a"])
    assert pq.read_table(files[0]).column("id").to_pylist() == ["a"]
    # The same replacement with the delete lost to a crash: both files, "a" twice ...
    pq.write_table(t, old)
    rows = reconcile.read_rows(run)
    assert sorted(r.id for r in rows) == ["a", "a", "b"]
    # ... and the next run's settle step deletes the replaced file.
    rows = reconcile.settle_replacements(run, rows)
    assert sorted(r.id for r in rows) == ["a"] and not old.exists()


def test_local_output_on_several_machines_is_refused():
    from ray_jobs.generate import local_output_problem

    assert local_output_problem("/data/out/run_id=r", 1, False) is None
    assert local_output_problem("s3://b/out/run_id=r", 4, False) is None
    assert local_output_problem("/mnt/nfs/out/run_id=r", 4, True) is None
    msg = local_output_problem("/data/out/run_id=r", 3, False)
    assert msg and "spans 3 machines" in msg and "--shared-output" in msg
