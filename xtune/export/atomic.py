"""Output folders that appear complete or not at all.

Every export (pth_to_hf, merge, GGUF -> HF) writes into a hidden temporary folder beside OUT and renames
it into place only when everything is written, so an interrupted run (Ctrl-C, kill, a full disk) never
leaves a half-written model that a later `from_pretrained` would load. An existing OUT is replaced only
when the caller says so (`--force`), and then only after the new folder is complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from xtune.errors import UsageError


def check_output(out: str | Path, force: bool) -> Path:
    """OUT as a Path; an existing OUT without `force` is a usage error (checked before any heavy work)."""
    out = Path(out).expanduser()
    if out.exists() and not force:
        raise UsageError(f"output folder {str(out)!r} already exists", hint="pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise UsageError(f"output {str(out)!r} exists and is not a folder")
    return out


@contextlib.contextmanager
def atomic_output_dir(out: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder to write into; on success it becomes `out`, on any failure it is removed.

    The temporary folder sits in OUT's parent so the final `os.replace` is a rename on one file system.
    With `force`, a previous OUT is moved aside first and deleted after the rename succeeds.
    """
    out = check_output(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the result should look like any other folder
    try:
        yield tmp
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
