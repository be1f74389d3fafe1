"""A recipe's `reward_funcs` turned into callables for online RL (`grpo`), and what they return checked.

A spec is a registered reward function's name (``"format"``), a dict whose `type` is one and whose other
keys are that function's settings (``dict(type="format", pattern=...)``), or a function of the user's own, by
import path (``"pkg.module:function"``) or by file (``"path/to/file.py:function"``, relative to the working
folder).
Every function is called the same way (docs/plugins.md, `register_reward_functions`): with keyword arguments
``prompts=``, ``completions=`` (as TRL does, so TRL reward functions work unchanged), ``completion_ids``,
``max_completion_length``, ``prompt_messages``, one list per record column, and its settings; it returns one
float per completion, or None where it does not apply. Mistakes surface when the recipe is resolved, before
any generation: an unknown name (with the closest ones), a setting the function does not take, a function that
cannot accept the record columns (no ``**kwargs``). What a function returns is checked on every call, so a
wrong length or a non-number is one error naming the function rather than a broken advantage downstream.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import math
import numbers
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xtune.data.prompt_formats import RESERVED_COLUMNS
from xtune.errors import ConfigError, DataError, RegistryError, UsageError, did_you_mean
from xtune.registry import import_object

# Keyword arguments every call receives besides the record columns: never settings, never columns a function
# "needs" (they are always there). The data layer refuses record columns of these names.
ALWAYS_GIVEN = RESERVED_COLUMNS
USER_PATH_HINT = "a function of your own is named 'pkg.module:function' or 'path/to/file.py:function'"


@dataclass
class RewardFn:
    """One resolved reward function. `name` is what the objective logs (``rewards/<name>/mean``), unique
    within a recipe; `needs` the record columns it reads; `settings` the recipe's keyword arguments for it."""

    name: str
    needs: tuple[str, ...] = ()
    function: Callable[..., Any] | None = field(default=None, repr=False)
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not callable(self.function):
            raise TypeError(f"RewardFn {self.name!r} needs a callable function, got {self.function!r}")

    def __call__(self, prompts: list[str], completions: list[str], **kwargs) -> list[float | None]:
        missing = [column for column in self.needs if column not in kwargs]
        if missing:
            given = sorted(k for k in kwargs if k not in ALWAYS_GIVEN)
            raise DataError(f"reward function {self.name!r} needs the record column(s) {', '.join(missing)}, "
                            "which the records do not have",
                            hint=f"columns the data set gives: {', '.join(given) or 'none'}")
        values = self.function(prompts=prompts, completions=completions, **{**kwargs, **self.settings})
        return check_values(self.name, values, len(completions))


def check_values(name: str, values, count: int) -> list[float | None]:
    """`values` as a list of `count` floats or None (NaN counts as None, as in TRL); anything else is one
    UsageError naming the function, the position and the value."""
    if hasattr(values, "tolist"):  # a tensor or an array
        values = values.tolist()
    if not isinstance(values, (list, tuple)):
        raise UsageError(f"reward function {name!r} returned a {type(values).__name__}, not a list of one "
                         f"float (or None) per completion")
    if len(values) != count:
        raise UsageError(f"reward function {name!r} returned {len(values)} values for {count} completions")
    out: list[float | None] = []
    for i, value in enumerate(values):
        if value is not None and not isinstance(value, numbers.Real):
            raise UsageError(f"reward function {name!r} returned {value!r} ({type(value).__name__}) for "
                             f"completion {i}, not a number or None")
        number = None if value is None or math.isnan(value) else float(value)
        if number is not None and math.isinf(number):
            raise UsageError(f"reward function {name!r} returned {value} for completion {i}: rewards must be "
                             "finite")
        out.append(number)
    return out


def resolve_reward_functions(specs, registry) -> list[RewardFn]:
    """The recipe's `reward_funcs` (one spec or a list of them) as RewardFns, in order. Using one function
    twice (two patterns of `format`) is allowed: the second is logged as ``<name>_2``."""
    if isinstance(specs, (str, dict)) or callable(specs):
        specs = [specs]
    if not specs:
        names = ", ".join(registry.reward_functions.names())
        raise ConfigError("reward_funcs is empty: name at least one reward function",
                          hint=f"registered: {names}; {USER_PATH_HINT}")
    resolved: list[RewardFn] = []
    for spec in specs:
        fn = _resolve_one(spec, registry)
        taken, base = {r.name for r in resolved}, fn.name
        if base in taken:
            fn.name = next(f"{base}_{i}" for i in range(2, len(resolved) + 2) if f"{base}_{i}" not in taken)
        resolved.append(fn)
    return resolved


def _resolve_one(spec, registry) -> RewardFn:
    settings: dict[str, Any] = {}
    kind = spec
    if isinstance(spec, dict):
        settings = dict(spec)
        kind = settings.pop("type", None)
    if callable(kind):
        name, function, needs = getattr(kind, "__name__", "reward"), kind, None
    elif not isinstance(kind, str) or not kind.strip():
        raise ConfigError(f"reward function {spec!r} is neither a registered name, dict(type=NAME, ...) nor "
                          "a function path", hint=USER_PATH_HINT)
    elif ":" in kind:
        name, function, needs = kind.rpartition(":")[2], load_user_function(kind), None
    else:
        name, function, needs = _registered(kind, registry)
    params = _parameters(name, function)
    if "registry" in params:
        settings.setdefault("registry", registry)
    _check_settings(name, function, params, settings)
    if needs is None:  # a function of the user's: the columns it takes without a default
        needs = tuple(p.name for p in params.values() if p.default is inspect.Parameter.empty
                      and p.name not in ALWAYS_GIVEN and p.name not in settings)
    return RewardFn(name=name, needs=tuple(needs), function=function, settings=settings)


def _registered(kind: str, registry) -> tuple[str, Callable, tuple[str, ...]]:
    table = registry.reward_functions
    if kind not in table:
        raise ConfigError(f"unknown reward function {kind!r}", hint=did_you_mean(kind, table.names())
                          or f"registered: {', '.join(table.names()) or 'none'}; {USER_PATH_HINT}")
    entry = table.get(kind)
    try:
        function = import_object(entry.function)
    except (ImportError, RegistryError) as exc:
        raise RegistryError(f"reward function {kind!r} (plugin {entry.plugin!r}) cannot be imported from "
                            f"{entry.function!r}: {exc}") from None
    if not callable(function):
        raise RegistryError(f"reward function {kind!r} (plugin {entry.plugin!r}): {entry.function!r} is not "
                            "callable")
    return entry.name, function, entry.needs


def load_user_function(path: str) -> Callable:
    """The function named by ``"pkg.module:function"`` or ``"path/to/file.py:function"``."""
    target, _, attr = path.rpartition(":")
    if not target or not attr:
        raise ConfigError(f"reward function {path!r} must look like 'pkg.module:function' or "
                          "'path/to/file.py:function'")
    if target.endswith(".py") or "/" in target or "\\" in target:
        module = _load_file(Path(target).expanduser())
        function = getattr(module, attr, None)
        if function is None:
            raise ConfigError(f"{target!r} has no function {attr!r}",
                              hint=did_you_mean(attr, [n for n in vars(module) if not n.startswith("_")]))
    else:
        try:
            function = import_object(path)
        except ImportError as exc:
            raise ConfigError(f"reward function {path!r}: cannot import {target!r}: {exc}",
                              hint="install its package, or name a file: 'path/to/file.py:function'") \
                from None
        except RegistryError as exc:
            raise ConfigError(exc.message) from None
    if not callable(function):
        raise ConfigError(f"reward function {path!r} is a {type(function).__name__}, not a function")
    return function


def _load_file(path: Path):
    """The module of a reward file, imported once per process under a name unique to its path."""
    if not path.is_file():
        raise ConfigError(f"reward function file {str(path)!r} does not exist",
                          hint=f"a relative path is read from the working folder {str(Path.cwd())!r}")
    path = path.resolve()
    name = f"xtune_reward_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:10]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before running it: dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise ConfigError(f"reward function file {str(path)!r} failed to import: {type(exc).__name__}: "
                          f"{exc}") from None
    return module


def _parameters(name: str, function: Callable) -> dict[str, inspect.Parameter]:
    """The function's named parameters; one without ``**kwargs`` is refused, since every call passes the
    record's columns, which differ from one data set to the next."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return {}  # a builtin without a signature: called as it is
    params = signature.parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        raise ConfigError(f"reward function {name!r} must accept **kwargs: it is called with "
                          f"{', '.join(ALWAYS_GIVEN)} and every record column")
    return {n: p for n, p in params.items()
            if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}


def _check_settings(name: str, function: Callable, params: dict, settings: dict) -> None:
    """Refuse settings the function does not take (each with the closest name), then let a function that
    carries a `check_settings` attribute refuse bad values before training starts."""
    accepted = [n for n in params if n not in ALWAYS_GIVEN]
    for key in settings:
        if key not in accepted:
            raise ConfigError(f"reward function {name!r} has no setting {key!r}", hint=did_you_mean(
                key, accepted) or f"its settings: {', '.join(accepted) or 'none'}")
    check = getattr(function, "check_settings", None)
    if callable(check):
        check(**settings)
