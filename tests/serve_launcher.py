"""`longwriter serve` in a child process, for the tests and benchmarks that need a live app.

Test tooling, not product code: it kills what it started with ``pkill -9 -f`` on its private
temp dir, which only a test harness may do.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import yaml

from core.redact import redact

ROOT = Path(__file__).resolve().parents[1]


def _free_ports(n: int) -> list[int]:
    """``n`` distinct free ports (all held open at once while chosen)."""
    import socket

    socks = [socket.socket() for _ in range(n)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


@contextlib.contextmanager
def launched(config: dict[str, Any], *, extra_args: tuple[str, ...] = (), env: dict[str, str] | None = None,
             ready_timeout: float = 600.0, cluster_env: dict[str, str] | None = None) -> Iterator[dict[str, Any]]:
    """`longwriter serve` in a child process with its own Ray (for tests and benchmarks).

    ``config`` is a Serve config (serve/config.yaml's format). The child gets a short private
    RAY_TMPDIR (Ray's socket paths must stay under 108 bytes) so it never joins another
    cluster, and everything it started is killed on exit. ``env`` is added to the child's
    environment only. With ``cluster_env`` (a dict, may be empty) a Ray head is started first
    (`ray start --head` on 127.0.0.1, private ports and temp dir, this environment plus
    ``cluster_env`` but never $LONGWRITER_API_KEY) and the child joins it through
    RAY_ADDRESS, as against an existing cluster. Yields base_url, log, tmp and, with a head,
    address and dashboard.
    """
    tmp = Path(tempfile.mkdtemp(prefix="lws", dir="/tmp"))
    (tmp / "serve.yaml").write_text(yaml.safe_dump(config))
    log_path = tmp / "serve.log"
    secrets = tuple(v for k, v in (env or {}).items() if "KEY" in k.upper() and v)
    child_env = {**os.environ, **(env or {}), "RAY_TMPDIR": str(tmp)}
    child_env.pop("RAY_ADDRESS", None)
    root = ROOT
    info: dict[str, str] = {}
    procs: list[subprocess.Popen] = []
    try:
        if cluster_env is not None:
            head, info = _start_head(tmp, cluster_env)
            procs.append(head)
            child_env["RAY_ADDRESS"] = info["address"]
        with open(log_path, "w") as log:
            proc = subprocess.Popen([sys.executable, "-m", "ray_jobs.cli", "serve", "--config",
                                     str(tmp / "serve.yaml"), *extra_args], cwd=root, env=child_env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        procs.insert(0, proc)  # stopped first: it shuts Serve down on the head
        _wait_ready(proc, log_path, ready_timeout, secrets)
        http = config.get("http_options") or {}
        yield {"base_url": f"http://127.0.0.1:{http.get('port', 8000)}", "log": log_path, "tmp": tmp, **info}
    finally:
        _stop(procs, tmp)


def _start_head(tmp: Path, cluster_env: dict[str, str]) -> tuple[subprocess.Popen, dict[str, str]]:
    """`ray start --head` on 127.0.0.1 with private ports and temp dir; never given the API key."""
    head_env = {**os.environ, **cluster_env, "RAY_TMPDIR": str(tmp)}
    for k in ("RAY_ADDRESS", "LONGWRITER_API_KEY"):
        head_env.pop(k, None)
    flags = ("ray-client-server-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
             "metrics-export-port", "runtime-env-agent-port", "node-manager-port", "object-manager-port")
    gcs, dash, *rest = _free_ports(2 + len(flags))
    ports = dict(zip(flags, rest))
    head_log = tmp / "head.log"
    with open(head_log, "w") as hlog:
        head = subprocess.Popen(
            [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", f"--port={gcs}",
             "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
             *(f"--{k}={v}" for k, v in ports.items()), f"--temp-dir={tmp}", "--disable-usage-stats"],
            cwd=ROOT, env=head_env, stdout=hlog, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 180
    while "Ray runtime started" not in head_log.read_text():
        if head.poll() is not None or time.time() > deadline:
            head.kill()
            raise RuntimeError(f"ray start --head failed:\n{head_log.read_text()[-3000:]}")
        time.sleep(1)
    return head, {"address": f"127.0.0.1:{gcs}", "dashboard": f"http://127.0.0.1:{dash}"}


def _wait_ready(proc: subprocess.Popen, log_path: Path, timeout: float, secrets: tuple[str, ...]) -> None:
    deadline = time.time() + timeout
    while "[serve] ready" not in log_path.read_text():
        if proc.poll() is not None:
            raise RuntimeError(redact(f"longwriter serve exited with {proc.returncode}:\n"
                                      f"{log_path.read_text()[-3000:]}", secrets))
        if time.time() > deadline:
            raise RuntimeError(redact(f"not ready in {timeout:.0f} s:\n{log_path.read_text()[-3000:]}", secrets))
        time.sleep(2)


def _stop(procs: list[subprocess.Popen], tmp: Path) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
    # Whatever Ray started for this run has its private temp dir on its command line.
    subprocess.run(["pkill", "-9", "-f", str(tmp)], capture_output=True)
