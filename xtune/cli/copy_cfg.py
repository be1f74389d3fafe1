"""`xtune copy-cfg NAME DIR`: write a recipe as an editable file, `NAME_copy.py` as in XTuner."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from xtune.errors import UsageError


def add_parser(subparsers, common):
    p = subparsers.add_parser("copy-cfg", parents=[common], help="copy a recipe into DIR to edit it",
                              description="Copy a recipe to DIR/NAME_copy.py; `xtune train` accepts that path.")
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
    # Write beside the target and rename, so an interrupted copy never leaves half a recipe.
    fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(source.read_text(encoding="utf-8"))
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    print(f"Copied {source.stem} to {dest}")
    return 0
