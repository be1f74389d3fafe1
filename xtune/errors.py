"""Errors that the CLI turns into one `Error: ...` line and an exit code.

A user mistake (unknown recipe, bad override, bad data) exits 2; a failure while running exits 1.
Library code raises these instead of printing, so the same checks serve the CLI and the tests.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class XtuneError(Exception):
    """Base class. `exit_code` is what the CLI exits with; `hint` is appended to the message."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(XtuneError):
    """The user asked for something that cannot work as asked: fix the command or the recipe."""

    exit_code = 2


class ConfigError(UsageError):
    """A recipe or an override is wrong. Several problems may be joined in one message."""


class DataError(UsageError):
    """A data file or record is wrong; the message names the file, the record and the field."""


class RegistryError(UsageError):
    """A lookup or registration in the plugin registry failed (unknown or duplicate name)."""


def closest(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """The candidates nearest to `name`, for 'did you mean' hints."""
    candidates = list(candidates)
    found = difflib.get_close_matches(name, candidates, n=n, cutoff=0.5)
    if len(found) < n:
        found += [c for c in candidates if name and name in c and c not in found][: n - len(found)]
    return found


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """A hint such as "did you mean: a, b?" or None when nothing is close."""
    found = closest(name, candidates)
    return f"did you mean: {', '.join(found)}?" if found else None
