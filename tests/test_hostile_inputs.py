"""Hostile input: every record of tests/data/hostile/ becomes one valid row or one failed row
naming where it is and why, and the job never dies on one (exit 1: it ran and reports failures;
2 would mean it did not run). Flags, URIs and the model are checked before anything starts, and
a credential in an endpoint URL reaches no file the job writes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.dataset as pads
import pytest

from core.inputs import FAILED_ID_PREFIX, read_prompts
from hostile_inputs import DIR, add_large

ROOT = Path(__file__).resolve().parents[1]
EXE = str(Path(sys.executable).with_name("longwriter"))
EXPECTED = json.loads((DIR / "_expected.json").read_text())


def lw(*args: str, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture()
def hostile(tmp_path) -> Path:
    folder = tmp_path / "hostile"
    shutil.copytree(DIR, folder)
    add_large(folder)
    return folder


def _want_failed() -> dict[str, str]:
    return {f["where"]: f["reason"] for f in EXPECTED["failed"] + EXPECTED["large"]}


def test_the_set_has_thirty_classes():
    inputs = [p for p in DIR.rglob("*") if p.is_file() and not p.name.startswith("_") and p.suffix != ".txt"]
    assert len(inputs) + 2 >= 30  # + the two large ones written at test time


def test_every_record_is_one_row_with_the_right_status(hostile):
    good, bad = read_prompts(str(hostile))
    assert sorted(g.id for g in good) == sorted(EXPECTED["ok"] + EXPECTED["large_ok"])
    got = {e.where: e.reason for e in bad}
    assert len(got) == len(bad)  # one row per record
    want = _want_failed()
    assert set(got) == set(want)
    for where, fragment in want.items():
        assert fragment in got[where], (where, got[where])
        assert "\n" not in got[where] and len(got[where]) < 200
    ids = [g.id for g in good] + [e.id for e in bad]
    assert len(set(ids)) == len(ids), "a failed row shares an id"
    assert all(e.id.startswith(FAILED_ID_PREFIX) for e in bad)
    assert not any(g.id.startswith(FAILED_ID_PREFIX) for g in good)


def test_failed_ids_do_not_move_when_lines_are_added_elsewhere(hostile):
    before = {e.where.split(":")[0] + ":" + e.reason: e.id for e in read_prompts(str(hostile))[1]}
    f = hostile / "prompts.jsonl"
    f.write_bytes(b'{"id": "new-first-line", "prompt": "Write 30 words on tea."}\n\n' + f.read_bytes())
    after = {e.where.split(":")[0] + ":" + e.reason: e.id for e in read_prompts(str(hostile))[1]}
    assert after == before


def test_rich_parquet_metadata_is_kept_as_documented(hostile):
    good, _ = read_prompts(str(hostile / "rich_types.parquet"))
    meta = {g.id: g.metadata for g in good}["pq-rich-1"]
    assert meta["ts"] == "2024-05-01T12:30:00+00:00" and meta["naive_ts"] == "2024-05-01T12:30:00"
    assert meta["day"] == "2024-05-01" and meta["price"] == "12.34"
    assert meta["blob"] == {"$base64": "AP8="} and meta["took"] == 90.0
    assert meta["tags"] == ["a", "b"] and meta["point"] == {"x": 1.5, "y": "NaN"}
    assert meta["attrs"] == [["k", 1]]
    json.dumps(meta, allow_nan=False)


@pytest.mark.parametrize("args, needle", [
    (["--doc-retries", "-1"], "doc_retries (--doc-retries) must be >= 0, got -1"),
    (["--in-flight", "0"], "must be >= 1"),
    (["--top-p", "1.5"], "top_p (--top-p) must be <= 1"),
    (["--mode", "poem"], "must be one of agentwrite, direct"),
    (["--output", "s3:/lwtest/c"], "malformed S3 URI"),
    (["--output", "s3://"], "names no bucket"),
    (["--output", "gs://b/c"], "unsupported URI scheme"),
    (["--model", "/no/such/model"], "no directory at /no/such/model"),
    (["--model", "nobody/no-such-model-xyz"], "nobody/no-such-model-xyz"),
    (["--endpoint", "ftp://host/v1"], "is not an http(s)"),
])
def test_bad_flags_and_uris_fail_in_one_line_before_ray_starts(tmp_path, args, needle):
    (tmp_path / "p.jsonl").write_text('{"prompt": "Write 30 words."}\n')
    base = {"--input": str(tmp_path / "p.jsonl"), "--output": str(tmp_path / "out")}
    for k in list(base):
        if k in args:
            base.pop(k)
    t0 = time.time()
    r = lw("generate", *[x for kv in base.items() for x in kv], *args, timeout=120)
    assert r.returncode == 2, r.stderr[-800:]
    lines = [ln for ln in r.stderr.splitlines() if "error:" in ln]
    assert len(lines) == 1 and needle in lines[0], r.stderr[-800:]
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.parquet"))
    assert time.time() - t0 < 60  # no Ray, no engine: seconds (generous for a loaded CI machine)


@pytest.mark.slow
def test_hostile_folder_through_the_cli(hostile, tmp_path):
    """The real `longwriter generate` over the whole set: exit 1, one row per record, every good row written."""
    out = tmp_path / "out"
    r = lw("generate", "--input", str(hostile), "--output", str(out), "--run-id", "hostile", "--mode", "direct",
           "--enforce-eager", "--kv-cache-gib", "1", "--rows-per-file", "32", timeout=900)
    assert r.returncode == 1, r.stderr[-3000:]
    rows = pads.dataset(str(out / "run_id=hostile"), format="parquet").to_table().to_pylist()
    want_failed = _want_failed()
    assert len(rows) == len(EXPECTED["ok"]) + len(EXPECTED["large_ok"]) + len(want_failed)
    # Every good row was generated (target_source "row": it passed validation); the embedded
    # model may still botch one ("the model wrote no words"), which is not an input failure.
    generated = {x["id"]: x for x in rows if x["target_source"] == "row"}
    assert sorted(generated) == sorted(EXPECTED["ok"] + EXPECTED["large_ok"])
    ok = {i: x for i, x in generated.items() if x["status"] == "ok"}
    assert len(ok) >= 0.9 * len(generated), [(i, x["error"]) for i, x in generated.items() if i not in ok]
    for x in ok.values():
        assert x["text"].strip() and x["word_count"] > 0 and x["target_words"] == 30
        json.loads(x["metadata"])
    failed = {x["error"].split(": ", 1)[0]: x for x in rows if x["target_source"] != "row"}
    assert set(failed) == set(want_failed)
    for where, fragment in want_failed.items():
        assert fragment in failed[where]["error"]
    assert json.loads(generated["pq-rich-1"]["metadata"])["price"] == "12.34"
    manifest = json.loads((out / "run_id=hostile" / "_SUCCESS").read_text())
    assert manifest["failed"] == len(rows) - len(ok) and manifest["ok"] == len(ok)


@pytest.mark.slow
def test_endpoint_credential_reaches_no_file_the_job_writes(tmp_path):
    """A fake credential in --endpoint (nothing listens there, so every document fails and its
    error quotes the endpoint) appears in no output row, manifest, our log, or Ray's session logs."""
    import os
    import tempfile
    import uuid

    from conftest import free_port

    secret = f"FAKECRED{uuid.uuid4().hex[:12]}"
    (tmp_path / "p.jsonl").write_text('{"id": "a", "prompt": "Write 30 words on tea."}\n'
                                      '{"id": "b", "prompt": "Write 30 words on rain."}\n')
    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths have a length limit
    home = tmp_path / "home"
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "LONGWRITER_HOME": str(home)}
    endpoint = f"http://user:{secret}@127.0.0.1:{free_port()}/v1?api_key={secret}"
    r = lw("generate", "--input", str(tmp_path / "p.jsonl"), "--output", str(tmp_path / "out"), "--endpoint", endpoint,
           "--model", "m", "--doc-retries", "0", env=env, timeout=300)
    try:
        assert r.returncode == 1, r.stderr[-2000:]
        assert secret not in r.stdout + r.stderr
        rows = pads.dataset(str(tmp_path / "out"), format="parquet").to_table().to_pylist()
        assert len(rows) == 2 and all(x["status"] == "failed" and "127.0.0.1" in x["error"] for x in rows)
        written = [p for p in [*(tmp_path / "out").rglob("*"), *home.rglob("*"), *Path(ray_tmp).rglob("*")]
                   if p.is_file() and not p.is_symlink()]
        assert any(p.name == "_SUCCESS" for p in written) and any(p.suffix == ".log" for p in written)
        hits = [str(p) for p in written if secret.encode() in p.read_bytes()]
        assert not hits, hits
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
