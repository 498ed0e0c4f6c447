"""The Iceberg sink (core.lake): real pyiceberg on a real SQLite catalog, local and moto-S3
warehouses, read back through pyiceberg, DuckDB and `datasets`; and the bulk job committing to
it through a kill and a rerun.

The job test talks to tests/instant_openai.py, an instant stand-in OpenAI server, not to vLLM:
what it checks is the commit protocol around the engine, and the real engine is exercised by
the other job tests.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pytest

from core import lake
from core.records import Document, documents_to_table

pytestmark = pytest.mark.timeout(300)


def docs(ids: list[str], text: str = "Tides rise.") -> pa.Table:
    return documents_to_table([Document(id=i, prompt=f"About {i}.", target_words=2, target_source="row", text=text,
                                        word_count=2) for i in ids])


def rows(table) -> list[tuple[str, str, str]]:
    t = table.refresh().scan().to_arrow()
    return sorted(zip(t["run_id"].to_pylist(), t["id"].to_pylist(), t["text"].to_pylist()))


@pytest.mark.parametrize("where", ["local", "s3"])
def test_commit_replaces_a_runs_rows_atomically(tmp_path: Path, where: str, request) -> None:
    if where == "s3":
        request.getfixturevalue("s3_server")
        warehouse = f"s3://lwtest/lake-{tmp_path.name}"
    else:
        warehouse = str(tmp_path / "wh")
    cat = f"sqlite:///{tmp_path}/catalog.db"
    table = lake.open_table("corpus.documents", cat, warehouse)
    lake.commit_run(table, "r1", [docs(["a", "b"]), docs(["c"])])
    lake.commit_run(table, "r2", [docs(["a"], "Other model.")])
    before = table.refresh().current_snapshot().snapshot_id
    out = lake.commit_run(table, "r1", [docs(["a", "c"], "Rewritten.")])  # a rerun: b is gone, a and c new
    assert out["rows"] == 2 and out["snapshot_id"] != before
    assert rows(table) == [("r1", "a", "Rewritten."), ("r1", "c", "Rewritten."), ("r2", "a", "Other model.")]
    # The snapshot before the rerun's commit still reads whole: readers see one version or the other.
    old = table.scan(snapshot_id=before).to_arrow()
    assert sorted(zip(old["run_id"].to_pylist(), old["id"].to_pylist())) == [("r1", "a"), ("r1", "b"), ("r1", "c"), ("r2", "a")]
    # The same table, opened again (another process would), through DuckDB and datasets.
    again = lake.open_table("corpus.documents", cat, warehouse)
    con = again.scan(row_filter="run_id = 'r1'").to_duckdb(table_name="docs")
    assert con.execute("select count(*), count(distinct id) from docs").fetchone() == (2, 2)
    import datasets

    ds = datasets.Dataset(again.scan().to_arrow())
    assert sorted(ds["id"]) == ["a", "a", "c"] and set(ds.column_names) == set(lake.LAKE_SCHEMA.names)


def test_bad_table_settings_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(lake.LakeError, match="NAMESPACE.NAME"):
        lake.open_table("documents", f"sqlite:///{tmp_path}/c.db", str(tmp_path))
    with pytest.raises(lake.LakeError, match="needs --warehouse"):
        lake.open_table("a.b", f"sqlite:///{tmp_path}/c.db")
    with pytest.raises(lake.LakeError, match="use sqlite"):
        lake.open_table("a.b", "mysql://x")


def test_bulk_job_commits_each_finished_run_once_through_a_kill(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from instant_openai import StandIn

    server = StandIn(delay_s=0.5)
    server.start()
    inp = tmp_path / "p.jsonl"
    inp.write_text("".join(json.dumps({"id": f"n{i}", "prompt": f"Write a note about item {i}.", "length": 120}) + "\n"
                           for i in range(12)))
    out, cat, wh = tmp_path / "out", f"sqlite:///{tmp_path}/catalog.db", tmp_path / "wh"
    cmd = [sys.executable, "-m", "ray_jobs.generate", "--input", str(inp), "--output", str(out),
           "--endpoint", f"http://127.0.0.1:{server.port}/v1", "--run-id", "lake", "--rows-per-file", "4",
           "--in-flight", "2", "--flush-interval-s", "1", "--table", "corpus.documents", "--catalog", cat,
           "--warehouse", str(wh)]
    ray_tmp = tempfile.mkdtemp(prefix="lwlake-")  # short: Ray's socket paths must fit in 107 bytes
    env = {**os.environ, "RAY_TMPDIR": ray_tmp}
    job = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 240
    while not list((out / "run_id=lake").glob("part-*.parquet")) and time.time() < deadline and job.poll() is None:
        time.sleep(0.2)
    assert job.poll() is None, job.stdout.read().decode()[-2000:]
    os.killpg(job.pid, signal.SIGKILL)  # some documents written, the run not finished
    job.wait()
    table = lake.open_table("corpus.documents", cat, str(wh))
    assert table.scan().to_arrow().num_rows == 0  # no commit before the run ends
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    t = table.refresh().scan().to_arrow()
    assert sorted(t["id"].to_pylist()) == sorted(f"n{i}" for i in range(12))  # exactly one row per id
    assert set(t["run_id"].to_pylist()) == {"lake"} and set(t["status"].to_pylist()) == {"ok"}
    summary = json.loads((out / "run_id=lake" / "_SUCCESS").read_text())
    assert summary["table"]["rows"] == 12 and summary["table"]["snapshot_id"] == table.current_snapshot().snapshot_id
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)  # nothing to do: same rows
    assert again.returncode == 0 and sorted(table.refresh().scan().to_arrow()["id"].to_pylist()) == sorted(t["id"].to_pylist())
    shutil.rmtree(ray_tmp, ignore_errors=True)
