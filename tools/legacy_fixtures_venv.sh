#!/usr/bin/env bash
# Create the throwaway transformers-4.x venv used ONLY by tools/make_legacy_fixtures.py to regenerate
# tests/assets/legacy/ (tiny checkpoints + golden outputs of the legacy trust_remote_code families:
# InternLM v1, InternLM2, ChatGLM3, Baichuan-7B, Baichuan2-7B/13B).
#
#   bash tools/legacy_fixtures_venv.sh            # -> /work/tf4venv
#   TF4VENV=/tmp/tf4 bash tools/legacy_fixtures_venv.sh
#
# The venv lives OUTSIDE the repo and is not used by xtune or its tests: those run on transformers 5.
#
# Why transformers 4.40.2: all six hub modelling codes run under it unmodified, generation with the KV
# cache included. ChatGLM3's Dec-2023 modeling_chatglm.py calls
# GenerationMixin._extract_past_from_model_output(outputs, standardize_cache_format=...) and reads the
# legacy tuple cache; InternLM v1/InternLM2/Baichuan index past_key_values[0][0]. 4.40 still hands legacy
# tuples to remote code that does not opt in to Cache classes. Checked: 4.41.2 writes byte-identical
# weights and goldens; 4.44.2 breaks ChatGLM3 generation (standardize_cache_format no longer accepted).
# Baichuan2's tokenization_baichuan.py needs an outside init-order workaround on any transformers >= 4.34
# (done by the generator). Override the version with TF4_TRANSFORMERS_VERSION.
#
# torch is installed FIRST and then pinned (constraints file) to the local 2.13.0 CPU wheel so that pip
# never resolves another torch. einops is a real dependency (modeling_internlm2.py imports it).
# xformers (hard-imported by Baichuan-7B's code) and bitsandbytes (imported by Baichuan2's quantizer.py)
# are NOT installed: the generator puts tiny stub packages on sys.path while that code loads
# (see tests/assets/legacy/README.md).
set -euo pipefail
VENV=${TF4VENV:-/work/tf4venv}
PYTHON=${PYTHON:-python3.11}
TRANSFORMERS_VERSION=${TF4_TRANSFORMERS_VERSION:-4.40.2}
export PIP_DISABLE_PIP_VERSION_CHECK=1

REPO=$(cd "$(dirname "$0")/.." && pwd)
case "$(realpath -m "$VENV")/" in
    "$REPO"/*) echo "refusing to create the venv inside the repo: $VENV" >&2; exit 1;;
esac

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi

# pip install, quiet; this machine's pip config prints one "Location ... is ignored" warning per package.
pip_install() {
    local log
    log=$(mktemp)
    if ! "$VENV/bin/python" -m pip install -q "$@" >"$log" 2>&1; then
        grep -v "^WARNING: Location" "$log" >&2 || true
        rm -f "$log"
        exit 1
    fi
    grep -v "^WARNING: Location" "$log" || true
    rm -f "$log"
}

CONSTRAINTS=$(mktemp)
trap 'rm -f "$CONSTRAINTS"' EXIT
cat >"$CONSTRAINTS" <<EOF
torch==2.13.0
transformers==$TRANSFORMERS_VERSION
tokenizers>=0.19,<0.20
huggingface_hub<0.24
numpy<2
safetensors<0.5
accelerate<0.31
sentencepiece<0.3
einops<0.9
protobuf<8
EOF

# 1. torch first, from the local CPU wheel (pip's find-links), nothing else.
pip_install torch==2.13.0
# 2. everything else, with torch held by the constraints file.
pip_install -c "$CONSTRAINTS" \
    "transformers==$TRANSFORMERS_VERSION" sentencepiece protobuf safetensors accelerate numpy einops

"$VENV/bin/python" - <<'EOF'
import torch, transformers, sentencepiece
assert torch.__version__.startswith("2.13.0"), torch.__version__
assert transformers.__version__.startswith("4."), transformers.__version__
print(f"tf4 venv ready: torch {torch.__version__}, transformers {transformers.__version__}, "
      f"sentencepiece {sentencepiece.__version__}")
EOF
