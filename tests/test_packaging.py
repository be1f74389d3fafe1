"""Packaging: every xtune subpackage is listed in pyproject (recipes/ ships as xtune.recipes)."""

from __future__ import annotations

from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parent.parent


def test_every_subpackage_is_listed_in_pyproject():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "xtune").rglob("__init__.py")}
    assert found - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert config["package-dir"]["xtune.recipes"] == "recipes"


def test_constraints_pin_the_cpu_torch():
    pins = (REPO / "constraints.txt").read_text()
    assert "torch==2.13.0" in pins
