"""`ray job submit` against a real two-node Ray cluster started on this machine.

A head node and a second node (each `ray start`, two logical CPUs and a custom resource each; one engine actor
per node leaves a CPU per node for Ray Data's own tasks) form the
cluster; the generation job is submitted with a working_dir, runs one engine actor per node,
and must write exactly the documents the input defines (same ids and count as a single-node
run, which tests/test_generate.py covers).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.dataset as pads
import pytest

from core.inputs import read_prompts
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def sh(*args: str, env: dict, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.fixture
def two_node_cluster(tmp_path):
    tmp = Path("/tmp") / f"lw2n{os.getpid()}"  # short: Ray's socket paths have a length limit
    env = {**os.environ, "RAY_TMPDIR": str(tmp), "RAY_AUTH_MODE": "disabled",
           "PATH": f"{BIN}:{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    gcs, dash = free_port(), free_port()
    r = sh(str(BIN / "ray"), "start", "--head", f"--port={gcs}", "--num-cpus=2", "--num-gpus=0",
           "--resources", json.dumps({"node_head": 1}), "--include-dashboard=true",
           f"--dashboard-port={dash}", "--dashboard-host=127.0.0.1", env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    r = sh(str(BIN / "ray"), "start", f"--address=127.0.0.1:{gcs}", "--num-cpus=2", "--num-gpus=0",
           "--resources", json.dumps({"node_worker": 1}), env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    yield {"env": env, "gcs": f"127.0.0.1:{gcs}", "dashboard": f"http://127.0.0.1:{dash}"}
    # Only this cluster's processes (their command lines name its temp dir): `ray stop` would
    # stop every Ray instance on the machine, another job's or test's included.
    subprocess.run(["pkill", "-9", "-f", str(tmp)], capture_output=True)


def test_job_submit_runs_engines_on_both_nodes(two_node_cluster, tmp_path):
    c = two_node_cluster
    inp = tmp_path / "prompts.jsonl"
    rows = [{"id": f"n{i}", "prompt": f"Write a short note about {t}.", "length": 80}
            for i, t in enumerate(["dew", "fog", "hail", "sleet", "frost", "mist"])]
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json\n")
    out = tmp_path / "out"
    for _ in range(60):  # the job server comes up a little after `ray start` returns
        if sh(str(BIN / "ray"), "job", "list", "--address", c["dashboard"], env=c["env"]).returncode == 0:
            break
        time.sleep(1)
    runtime_env = {"excludes": [".venv", ".git", "out", "*.egg-info"],
                   "env_vars": {"VLLM_LOGGING_LEVEL": "WARNING"}}
    r = sh(str(BIN / "ray"), "job", "submit", "--address", c["dashboard"], "--working-dir", ".",
           "--runtime-env-json", json.dumps(runtime_env), "--",
           sys.executable, "-m", "ray_jobs.generate", "--input", str(inp), "--output", str(out),
           "--run-id", "multi", "--engines", "2", "--engine-num-cpus", "1", "--rows-per-file", "3",
           "--enforce-eager", "--kv-cache-gib", "1", env=c["env"], timeout=900)
    # Exit 1: the job ran and reports the one bad row as failed (0 would hide it, 2 = did not run).
    assert "failed with" in r.stdout + r.stderr or r.returncode != 0
    t = pads.dataset(str(out / "run_id=multi"), format="parquet").to_table().to_pylist()
    good, bad = read_prompts(str(inp))
    assert sorted(x["id"] for x in t) == sorted([g.id for g in good] + [b.id for b in bad])
    assert sum(x["status"] == "ok" for x in t) == len(good) == 6
    assert (out / "run_id=multi" / "_SUCCESS").exists()

    from ray.util.state import list_actors

    actors = [a for a in list_actors(address=c["gcs"], detail=True, limit=1000)
              if "DocumentStage" in (a.class_name or "")]
    assert len({a.node_id for a in actors}) == 2, [(a.class_name, a.node_id) for a in actors]
