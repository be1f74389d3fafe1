#!/usr/bin/env bash
# Set up xtune in ./.venv on a fresh machine (CPU), offline except for the package registry.
#
# torch is installed first, pinned to the 2.13.0 CPU build: left to the resolver, peft / transformers /
# deepspeed would pull a newer CUDA torch and several GB of CUDA libraries. constraints.txt keeps every
# later install on the versions measured to work together (see ../shared/ENVIRONMENT.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
EXTRAS=${XTUNE_EXTRAS:-test,bench,serve,webui,lm-eval}  # bench: TRL, for tools/bench.py and its tests; serve:
# xtune serve; webui: xtune webui (Gradio); lm-eval: xtune eval --tasks and its test

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
.venv/bin/python -m pip install -q torch==2.13.0 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -m pip install -q -c constraints.txt -e ".[$EXTRAS]" -e plugins/xtune-tinyllama 2>&1 \
    | grep -v "^WARNING: Location" || true
# The web UI's browser tests drive Debian's chromium through Playwright (Playwright's own browser download
# cannot be reached from these machines). Installed where we may (root, apt); elsewhere they skip.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get install -y -q chromium >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; } \
        || echo "note: could not install chromium; the web UI's browser tests will skip" >&2
fi
.venv/bin/python -c "import torch, xtune; assert torch.__version__.startswith('2.13.0'), torch.__version__"
.venv/bin/python -m pip check >/dev/null
echo "xtune is set up in .venv (torch $(.venv/bin/python -c 'import torch; print(torch.__version__)'))"
