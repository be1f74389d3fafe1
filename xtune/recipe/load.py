"""Loading a recipe file into an mmengine Config, with `--cfg-options` applied (`xtune.recipe.overrides`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xtune.errors import ConfigError
from xtune.recipe.overrides import Override, parse_overrides, rewrite_source, set_nested
from xtune.recipe.settings import ENGINE_SETTINGS


def load_recipe(path: str | Path, options: list[str] | None = None, extra: dict[str, Any] | None = None):
    """The recipe at `path` as an mmengine Config, with `options` ("key=value") and `extra` applied.

    `extra` holds values from dedicated flags (`--seed`); they are applied like top-level overrides.
    Engine settings missing from the recipe are filled with their defaults.
    """
    from mmengine.config import Config

    path = Path(path)
    overrides = parse_overrides(list(options or []))
    overrides += [Override(k, repr(v), v) for k, v in (extra or {}).items()]
    top = [o for o in overrides if "." not in o.key]
    dotted = [o for o in overrides if "." in o.key]
    text, problems = rewrite_source(path.read_text(encoding="utf-8"), top, filename=str(path))
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
    return cfg


