"""`longwriter` as a user runs it: real subprocesses, real engine for the happy path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]
EXE = str(Path(sys.executable).with_name("longwriter"))


def lw(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def one_line_error(r: subprocess.CompletedProcess, needle: str) -> None:
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if "error:" in ln]
    assert len(lines) == 1 and needle in lines[0], r.stderr[-1500:]
    assert "Traceback" not in r.stderr


def test_help_explains_flags():
    r = lw("write", "--help")
    assert r.returncode == 0
    for flag in ("--length", "--model", "--out", "--endpoint", "--words-per-section", "--kv-cache-gib"):
        assert flag in r.stdout


def test_empty_instruction():
    one_line_error(lw("write", "  "), "empty instruction")


def test_unknown_model_says_where_it_looked(tmp_path):
    missing = tmp_path / "no-such-model"
    one_line_error(lw("write", "Write 100 words.", "--model", str(missing)), str(missing))


def test_unreachable_endpoint():
    one_line_error(lw("write", "Write 100 words.", "--endpoint", "http://127.0.0.1:9/v1", "--model", "m"),
                   "cannot reach")


def test_instruction_longer_than_context():
    one_line_error(lw("write", "Write 200 words on this: " + "lorem ipsum " * 5000), "too long")


def test_debug_shows_traceback():
    r = lw("--debug", "write", "x", "--model", "/nonexistent/model/dir")
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_verbose_shows_library_output():
    r = lw("--verbose", "write", "x", "--model", "/nonexistent/model/dir")
    assert r.returncode != 0 and "[longwriter] vLLM, Ray and library output" not in r.stderr
    assert "error:" in r.stderr and "details:" not in r.stderr


def test_errors_name_the_log_by_default():
    r = lw("write", "x", "--model", "/nonexistent/model/dir")
    err = [ln for ln in r.stderr.splitlines() if "error:" in ln]
    assert len(err) == 1 and "(details: " in err[0] and "/logs/write-" in err[0]


def test_in_process_main_gives_stderr_back(tmp_path):
    """`main([...])` called in-process (as tests and the module entry points do) hides third-party
    output only while the command runs: fd 2 is the same file again afterwards."""
    import os

    from ray_jobs.cli import main

    before = os.fstat(2)
    assert main(["write", "x", "--model", str(tmp_path / "missing")]) == 2
    after = os.fstat(2)
    assert (before.st_dev, before.st_ino) == (after.st_dev, after.st_ino)
