"""Faults during the bulk job (real Ray, real vLLM on CPU): the job recovers instead of failing rows.

* On S3, behind a proxy: S3 refuses connections for 20 s (storage calls back off and retry),
  then the actor's vLLM engine process is SIGKILLed (the actor ends itself, Ray restarts it, its
  batches run again, written documents are skipped and the others resume from their saved
  sections): 0 failed rows, one row per id.
* The state folder turns into a file mid-run: only the documents that could not save their
  state fail, each saying why; the job finishes.
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


class FlakyProxy:
    """A TCP proxy in front of moto that can refuse every connection for a while (an S3 outage;
    restarting moto itself would lose its data)."""

    def __init__(self, upstream_port: int):
        import socket
        import threading

        self._socket, self._threading = socket, threading
        self.upstream = upstream_port
        self.port = self._listen(0)
        self.conns: list = []
        self.down = False

    def _listen(self, port: int) -> int:
        s = self._socket.socket()
        s.setsockopt(self._socket.SOL_SOCKET, self._socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen(64)
        self.listener = s
        self._threading.Thread(target=self._accept, args=(s,), daemon=True).start()
        return s.getsockname()[1]

    def _accept(self, s) -> None:
        while True:
            try:
                client, _ = s.accept()
            except OSError:
                return
            try:
                up = self._socket.create_connection(("127.0.0.1", self.upstream))
            except OSError:
                client.close()
                continue
            self.conns += [client, up]
            for a, b in ((client, up), (up, client)):
                self._threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a, b) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for x in (a, b):
                try:
                    x.close()
                except OSError:
                    pass

    def outage(self, seconds: float) -> None:
        """Refuse connections (and cut open ones) for ``seconds``, then serve again on the same port."""
        self.listener.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass
        self.conns = []
        time.sleep(seconds)
        self._listen(self.port)


@pytest.mark.slow
def test_s3_outage_then_killed_engine_no_row_fails(s3_server, tmp_path):
    """One job on S3 (through the proxy) meets two faults: S3 refuses every connection for 20 s,
    then the engine's vLLM process is SIGKILLed. The job ends with exit 0, one ok row per id."""
    import boto3
    import pyarrow.fs as pafs

    proxy = FlakyProxy(int(s3_server["endpoint"].rsplit(":", 1)[1]))
    s3 = boto3.client("s3", endpoint_url=s3_server["endpoint"])
    rows = [{"id": f"f{i}", "prompt": f"Write about {t}.", "length": 400} for i, t in enumerate(TOPICS[:6])]
    s3.put_object(Bucket="lwtest", Key="faults/in.jsonl", Body="".join(json.dumps(r) + "\n" for r in rows).encode())
    ray_tmp = f"/tmp/lwfault{os.getpid()}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_TMPDIR": ray_tmp,
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}"}
    cmd = [sys.executable, "-m", "ray_jobs.generate", "--input", "s3://lwtest/faults/in.jsonl",
           "--output", "s3://lwtest/faults/out", "--run-id", "faults", "--rows-per-file", "2", "--in-flight", "6",
           "--enforce-eager", "--resample-tries", "0"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)

    def state_keys() -> list[str]:
        listed = s3.list_objects_v2(Bucket="lwtest", Prefix="faults/out/_state/")
        return [o["Key"] for o in listed.get("Contents", [])]

    killed: list[int] = []
    try:
        deadline = time.time() + 400
        while not state_keys():  # mid-run: resume state is being saved to S3
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.time() < deadline, "no resume state on S3 within 400 s"
            time.sleep(0.5)
        proxy.outage(20)
        while not killed:  # then: a document has finished sections; kill the engine under it
            with_sections = [k for k in state_keys() if k.endswith(".json") and json.loads(
                s3.get_object(Bucket="lwtest", Key=k)["Body"].read() or b"{}").get("sections")]
            if with_sections:
                for pid in engine_core_pids(ray_tmp):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            assert proc.poll() is None, "job ended before the engine could be killed"
            assert time.time() < deadline + 300, "no engine process to kill"
            time.sleep(0.5)
        stdout, stderr = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        subprocess.run(["pkill", "-9", "-f", ray_tmp], capture_output=True)
    assert proc.returncode == 0, stderr[-2000:]
    fs = pafs.S3FileSystem(endpoint_override=s3_server["endpoint"].split("://")[1], scheme="http",
                           access_key="testing", secret_key=s3_server["AWS_SECRET_ACCESS_KEY"], region="us-east-1")
    t = pads.dataset("lwtest/faults/out/run_id=faults", filesystem=fs, format="parquet").to_table(
        columns=["id", "status", "error"]).to_pylist()
    assert sorted(r["id"] for r in t) == sorted(r["id"] for r in rows)  # one row per id
    assert all(r["status"] == "ok" for r in t), [r for r in t if r["status"] != "ok"]


@pytest.mark.slow
def test_broken_state_folder_fails_only_the_affected_documents(tmp_path):
    """The state folder becomes a file mid-run (root ignores read-only modes): the job finishes,
    documents that could not save their state are failed rows saying why, the others are ok."""
    inp = tmp_path / "prompts.jsonl"
    rows = [{"id": f"s{i}", "prompt": f"Write about {t}.", "length": 200} for i, t in enumerate(TOPICS[:3])]
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    ray_tmp = f"/tmp/lwstate{os.getpid()}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_TMPDIR": ray_tmp}
    cmd = [sys.executable, "-m", "ray_jobs.generate", "--input", str(inp), "--output", str(out), "--run-id", "st",
           "--rows-per-file", "4", "--in-flight", "4", "--enforce-eager", "--resample-tries", "0"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    state_dir = out / "_state" / "run_id=st"
    try:
        deadline = time.time() + 400
        while time.time() < deadline:
            if state_dir.exists() and list(state_dir.glob("*.json")):
                break
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            time.sleep(0.2)
        else:
            pytest.fail("no resume state within 400 s")
        import shutil

        shutil.rmtree(state_dir)
        state_dir.write_text("not a folder")
        stdout, stderr = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        subprocess.run(["pkill", "-9", "-f", ray_tmp], capture_output=True)
    assert proc.returncode == 1, stderr[-2000:]  # the job ran; some rows failed
    t = pads.dataset(str(out / "run_id=st"), format="parquet").to_table(columns=["id", "status", "error"]).to_pylist()
    assert sorted(r["id"] for r in t) == sorted(r["id"] for r in rows)
    failed = [r for r in t if r["status"] != "ok"]
    assert failed and all("could not save its resume state" in r["error"] for r in failed), failed
