"""Pictures checked by decoding them, once: a verdict per file, kept by path, file size and mtime.

Pillow's quick open and `verify()` read a file's header and structure only: a JPEG cut short in its scan
data passes both and fails at step N of training. So every picture is decoded in full where records are
checked, and its pixel count is held against Pillow's own limit (a 20000 x 20000 picture is refused by a
plain `Image.open` as a decompression bomb, with no file named). Decoding costs milliseconds a picture,
which a 665k-record data set feels: verdicts are remembered in the process, and the good ones on disk
(`$XTUNE_CACHE_DIR/pictures/verdicts.sqlite`), keyed by the resolved path, the file's size and its mtime,
so a picture shown by many records, or checked by a second run, is decoded once. A file changed since
(another size or mtime) is decoded again. Undecided pictures are decoded on a few threads (Pillow's
decoders release the GIL).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

from xtune.fileio import cache_dir


class Verdict(NamedTuple):
    size: tuple[int, int] | None  # (width, height), when the header could be read
    problem: str | None  # None: the picture decodes


_SEEN: dict[tuple[str, int, int], Verdict] = {}  # this process's verdicts, good and bad


def too_big(size: tuple[int, int]) -> str | None:
    """What is wrong with a picture of `size` that Pillow would refuse or warn about as a decompression bomb
    (more pixels than `PIL.Image.MAX_IMAGE_PIXELS`), else None."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    width, height = size
    if not limit or width * height <= limit:
        return None
    return (f"is {width}x{height} pixels ({width * height / 1e6:.1f} megapixels), more than Pillow decodes "
            f"safely ({limit / 1e6:.1f} megapixels, PIL.Image.MAX_IMAGE_PIXELS): resize it (e.g. to at most "
            "4096 pixels a side)")


def examine(path: Path) -> Verdict:
    """Open, verify and fully decode the picture at `path`: its size and what is wrong with it (or None)."""
    if not path.exists():
        return Verdict(None, f"does not exist (looked for {str(path)!r})")
    if not path.is_file():
        return Verdict(None, f"{str(path)!r} is not a file")
    from PIL import Image, UnidentifiedImageError

    size = None
    try:
        with Image.open(path) as img:
            size = img.size
            if problem := too_big(size):
                return Verdict(size, problem)
            img.verify()  # chunk checksums (PNG) that decoding does not look at
        with Image.open(path) as img:
            img.load()  # every pixel: a file cut short fails here
    except Image.DecompressionBombError:  # beyond twice the limit Pillow refuses to open it at all
        size = header_size(path)
        return Verdict(size, too_big(size) if size else "has more pixels than Pillow opens (resize it)")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = str(exc).splitlines()[0][:120] if str(exc) else ""
        return Verdict(size, f"is not a readable image ({type(exc).__name__}: {reason})")
    return Verdict(size, None)


def header_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the header of a picture Pillow refuses to open, read the way `Image.open` reads
    it (the format plugins' own parsers) but without its size check; None when no plugin reads it."""
    from PIL import Image

    Image.init()
    with open(path, "rb") as fp:
        prefix = fp.read(16)
        for fmt in Image.ID:
            factory, accept = Image.OPEN[fmt]
            fit = accept(prefix) if accept is not None else True
            if not fit or isinstance(fit, str):  # a string: "this format, but unreadable"
                continue
            fp.seek(0)
            try:
                return tuple(factory(fp, str(path)).size)
            except Exception:  # not this format: try the next, as Image.open does
                continue
    return None


def _key(path: Path) -> tuple[str, int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns


def picture_verdict(path: Path) -> Verdict:
    """The verdict on one picture, decoded at most once per process (per size and mtime of the file)."""
    return PictureChecks(store=False).check([path])[0]


class PictureChecks:
    """Verdicts on many pictures: this process's, then the disk's (good ones), then decoded on threads.
    `save()` writes the new good verdicts, after the caller has settled the data's problems."""

    def __init__(self, store: bool = True):
        self.path = cache_dir("pictures") / "verdicts.sqlite" if store else None
        self.new: dict[tuple[str, int, int], Verdict] = {}
        self.decoded = 0  # pictures decoded here (not found in a cache)

    def check(self, paths: list[Path]) -> list[Verdict]:
        keys = [_key(p) for p in paths]
        missing = {k: p for k, p in zip(keys, paths, strict=True) if k is not None and k not in _SEEN}
        _SEEN.update(self._stored(list(missing)))
        todo = [(k, p) for k, p in missing.items() if k not in _SEEN]
        if todo:
            with ThreadPoolExecutor(min(8, os.cpu_count() or 1, len(todo))) as pool:
                for (key, _), verdict in zip(todo, pool.map(examine, [p for _, p in todo]), strict=True):
                    _SEEN[key] = self.new[key] = verdict
        self.decoded += len(todo)
        return [examine(p) if k is None else _SEEN[k] for k, p in zip(keys, paths, strict=True)]

    def _stored(self, keys: list) -> dict:
        if self.path is None or not keys or not self.path.is_file():
            return {}
        found = {}
        with contextlib.suppress(sqlite3.Error), self._connect() as db:  # a damaged cache is no cache
            for key in keys:
                row = db.execute("SELECT width, height FROM verdicts WHERE path=? AND bytes=? AND mtime=?",
                                 key).fetchone()
                if row and not too_big(row):  # the limit may have been lowered since
                    found[key] = Verdict(tuple(row), None)
        return found

    def save(self) -> None:
        """Remember the good verdicts decoded here (bad pictures are decoded again: they get fixed)."""
        good = [(*k, *v.size) for k, v in self.new.items() if v.problem is None and v.size]
        if self.path is None or not good:
            return
        with contextlib.suppress(sqlite3.Error, OSError), self._connect() as db, db:  # `with db` commits
            db.executemany("INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?, ?, ?)", good)
        self.new.clear()

    def _connect(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=60)  # several ranks may write at once: wait for the lock
        db.execute("CREATE TABLE IF NOT EXISTS verdicts (path TEXT, bytes INTEGER, mtime INTEGER, "
                   "width INTEGER, height INTEGER, PRIMARY KEY (path, bytes, mtime))")
        return contextlib.closing(db)
