"""`longwriter` as a user runs it: real subprocesses, real engine for the happy path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from console_check import foreign_lines
from core.length import count_words

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


def test_write_a_document_with_the_embedded_model(tmp_path):
    out = tmp_path / "doc.md"
    r = lw("write", "Write a 400-word essay about the smell of rain.", "--out", str(out), "--enforce-eager",
           "--record", str(tmp_path / "doc.json"), timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    words = count_words(out.read_text())
    # Mechanics of the CLI; length accuracy over many prompts is benchmarks/longbench_write.py's job
    # (CPU sampling is not seedable, so one document can miss by more than the average).
    assert abs(words - 400) <= 0.3 * 400, words
    # The summary line, wherever it is: at exit vLLM's worker processes may still print warnings.
    summary = [ln for ln in r.stderr.splitlines() if "words (target" in ln]
    assert summary, r.stderr[-2000:]
    last = summary[-1]
    assert f"{words} words (target 400, from instruction)" in last and f"wrote {out}" in last
    assert "tokens/s" in last
    # Quiet by default: only our lines on the terminal; vLLM's and the libraries' in the named log.
    assert not foreign_lines(r.stderr), foreign_lines(r.stderr)[:10]
    log_line = next(ln for ln in r.stderr.splitlines() if ln.startswith("[longwriter] vLLM, Ray and library output:"))
    log = Path(log_line.split("output: ", 1)[1].split(" (--verbose", 1)[0])
    assert "vllm" in log.read_text().lower()
    assert "[write] starting the vLLM engine for SmolLM2-135M-Instruct (eager mode" in r.stderr


def test_verbose_shows_library_output():
    r = lw("--verbose", "write", "x", "--model", "/nonexistent/model/dir")
    assert r.returncode != 0 and "[longwriter] vLLM, Ray and library output" not in r.stderr
    assert "error:" in r.stderr and "details:" not in r.stderr


def test_errors_name_the_log_by_default():
    r = lw("write", "x", "--model", "/nonexistent/model/dir")
    err = [ln for ln in r.stderr.splitlines() if "error:" in ln]
    assert len(err) == 1 and "(details: " in err[0] and "/logs/write-" in err[0]
