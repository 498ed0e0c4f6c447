"""Faults during the bulk job (real Ray, real vLLM on CPU): the job recovers instead of failing rows.

* The engine actor's vLLM engine process is SIGKILLed mid-run: the actor ends itself, Ray
  restarts it, its batches run again and every document resumes from its saved sections;
  0 failed rows, one row per id.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.dataset as pads
import pytest

ROOT = Path(__file__).resolve().parents[1]
TOPICS = ["tides", "bees", "bridges", "tea", "maps", "clocks"]


def engine_core_pids(ray_tmp: str) -> list[int]:
    """vLLM engine-core processes started under this job's own Ray (found by its RAY_TMPDIR)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if b"VLLM::EngineCore" not in (d / "cmdline").read_bytes() and \
                    "EngineCore" not in (d / "comm").read_text():
                continue
            if f"RAY_TMPDIR={ray_tmp}".encode() in (d / "environ").read_bytes():
                pids.append(int(d.name))
        except OSError:
            continue
    return pids


@pytest.mark.slow
def test_killed_engine_process_is_restarted_and_no_row_fails(tmp_path):
    inp = tmp_path / "prompts.jsonl"
    rows = [{"id": f"k{i}", "prompt": f"Write about {t}.", "length": 300} for i, t in enumerate(TOPICS)]
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    ray_tmp = f"/tmp/lwfault{os.getpid()}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_TMPDIR": ray_tmp}
    cmd = [sys.executable, "-m", "ray_jobs.generate", "--input", str(inp), "--output", str(out), "--run-id", "kill",
           "--rows-per-file", "2", "--in-flight", "6", "--enforce-eager", "--resample-tries", "0"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    state_dir = out / "_state" / "run_id=kill"
    killed = []
    try:
        deadline = time.time() + 400
        while time.time() < deadline and not killed:  # mid-run: a document has finished sections
            states = [json.loads(p.read_text()) for p in state_dir.glob("*.json")] if state_dir.exists() else []
            if any(s["sections"] for s in states):
                for pid in engine_core_pids(ray_tmp):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            assert proc.poll() is None, "job ended before the engine could be killed"
            time.sleep(0.5)
        assert killed, "no partial document / no engine process within 400 s"
        stdout, stderr = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        subprocess.run(["pkill", "-9", "-f", ray_tmp], capture_output=True)
    assert proc.returncode == 0, stderr[-2000:]
    t = pads.dataset(str(out / "run_id=kill"), format="parquet").to_table(columns=["id", "status", "error"]).to_pylist()
    assert sorted(r["id"] for r in t) == sorted(r["id"] for r in rows)  # one row per id
    assert all(r["status"] == "ok" for r in t), [r for r in t if r["status"] != "ok"]
