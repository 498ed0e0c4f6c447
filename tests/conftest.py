"""Shared fixtures: a real moto S3 server on 127.0.0.1, one real vLLM engine per session."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LONGBENCH = ROOT.parent / "shared" / "data" / "longbench-write"

os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 endpoint (real HTTP S3 API) with a bucket named "lwtest"; yields env-style settings."""
    port = free_port()
    exe = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    import boto3

    # moto accepts any key; a unique secret lets tests prove it reaches no log file.
    secret = f"lw-secret-{uuid.uuid4().hex}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": secret, "AWS_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": endpoint}
    deadline = time.time() + 90  # moto imports slowly on a busy 2-core machine
    while time.time() < deadline:
        try:
            boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                         aws_secret_access_key=secret, region_name="us-east-1").create_bucket(Bucket="lwtest")
            break
        except Exception:
            time.sleep(0.3)
    else:
        proc.kill()
        raise RuntimeError("moto_server did not start")
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield {"endpoint": endpoint, **env}
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def embedded_model() -> str:
    from core.models import embedded_model_dir

    return str(embedded_model_dir())


@pytest.fixture(scope="session")
def event_loop_thread():
    """One asyncio loop in a background thread for the whole session (the engine lives on it)."""
    import threading

    loop = asyncio.new_event_loop()
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)


@pytest.fixture(scope="session")
def vllm_engine(embedded_model, event_loop_thread):
    """The real vLLM engine (CPU) on the embedded model, started once (enforce_eager: ~15 s)."""
    from core.config import EngineConfig
    from core.engines.vllm_engine import VLLMEngine

    eng = VLLMEngine(embedded_model, EngineConfig(enforce_eager=True, max_num_seqs=32), model_name="smollm2")

    async def start():
        eng.start()

    asyncio.run_coroutine_threadsafe(start(), event_loop_thread).result()
    yield eng
    asyncio.run_coroutine_threadsafe(eng.close(), event_loop_thread).result(timeout=60)


@pytest.fixture(scope="session")
def run_on_engine(event_loop_thread):
    """Run a coroutine on the engine's loop and wait for it."""

    def run(coro, timeout=600):
        return asyncio.run_coroutine_threadsafe(coro, event_loop_thread).result(timeout=timeout)

    return run
