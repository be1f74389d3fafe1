"""`xtune plugins`: each plugin, its version, the hooks it implements, what it registered, failures."""

from __future__ import annotations

import json
import sys


def add_parser(subparsers, common):
    p = subparsers.add_parser("plugins", parents=[common],
                              help="list installed plugins and what they provide",
                              description="List xtune's plugins (built-in and installed), their hooks, "
                                          "what each registered, and plugins that failed to load.")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run, warn_plugin_failures=False)  # failures are part of this command's output


def run(args) -> int:
    from xtune.plugins import get_plugin_system

    system = get_plugin_system()
    system.get_registry()  # fills in what each plugin registered, and registration failures
    infos = list(system.info.values())
    for line in system.warnings:
        print(f"Warning: {line}", file=sys.stderr)
    if args.json:
        json.dump([i.to_dict() for i in infos], sys.stdout, indent=1, ensure_ascii=False)
        sys.stdout.write("\n")
        return 0
    for info in infos:
        status = f"FAILED: {info.error}" if info.error else "ok"
        print(f"{info.name}  [{info.package} {info.version}]  {status}")
        if info.hooks:
            print(f"  hooks: {', '.join(info.hooks)}")
        for line in info.warnings:
            print(f"  warning: {line}")
        for kind, names in info.registered.items():
            shown = ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
            print(f"  {kind}: {shown}")
    return 0
