"""Checking an objective's settings where they are given, so a typo is one error naming the closest name."""

from __future__ import annotations

from xtune.errors import ConfigError, closest


def choose(name: str, setting: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"objective {name!r}: {setting}={value!r} is not one of "
                          f"{', '.join(map(str, allowed))}")


def positive(name: str, setting: str, value, *, zero: bool = False, below: float | None = None) -> float:
    """`value` as a float, or a ConfigError: a number > 0 (>= 0 with `zero`), and < `below` when given."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not (value >= 0 if zero else value > 0) or (below is not None and value >= below):
        wanted = "a non-negative" if zero else "a positive"
        raise ConfigError(f"objective {name!r}: {setting}={value!r} must be {wanted} number"
                          + (f" below {below}" if below is not None else ""))
    return float(value)


def unknown(name: str, settings: dict, allowed) -> None:
    """Refuse settings the objective does not know, echoing each with the closest known names."""
    extra = [k for k in settings if k not in allowed]
    if extra:
        detail = "; ".join(f"{k!r}" + (f" (did you mean {', '.join(closest(k, allowed))}?)"
                                       if closest(k, allowed) else "") for k in extra)
        raise ConfigError(f"objective {name!r} has unknown settings: {detail}",
                          hint=f"accepted: {', '.join(sorted(allowed)) or 'none'}")
