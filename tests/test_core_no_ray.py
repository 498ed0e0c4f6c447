"""core/ is plain Python: importing every module must not import Ray."""

import pkgutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_core_imports_no_ray():
    mods = ["core." + m.name for m in pkgutil.walk_packages([str(ROOT / "core")]) if not m.ispkg]
    mods += ["core.engines.base", "core.engines.openai_http", "core.engines.vllm_engine"]
    code = "import sys\n" + "".join(f"import {m}\n" for m in mods) + \
        "bad = [m for m in sys.modules if m == 'ray' or m.startswith('ray.')]\nassert not bad, bad\n"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-1500:]
    assert len(mods) >= 10


def test_private_ray_apis_only_in_the_adapter():
    """Ray's ``_internal`` modules are reached only through ray_jobs/ray_private.py (one file to
    re-check on a Ray upgrade)."""
    import re

    pattern = re.compile(r"^\s*(?:from|import)\s+ray[\w.]*\._internal|ray\.[\w.]*_internal\.", re.M)
    offenders = []
    for folder in ("core", "ray_jobs", "serve", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.name != "ray_private.py" and pattern.search(path.read_text()):
                offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, offenders
    assert pattern.search((ROOT / "ray_jobs" / "ray_private.py").read_text())
