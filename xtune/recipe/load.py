"""Loading a recipe file into an mmengine Config, with `--cfg-options` applied (`xtune.recipe.overrides`)."""

from __future__ import annotations

import ast
import logging
from pathlib import Path
from typing import Any

from xtune.errors import ConfigError, closest
from xtune.recipe.overrides import Override, parse_overrides, rewrite_source, set_nested
from xtune.recipe.settings import ALIASES, ENGINE_SETTINGS, SECTIONS

log = logging.getLogger("xtune")


def load_recipe(path: str | Path, options: list[str] | None = None, extra: dict[str, Any] | None = None):
    """The recipe at `path` as an mmengine Config, with `options` ("key=value") and `extra` applied.

    `extra` holds values from dedicated flags (`--seed`); they are applied like top-level overrides.
    Engine settings missing from the recipe are filled with their defaults.
    """
    path = Path(path)
    return load_recipe_text(path.read_text(encoding="utf-8"), str(path), options, extra)


def load_recipe_text(source: str, filename: str, options: list[str] | None = None,
                     extra: dict[str, Any] | None = None):
    """`load_recipe` for a recipe given as text (e.g. the one a checkpoint stores); `filename` names it
    in error messages."""
    from mmengine.config import Config

    path = filename
    overrides = parse_overrides(list(options or []))
    overrides += [Override(k, repr(v), v) for k, v in (extra or {}).items()]
    top = [o for o in overrides if "." not in o.key]
    dotted = [o for o in overrides if "." in o.key]
    text, problems = rewrite_source(source, top, filename=filename)
    if problems:
        raise ConfigError("; ".join(problems))
    try:
        cfg = Config.fromstring(text, ".py")
    except Exception as exc:  # a recipe that fails to evaluate: name the file
        raise ConfigError(
            f"{path}: recipe failed to load after overrides: {type(exc).__name__}: {exc}") from None
    problems = [msg for o in dotted if (msg := set_nested(cfg, o.key, o.value))]
    if problems:
        raise ConfigError("; ".join(problems))
    for key, default in ENGINE_SETTINGS.items():
        cfg.setdefault(key, default)
    for name, hint in unread_settings(text):
        log.warning("Warning: %s sets %r, which nothing in it reads%s", filename, name,
                    f" (did you mean {hint}?)" if hint else "")
    object.__setattr__(cfg, "_xtune_source", text)  # mmengine's own `cfg.text` prefixes a temp file name
    return cfg


def unread_settings(text: str) -> list[tuple[str, str | None]]:
    """Top-level settings a recipe assigns but neither uses nor is read by the engine — typos such as
    `lerning_rate = 1e-5` — each with the closest setting xtune knows (or None)."""
    tree = ast.parse(text)
    assigned = [n.targets[0].id for n in tree.body if isinstance(n, ast.Assign) and len(n.targets) == 1
                and isinstance(n.targets[0], ast.Name)]
    read = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    known = set(SECTIONS) | set(ENGINE_SETTINGS) | read
    out = []
    for name in dict.fromkeys(assigned):
        if name in known or name.startswith("_"):
            continue
        alias = closest(name, ALIASES, n=1)
        near = closest(name, sorted(known), n=1)
        hint = (f"{ALIASES[alias[0]]} (xtune's name for {alias[0]})" if alias and ALIASES[alias[0]] != name
                else near[0] if near else None)
        out.append((name, hint))
    return out


def recipe_source(cfg) -> str:
    """The recipe's text after the top-level overrides (what `load_recipe_text` loads again)."""
    return object.__getattribute__(cfg, "_xtune_source")


