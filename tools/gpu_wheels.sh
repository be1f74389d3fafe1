#!/usr/bin/env bash
# Prepare what tools/gpu_check.sh needs on a lent GPU machine that reaches no package index: the Python
# wheels its image lacks (mmengine, datasets, bitsandbytes, trl, gguf and their small pure-Python needs;
# torch, transformers, peft, pyarrow, pandas come with the image) in .whl/, and the few files of the shared
# material the GPU benchmark reads in shared/. Both folders are git-ignored (.git/info/exclude) and travel
# with the working tree (under 64 MiB together).
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx "/.whl/" .git/info/exclude 2>/dev/null || echo "/.whl/" >> .git/info/exclude
grep -qx "/shared/" .git/info/exclude 2>/dev/null || echo "/shared/" >> .git/info/exclude
mkdir -p .whl
for spec in mmengine==0.10.7 addict yapf termcolor datasets==5.2.0 dill multiprocess trl==1.16.0 gguf==0.19.0 \
            bitsandbytes==0.50.2; do
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "$spec" 2>&1 \
        | grep -v "^WARNING: Location" || true
done
SHARED=${XTUNE_SHARED_DIR:-../shared}
mkdir -p shared/reference/tokenizers shared/data/alpaca
cp -r "$SHARED/reference/tokenizers/hf_qwen2_5" shared/reference/tokenizers/
cp "$SHARED/data/alpaca/llamafactory_alpaca_en_demo.json" shared/data/alpaca/
du -sh .whl shared
