"""What a `longwriter` user sees: our own lines on the terminal, everything else in a log file.

vLLM, Ray, torch and transformers print dozens of warnings at start-up, from the main process
and from the engine processes vLLM spawns, through Python logging, ``warnings`` and plain C
``fprintf``. No set of logger levels reaches all of them, so by default the CLI points file
descriptor 2 (inherited by every child process) at a log file, keeps a private copy of the
real terminal for its own progress lines, and names the log on the first line. ``--verbose``
(or ``LONGWRITER_DEBUG=1``) leaves everything on the terminal. Errors are always shown: the
CLI prints each as one line, with the log's path for the details.

Code that is not run through the CLI (tests, library use) writes to ``sys.stderr`` as usual:
:func:`stream` is ``sys.stderr`` until :func:`hide_third_party_output` runs.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TextIO

from core.config import longwriter_home
from core.redact import redact

_stream: TextIO | None = None
_log_path: Path | None = None
_saved_fd: int | None = None
_verbose = False  # set by start() for `longwriter --verbose`


def stream() -> TextIO:
    """Where `longwriter`'s own progress and messages go (the real terminal)."""
    return _stream if _stream is not None else sys.stderr


def log_path() -> Path | None:
    """The file holding third-party output, or None when it goes to the terminal."""
    return _log_path


def say(msg: str) -> None:
    """One line of ours on the terminal (credentials in it masked: core.redact)."""
    print(redact(msg), file=stream(), flush=True)


def verbose_requested(flag: bool = False) -> bool:
    return flag or os.environ.get("LONGWRITER_DEBUG", "") not in ("", "0")


def start(command: str, verbose: bool) -> None:
    """The CLI's set-up: quiet by default (third-party output to a log file), or verbose."""
    global _verbose
    _verbose = verbose
    # vLLM logs to stdout by default; stdout may carry the document (`write` without --out).
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    if verbose:
        os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
        return
    quiet_environment()
    log = hide_third_party_output(command)
    say(f"[longwriter] vLLM, Ray and library output: {log} (--verbose shows it here)")


def worker_logs_to_driver() -> bool:
    """Ray's ``log_to_driver``: only when verbose (otherwise they stay in Ray's session logs;
    Ray prints some of them to stdout, which may carry a document or a summary)."""
    return _verbose or verbose_requested()


def hide_third_party_output(command: str) -> Path:
    """Send fd 2 (this process and all its children) to a log file; keep the terminal for us."""
    global _stream, _log_path
    if _log_path is not None:
        return _log_path
    logs = longwriter_home() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    path = logs / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    sys.stderr.flush()
    global _saved_fd
    terminal = os.dup(2)
    _saved_fd = os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 2)
    os.close(fd)
    _stream = os.fdopen(terminal, "w", buffering=1, encoding="utf-8", errors="replace")
    _log_path = path
    return path


def end() -> None:
    """Put fd 2 back (the CLI calls this when a command returns: `main([...])` run in-process,
    as tests do, must not leave the caller's stderr pointing at a log file)."""
    global _stream, _log_path, _saved_fd
    if _saved_fd is None:
        return
    sys.stderr.flush()
    if _stream is not None:
        _stream.flush()
        _stream.close()
    os.dup2(_saved_fd, 2)
    os.close(_saved_fd)
    _stream, _log_path, _saved_fd = None, None, None


def quiet_environment() -> None:
    """Settings read by libraries at import: fewer lines even inside the log file."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TQDM_MININTERVAL", "0.5")
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
