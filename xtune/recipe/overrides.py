"""`--cfg-options KEY=VALUE` overrides: parsed, checked against the recipe, applied where they count.

Recipes define flat settings at the top (`lr = 2e-4`) and reference them in nested sections
(`optimizer=dict(lr=lr)`). Overriding the evaluated config would miss those copies (XTuner's overrides
of `lr` or `max_length` silently do), so a top-level override rewrites the assignment in the recipe
*source* before it is evaluated (`rewrite_source`). Dotted keys (`model.gradient_checkpointing=False`)
then set nested fields of the evaluated config (`set_nested`). A key given twice keeps its last value, as
argparse does. Every problem is collected and reported together.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any

from xtune.errors import ConfigError, closest
from xtune.recipe.settings import ENGINE_SETTINGS, OPTIONAL_KEYS


@dataclass
class Override:
    key: str
    raw: str
    value: Any = field(default=None)


def parse_overrides(items: list[str]) -> list[Override]:
    """`["lr=1e-4", "model.gradient_checkpointing=False"]` -> Overrides with Python values.

    Values are read as Python literals (numbers, True/False/None, lists, dicts, quoted strings); anything
    else is a plain string, so `data_path=./my.json` needs no quotes.
    """
    out, bad = [], []
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            bad.append(item)
            continue
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        out.append(Override(key, raw, value))
    if bad:
        raise ConfigError(f"--cfg-options expects KEY=VALUE, got {', '.join(map(repr, bad))}")
    empty = [o.key for o in out if o.raw.strip() == "" and _names_a_path(o.key)]
    if empty:
        raise ConfigError(f"--cfg-options {', '.join(k + '=' for k in empty)}: an empty path (an unset "
                          "shell variable?)",
                          hint="give a path, or leave the option out to keep the recipe's")
    return last_wins(out)


def last_wins(overrides: list[Override]) -> list[Override]:
    """One override per key, the last one given (a key given twice must not edit one setting twice)."""
    by_key = {o.key: o for o in overrides}
    return [o for o in overrides if by_key[o.key] is o]


def _names_a_path(key: str) -> bool:
    last = key.rsplit(".", 1)[-1]
    return last.endswith(("_path", "_dir", "_file", "_folder", "name_or_path"))


def type_problem(key: str, old: Any, new: Any) -> str | None:
    """A message when `new` cannot replace `old` (bool vs number, number vs string, ...), else None."""
    if old is None or new is None:
        return None
    if isinstance(old, bool) or isinstance(new, bool):
        ok = isinstance(old, bool) and isinstance(new, bool)
    elif isinstance(old, (int, float)):
        ok = isinstance(new, (int, float)) and (isinstance(old, float) or isinstance(new, int))
    elif isinstance(old, (list, tuple)):
        ok = isinstance(new, (list, tuple))
    elif isinstance(old, dict):  # a whole section replaced (mmengine's ConfigDict by a dict literal)
        ok = isinstance(new, dict)
    else:
        ok = isinstance(new, type(old))
    if ok:
        return None
    return (f"{key}={new!r}: expected {_article(type(old).__name__)} like the recipe's {old!r}, "
            f"got {_article(type(new).__name__)}")


def _top_level_assignments(tree: ast.Module) -> dict[str, ast.Assign]:
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            found[node.targets[0].id] = node  # the last assignment is the one that counts
    return found


def _literal(node: ast.AST) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError:
        return _NOT_LITERAL


_NOT_LITERAL = object()


def rewrite_source(text: str, overrides: list[Override], filename: str = "<recipe>") -> tuple[str, list[str]]:
    """Apply top-level overrides to the recipe source. Returns (new text, problems)."""
    try:
        tree = ast.parse(text, filename=filename)
    except SyntaxError as exc:
        raise ConfigError(f"{filename}:{exc.lineno}: recipe is not valid Python: {exc.msg}") from None
    assigns = _top_level_assignments(tree)
    lines = text.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    edits: list[tuple[int, int, str]] = []
    appended: list[str] = []
    problems: list[str] = []
    for ov in last_wins(overrides):
        if ov.key in assigns:
            node = assigns[ov.key].value
            old = _literal(node)
            if old is not _NOT_LITERAL and (msg := type_problem(ov.key, old, ov.value)):
                problems.append(msg)
                continue
            start = offsets[node.lineno - 1] + _char_col(lines[node.lineno - 1], node.col_offset)
            end = offsets[node.end_lineno - 1] + _char_col(lines[node.end_lineno - 1], node.end_col_offset)
            edits.append((start, end, repr(ov.value)))
        elif ov.key in ENGINE_SETTINGS:
            if msg := type_problem(ov.key, ENGINE_SETTINGS[ov.key], ov.value):
                problems.append(msg)
                continue
            appended.append(f"{ov.key} = {ov.value!r}  # --cfg-options\n")
        else:
            names = list(assigns) + list(ENGINE_SETTINGS)
            hint = closest(ov.key, names)
            problems.append(f"unknown setting {ov.key!r}" +
                            (f" (did you mean: {', '.join(hint)}?)" if hint
                             else " (see the recipe's settings)"))
    for start, end, new in sorted(edits, reverse=True):
        text = text[:start] + new + text[end:]
    if appended:
        text = text.rstrip("\n") + "\n\n" + "".join(appended)
    return text, problems


def _char_col(line: str, byte_col: int) -> int:
    """ast columns count UTF-8 bytes; string slicing counts characters."""
    return len(line.encode("utf-8")[:byte_col].decode("utf-8", errors="ignore"))


def set_nested(cfg, key: str, value: Any, open_sections: tuple[str, ...] = ("method_cfg",)) -> str | None:
    """Set `a.b.c` in an evaluated config; returns a problem message or None.

    Every part must already exist, except a new last key inside an `open_sections` section (method
    settings are merged over the tuning method's defaults, which the recipe need not list), or one of the
    keys a section reads with a default (`OPTIONAL_KEYS`: `train_dataset.skip_bad_records`).
    """
    parts = key.split(".")
    node = cfg
    for i, part in enumerate(parts[:-1]):
        container = node
        node = _child(container, part)
        if node is _MISSING:
            return _unknown(".".join(parts[: i + 1]), container, parts[:i])
        if not isinstance(node, (dict, list, tuple)) and not hasattr(node, "keys"):
            return f"{key}: {'.'.join(parts[: i + 1])} is a {type(node).__name__}, not a section"
    last = parts[-1]
    old = _child(node, last)
    if old is _MISSING:
        if len(parts) == 2 and (parts[0] in open_sections or last in OPTIONAL_KEYS.get(parts[0], ())):
            if msg := type_problem(key, ENGINE_SETTINGS.get(last), value):
                return msg
            node[last] = value
            return None
        return _unknown(key, node, parts[:-1])
    if msg := type_problem(key, old, value):
        return msg
    if isinstance(node, (list, tuple)):
        if isinstance(node, tuple):
            return f"{key}: cannot set an item of a tuple; override the whole setting instead"
        node[int(last)] = value
    else:
        node[last] = value
    return None


_MISSING = object()


def _child(node, part: str):
    if isinstance(node, (list, tuple)):
        return node[int(part)] if part.isdigit() and int(part) < len(node) else _MISSING
    if hasattr(node, "keys") and part in node:
        return node[part]
    return _MISSING


def _unknown(key: str, container, prefix: list[str]) -> str:
    names = [".".join(prefix + [str(k)]) for k in (container.keys() if hasattr(container, "keys") else [])]
    hint = closest(key, names)
    return f"unknown setting {key!r}" + (f" (did you mean: {', '.join(hint)}?)" if hint else "")


def _article(word: str) -> str:
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"
