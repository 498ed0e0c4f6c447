"""The bulk job end to end: real Ray Data, real vLLM (CPU), a real S3 endpoint (moto server)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pytest

from core.config import AgentWriteConfig, EngineConfig, GenerateConfig, StorageConfig
from core.records import DOCUMENT_SCHEMA

ROOT = Path(__file__).resolve().parents[1]
TOPICS = ["tides", "bees", "bridges", "tea", "maps", "clocks", "rivers", "owls", "salt", "glass", "kites", "moss"]

BAD_LINES = [
    b'{"id": "bad-json", "prompt": "unterminated',  # malformed JSON
    b'{"id": "no-prompt", "length": 100}',  # missing prompt
    b'{"id": "empty-prompt", "prompt": "   "}',  # empty prompt
    b'{"id": "latin1", "prompt": "caf\xe9 au lait"}',  # not UTF-8
    b'{"id": "good-00", "prompt": "A different prompt reusing an id"}',  # duplicate id
    b'{"id": "neg", "prompt": "Write about ants.", "length": -5}',  # negative length
    b'{"id": "huge", "prompt": "Write about ants.", "length": 10000000}',  # absurd length
]


def good_rows():
    return [{"id": f"good-{i:02d}", "prompt": f"Write a short note about {t}.", "length": 90 + 10 * (i % 3),
             "source": "test", "rank": i} for i, t in enumerate(TOPICS)]


@pytest.fixture(scope="module")
def s3_run(s3_server):
    """One job: 12 good prompts plus one of each bad-row class, S3 in, S3 out."""
    import boto3

    body = b"\n".join([json.dumps(r).encode() for r in good_rows()] + BAD_LINES) + b"\n"
    s3 = boto3.client("s3", endpoint_url=s3_server["endpoint"])
    s3.put_object(Bucket="lwtest", Key="in/prompts.jsonl", Body=body)
    from ray_jobs.generate import run_generate

    gcfg = GenerateConfig(input="s3://lwtest/in/prompts.jsonl", output="s3://lwtest/corpus", run_id="t1",
                          in_flight=16, rows_per_file=8)
    summary = run_generate(gcfg, EngineConfig(enforce_eager=True), AgentWriteConfig(), StorageConfig(),
                           progress=False)
    return summary


def _s3fs(s3_server):
    return pafs.S3FileSystem(endpoint_override=s3_server["endpoint"].split("://")[1], scheme="http",
                             access_key="testing", secret_key=s3_server["AWS_SECRET_ACCESS_KEY"], region="us-east-1")


def test_s3_output_readable_by_lake_tools(s3_run, s3_server, tmp_path):
    fs = _s3fs(s3_server)
    ds = pads.dataset("lwtest/corpus", filesystem=fs, format="parquet", partitioning="hive")
    t = ds.to_table()
    assert set(t.column("run_id").to_pylist()) == {"t1"}
    assert t.drop_columns(["run_id"]).schema.equals(DOCUMENT_SCHEMA, check_metadata=False)
    rows = {r["id"]: r for r in t.to_pylist()}
    ok = [r for r in rows.values() if r["status"] == "ok"]
    assert len(ok) == 12 and len(rows) == 12 + len(BAD_LINES)
    for r in ok:
        assert r["word_count"] > 30 and r["text"]
        assert r["messages"][0]["content"] == r["prompt"] and r["messages"][1]["content"] == r["text"]
        assert json.loads(r["metadata"])["source"] == "test"
        assert r["generated_tokens"] > 0 and r["calls"][0]["kind"] == "plan"
    # Files of sensible size: one per batch, not one per row.
    files = [f for f in ds.files]
    assert 2 <= len(files) <= 4
    # The manifest is written last and agrees with the data.
    manifest = json.loads(fs.open_input_stream("lwtest/corpus/run_id=t1/_SUCCESS").read())
    assert manifest["ok"] == 12 and manifest["failed"] == len(BAD_LINES) == s3_run["failed"]
    assert manifest["schema_version"] == DOCUMENT_SCHEMA.metadata[b"longwriter.schema_version"].decode()

    import duckdb

    con = duckdb.connect()
    con.register("docs", ds)
    n, words = con.execute("select count(*), sum(word_count) from docs where status = 'ok'").fetchone()
    assert n == 12 and words == sum(r["word_count"] for r in ok)

    # datasets reads the same Parquet (copied down: the `datasets` S3 path needs s3fs, not installed).
    local = tmp_path / "copy"
    local.mkdir()
    for f in files:
        (local / Path(f).name).write_bytes(fs.open_input_stream(f).read())
    import datasets

    hf = datasets.load_dataset("parquet", data_files=str(local / "*.parquet"), split="train")
    assert hf.num_rows == len(rows)
    sample = next(r for r in hf if r["status"] == "ok")
    assert sample["messages"] == [{"role": "user", "content": sample["prompt"]},
                                  {"role": "assistant", "content": sample["text"]}]


def test_every_bad_row_is_one_error_row(s3_run, s3_server):
    t = pads.dataset("lwtest/corpus/run_id=t1", filesystem=_s3fs(s3_server), format="parquet").to_table()
    failed = [r for r in t.to_pylist() if r["status"] == "failed"]
    reasons = " | ".join(sorted(r["error"] for r in failed))
    for needle in ["malformed JSON", "field 'prompt' is missing", "field 'prompt' is empty", "not valid UTF-8",
                   "duplicate id 'good-00'", "outside 1..", "outside 1.."]:
        assert needle in reasons, (needle, reasons)
    assert len(failed) == len(BAD_LINES)
    assert all("\n" not in r["error"] and r["error"].startswith("prompts.jsonl:") for r in failed)
    ids = t.column("id").to_pylist()
    assert len(ids) == len(set(ids))


def test_secret_reaches_no_ray_log(s3_run, s3_server):
    """The S3 secret went to the engine actors by value, not through a runtime_env Ray logs."""
    logs = Path(os.environ.get("RAY_TMPDIR", "/tmp/ray")) / "session_latest" / "logs"
    assert logs.is_dir() and any(logs.glob("runtime_env*")), logs
    secret = s3_server["AWS_SECRET_ACCESS_KEY"].encode()
    hits = [str(p) for p in logs.rglob("*") if p.is_file() and secret in p.read_bytes()]
    assert not hits, hits


def test_rerun_is_a_no_op(s3_run, s3_server):
    from ray_jobs.generate import run_generate

    gcfg = GenerateConfig(input="s3://lwtest/in/prompts.jsonl", output="s3://lwtest/corpus", run_id="t1")
    before = pads.dataset("lwtest/corpus/run_id=t1", filesystem=_s3fs(s3_server), format="parquet").files
    summary = run_generate(gcfg, EngineConfig(enforce_eager=True), AgentWriteConfig(), progress=False)
    after = pads.dataset("lwtest/corpus/run_id=t1", filesystem=_s3fs(s3_server), format="parquet").files
    assert sorted(before) == sorted(after)
    assert summary["documents"] == 12 + len(BAD_LINES)


def test_crash_mid_run_then_resume(tmp_path):
    """SIGKILL the job (and the Ray it started) mid-run; the rerun finishes without duplicates."""
    inp = tmp_path / "prompts.jsonl"
    rows = [{"id": f"c{i}", "prompt": f"Write about {t}.", "length": 120 if i % 2 else 380}
            for i, t in enumerate(TOPICS[:8])]
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "ray_jobs.generate", "--input", str(inp), "--output", str(out),
           "--run-id", "crash", "--rows-per-file", "2", "--in-flight", "8", "--enforce-eager"]
    # Its own Ray temp dir: after the kill, leftovers of *this* job's Ray are found by that path
    # (``ray stop`` would also stop the Ray instance this pytest process is attached to).
    ray_tmp = Path("/tmp") / f"lwcrash{os.getpid()}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_TMPDIR": str(ray_tmp)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_dir, state_dir = out / "run_id=crash", out / "_state" / "run_id=crash"
    deadline = time.time() + 400
    try:
        while time.time() < deadline:
            parts = list(run_dir.glob("part-*.parquet"))
            states = [json.loads(p.read_text()) for p in state_dir.glob("*.json")] if state_dir.exists() else []
            if parts and any(s["sections"] for s in states):
                break
            assert proc.poll() is None, "job ended before it could be interrupted"
            time.sleep(0.5)
        else:
            pytest.fail("no finished file and no partial document within 400 s")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the job and everything in its session: a crash
        proc.wait()
        subprocess.run(["pkill", "-9", "-s", str(proc.pid)], capture_output=True)
        subprocess.run(["pkill", "-9", "-f", str(ray_tmp)], capture_output=True)
        time.sleep(2)
    before = {p.name: p.read_bytes() for p in run_dir.glob("part-*.parquet")}
    partial = {}
    for p in state_dir.glob("*.json"):
        s = json.loads(p.read_text())
        if s["sections"]:
            partial[p.stem.split("--")[0]] = [sec["text"] for sec in s["sections"]]  # ID--input digest
    assert before and partial

    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    for name, data in before.items():  # finished documents untouched
        assert (run_dir / name).read_bytes() == data
    t = pads.dataset(str(run_dir), format="parquet").to_table()
    ids = t.column("id").to_pylist()
    assert len(ids) == len(set(ids)) == len(rows)
    assert set(t.column("status").to_pylist()) == {"ok"}
    by_id = {r["id"]: r for r in t.to_pylist()}
    for doc_id, texts in partial.items():  # resumed from the last finished section
        assert [s["text"] for s in by_id[doc_id]["sections"]][: len(texts)] == texts
    assert (run_dir / "_SUCCESS").exists()
    assert not list(state_dir.glob("*.json"))
