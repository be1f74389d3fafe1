"""`xtune list-cfg`: every recipe with the plugin that provides it, from registry metadata only.

This command must start fast: it reads the registry (plain data) and never imports torch,
transformers, mmengine, deepspeed or peft (a test checks this in a subprocess).
"""

from __future__ import annotations

import fnmatch
import json
import sys


def add_parser(subparsers, common):
    p = subparsers.add_parser("list-cfg", parents=[common], help="list recipes and the plugin providing each",
                              description="List every recipe with the plugin that provides it.")
    p.add_argument("-p", "--pattern",
                   help="case-insensitive substring or glob (e.g. 'qlora', 'llama3*_lora_*')")
    p.add_argument("--json", action="store_true", help="print a JSON list of objects")
    p.set_defaults(func=run)


def matches(name: str, pattern: str | None) -> bool:
    if not pattern:
        return True
    name, pattern = name.lower(), pattern.lower()
    if any(ch in pattern for ch in "*?["):
        return fnmatch.fnmatchcase(name, pattern)
    return pattern in name


def run(args) -> int:
    from xtune.plugins import get_registry

    recipes = sorted((r for r in get_registry().recipes if matches(r.name, args.pattern)),
                     key=lambda r: r.name)
    if args.json:
        fields = ("name", "plugin", "model", "family", "method", "dataset", "epochs", "template", "hub_id",
                  "path", "objective", "unsupported")
        json.dump([{f: getattr(r, f) for f in fields} for r in recipes], sys.stdout, indent=1,
                  ensure_ascii=False)
        sys.stdout.write("\n")
        return 0
    width = max((len(r.name) for r in recipes), default=0)
    for r in recipes:
        print(f"{r.name:<{width}}  {r.plugin}" + ("  (unsupported: see below)" if r.unsupported else ""))
    families = len({r.family for r in recipes})
    print(f"{len(recipes)} recipes, {families} model families", file=sys.stderr)
    for reason in sorted({r.unsupported for r in recipes if r.unsupported}):
        count = sum(r.unsupported == reason for r in recipes)
        print(f"unsupported ({count} recipes): {reason}", file=sys.stderr)
    return 0
