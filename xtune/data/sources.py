"""Where records come from: local files and folders, the Hugging Face hub, ModelScope.

Local files are read by `xtune.data.readers` (errors name the file and line); hub and ModelScope data
sets through their clients. Each source carries a fingerprint of its content for the cache.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xtune import fileio
from xtune.data.readers import SUPPORTED_SUFFIXES, collect, read_file
from xtune.errors import DataError

MODELSCOPE_PREFIXES = ("modelscope://", "ms://")
__all__ = ["MODELSCOPE_PREFIXES", "SUPPORTED_SUFFIXES", "Source", "collect", "load_local", "load_source",
           "looks_local", "read_file"]


@dataclass
class Source:
    """Records and a label for each. `fingerprint` identifies the content for the cache."""

    name: str
    records: Any  # a list of dicts, or a datasets.Dataset for hub data
    wheres: list[str] | None  # one label per record; None: "<name> record <i>"
    fingerprint: str
    problems: list[str] = field(default_factory=list)  # unreadable lines (JSONL), reported with bad records

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[tuple[str, dict]]:
        for i, record in enumerate(self.records):
            yield (self.wheres[i] if self.wheres else f"{self.name} record {i}"), record


def looks_local(data_path: str) -> bool:
    """A path the user meant as a local file: it exists, or it has a data-file suffix or path syntax."""
    return fileio.looks_local(data_path, SUPPORTED_SUFFIXES)


def _file_digest(paths: list[Path]) -> str:
    import hashlib

    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path.resolve()).encode())
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def local_files(data_path: str) -> list[Path]:
    """The data files a local `data_path` names: the file itself, or the data files in a folder."""
    path = Path(data_path).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
        if not files:
            raise DataError(f"data folder {data_path!r} holds no data files "
                            f"(looked for {', '.join(SUPPORTED_SUFFIXES)})")
    elif path.exists() or path.suffix:
        files = [path]
    else:
        raise DataError(f"data path {data_path!r} does not exist")
    return files


def local_fingerprint(data_path: str) -> str:
    """What `load_local(data_path).fingerprint` will be, without parsing a record (for cache look-ups)."""
    return _file_digest(local_files(data_path))


def load_local(data_path: str) -> Source:
    path = Path(data_path).expanduser()
    files = local_files(data_path)
    records, wheres, problems = [], [], []
    for file in files:
        r, w = read_file(file, problems)
        records += r
        wheres += w
    if not records and not problems:
        raise DataError(f"{data_path}: the data set is empty (no records)")
    return Source(name=str(path), records=records, wheres=wheres, fingerprint=_file_digest(files),
                  problems=problems)


def load_hub(repo_id: str, *, config: str | None = None, split: str = "train",
             data_files: str | None = None) -> Source:
    """A Hugging Face hub data set through `datasets.load_dataset` (offline: its cache only)."""
    import datasets

    try:
        ds = datasets.load_dataset(repo_id, name=config, split=split, data_files=data_files)
    except Exception as exc:
        raise DataError(f"could not load the hub data set {repo_id!r}: {type(exc).__name__}: {exc}",
                        hint="check the id, your network or HF_HUB_OFFLINE, or pass a local data_path") \
            from None
    if len(ds) == 0:
        raise DataError(f"hub data set {repo_id!r} (split {split!r}) is empty")
    return Source(name=repo_id, records=ds, wheres=None, fingerprint=f"hub:{repo_id}:{config}:{split}:"
                  f"{data_files}:{ds._fingerprint}")


def load_modelscope(repo_id: str, *, config: str | None = None, split: str = "train") -> Source:
    """A ModelScope data set (MsDataset), converted to a `datasets.Dataset`."""
    try:
        from modelscope.msdatasets import MsDataset

        ds = MsDataset.load(repo_id, subset_name=config, split=split)
        ds = ds.to_hf_dataset() if hasattr(ds, "to_hf_dataset") else ds
    except Exception as exc:
        raise DataError(f"could not load the ModelScope data set {repo_id!r}: {type(exc).__name__}: {exc}",
                        hint="check the id and your network, or pass a local data_path") from None
    if len(ds) == 0:
        raise DataError(f"ModelScope data set {repo_id!r} (split {split!r}) is empty")
    fingerprint = getattr(ds, "_fingerprint", None) or repo_id
    return Source(name=f"modelscope:{repo_id}", records=ds, wheres=None,
                  fingerprint=f"modelscope:{repo_id}:{config}:{split}:{fingerprint}")


def load_source(data_path: str, *, config: str | None = None, split: str = "train",
                data_files: str | None = None) -> Source:
    """Dispatch on the form of `data_path`: `modelscope://id` / `ms://id`, a local path, or a hub id."""
    for prefix in MODELSCOPE_PREFIXES:
        if data_path.startswith(prefix):
            return load_modelscope(data_path[len(prefix):], config=config, split=split)
    if looks_local(data_path):
        return load_local(data_path)
    return load_hub(data_path, config=config, split=split, data_files=data_files)


