"""`xtune copy-cfg NAME DIR`: write a recipe as an editable file, `NAME_copy.py` as in XTuner."""

from __future__ import annotations

from pathlib import Path

from xtune.errors import UsageError
from xtune.fileio import atomic_write_text


def add_parser(subparsers, common):
    p = subparsers.add_parser("copy-cfg", parents=[common], help="copy a recipe into DIR to edit it",
                              description="Copy a recipe to DIR/NAME_copy.py; `xtune train` accepts that "
                                          "path.")
    p.add_argument("name", metavar="NAME", help="recipe name (see `xtune list-cfg`)")
    p.add_argument("dir", metavar="DIR", help="destination folder (created if missing)")
    p.add_argument("--force", action="store_true", help="overwrite an existing copy")
    p.set_defaults(func=run)


def run(args) -> int:
    from xtune.plugins import get_registry
    from xtune.recipe_files import resolve_recipe

    source = resolve_recipe(args.name, get_registry())
    dest_dir = Path(args.dir)
    if dest_dir.exists() and not dest_dir.is_dir():
        raise UsageError(f"destination {args.dir!r} exists and is not a folder")
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / f"{source.stem}_copy.py"
    if dest.exists() and not args.force:
        raise UsageError(f"{dest} already exists", hint="pass --force to overwrite it")
    atomic_write_text(dest, source.read_text(encoding="utf-8"))  # never half a recipe
    print(f"Copied {source.stem} to {dest}")
    return 0
