"""Files and folders that readers see complete or not at all, and the few rules about paths xtune shares.

A kill during a plain write leaves a truncated file (a `last_checkpoint` pointer that resume then
follows, a recipe copy that no longer parses, a half-saved model that `from_pretrained` loads). Every
writer in xtune therefore writes into a temporary sibling and renames it over the target when done:
the rename is atomic on one file system, so the target holds the old content or the new, never half.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from xtune.errors import UsageError


def cache_dir(kind: str) -> Path:
    """xtune's cache folder for `kind` (datasets, models, hardware): $XTUNE_CACHE_DIR, else ~/.cache/xtune."""
    root = os.environ.get("XTUNE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "xtune")
    return Path(root) / kind


def looks_local(text: str, suffixes: Iterable[str] = ()) -> bool:
    """Whether a string from the user names a local file or folder rather than a hub id.

    It does when it exists, starts like a path (`.`, `/`, `~`) or ends with one of `suffixes` (a data or
    recipe file type). `org/name` alone is a hub id: hub ids contain a slash too.
    """
    text = str(text)
    return (os.path.exists(os.path.expanduser(text)) or text.startswith((".", "/", "~"))
            or Path(text).suffix.lower() in tuple(suffixes))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_sibling(path: str | os.PathLike, folder: bool = False) -> Path:
    """A new, empty temporary file or folder beside `path` (same file system, so a rename is atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if folder:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the result should look like any folder
        return tmp
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(name, 0o666 & ~_umask())
    return Path(name)


def commit(tmp: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Move the finished `tmp` over `path`. An existing folder at `path` is moved aside first and deleted
    only after the rename, so a failure in between leaves the old folder (or the new one) in place."""
    tmp, path = Path(tmp), Path(path)
    old = None
    if path.is_dir() and not path.is_symlink():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, folder: bool = False, keep_existing: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write `path`'s content to; on success it replaces `path` (with
    `keep_existing`, a `path` that another process completed meanwhile wins and ours is dropped), on any
    failure (an exception, Ctrl-C) it is removed and `path` is left as it was."""
    tmp = temp_sibling(path, folder=folder)
    try:
        yield tmp
        if keep_existing and Path(path).exists():
            shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
        else:
            commit(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` through a synced temporary file in the same folder."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


def _relation(out: Path, source: Path) -> str | None:
    """How an output path would destroy an input: 'is', 'contains' or 'lies inside' (None: it would not)."""
    if out == source:
        return "is"
    if out in source.parents:
        return "contains"
    if source in out.parents:
        return "lies inside"
    return None


def check_output(out: str | os.PathLike, force: bool, inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """OUT as a Path, checked before any heavy work: an existing OUT needs `force` and must be a folder,
    and OUT may never be, contain or lie inside one of the command's local `inputs`, not even with
    `force` (replacing OUT would delete what the command reads)."""
    out = Path(out).expanduser()
    resolved = _refuse_destroying_inputs(out, inputs)
    if resolved == Path.cwd().resolve() or resolved in Path.cwd().resolve().parents:
        raise UsageError(f"output {str(out)!r} is the current folder (or holds it); refusing to replace it",
                         hint="name a new folder for the output")
    _check_parent(out)
    if out.exists() and not force:
        raise UsageError(f"output folder {str(out)!r} already exists", hint="pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise UsageError(f"output {str(out)!r} exists and is not a folder")
    return out


def _refuse_destroying_inputs(out: Path, inputs: Iterable[str | os.PathLike]) -> Path:
    """OUT resolved, unless it is, contains or lies inside one of the local `inputs` (a usage error)."""
    resolved = out.resolve()
    for source in inputs:
        if source is None or not looks_local(str(source)):
            continue  # a hub id: nothing local to destroy
        relation = _relation(resolved, Path(source).expanduser().resolve())
        if relation:
            raise UsageError(f"output {str(out)!r} {relation} the input {str(source)!r}: writing it would "
                             "destroy the input, so it is refused even with --force",
                             hint="choose an output folder outside the inputs")
    return resolved


def check_output_file(out: str | os.PathLike, force: bool, suffix: str,
                      inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """`check_output` for a single-file output (a GGUF): it must end in `suffix` and not be a folder."""
    out = Path(out).expanduser()
    if out.suffix != suffix:
        raise UsageError(f"output {str(out)!r} must end in {suffix}",
                         hint=f"e.g. {out.with_suffix(suffix).name}")
    _refuse_destroying_inputs(out, inputs)
    _check_parent(out)
    if out.is_dir():
        raise UsageError(f"output {str(out)!r} is a folder; give a file name ending in {suffix}")
    if out.exists() and not force:
        raise UsageError(f"output file {str(out)!r} already exists", hint="pass --force to replace it")
    return out


def _check_parent(out: Path) -> None:
    """The folder OUT goes in must be a writable folder (or be creatable in one)."""
    parent = out.parent
    while not parent.exists() and parent.parent != parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"output {str(out)!r}: {str(parent)!r} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"output {str(out)!r}: the folder {str(parent)!r} is not writable")


@contextlib.contextmanager
def atomic_output_dir(out: str | os.PathLike, force: bool = False,
                      inputs: Iterable[str | os.PathLike] = ()) -> Iterator[Path]:
    """Yield a temporary folder to write an export into; on success it becomes `out` (replacing an old one
    only with `force`, and only once the new one is complete), on failure it is removed."""
    out = check_output(out, force, inputs)
    with atomic_path(out, folder=True) as tmp:
        yield tmp
