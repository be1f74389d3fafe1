"""Reading local data files — JSON, JSONL, CSV, Parquet, XLSX, TXT — into records, each with a `where`.

Local files are parsed here rather than by `datasets`' arrow loaders, for two reasons: errors must name
the file and line (arrow reports neither), and real instruction data mixes types across records
(`input` a string here and a number there) that arrow's schema inference refuses. Each record comes
with a `where` string ("data.jsonl line 3") that every later error message reuses.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from xtune.errors import DataError

SUPPORTED_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet", ".xlsx", ".txt")


# Leading bytes of compressed files that people name .json / .jsonl by mistake.
_COMPRESSED = {b"\x1f\x8b": ("gzip", "gunzip -c FILE > OUT.jsonl"), b"PK\x03\x04": ("zip", "unzip FILE"),
               b"\xfd7zXZ": ("xz", "unxz FILE"), b"BZh": ("bzip2", "bunzip2 FILE")}


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    for magic, (kind, how) in _COMPRESSED.items():
        if data.startswith(magic):
            raise DataError(f"{path}: the file is {kind}-compressed, not text",
                            hint=f"decompress it first ({how.replace('FILE', str(path))})")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                        f"{exc.start})", hint="re-save the file as UTF-8") from None


def _json_error(path: Path, exc: json.JSONDecodeError, line: int | None = None) -> DataError:
    return DataError(f"{path}: line {line or exc.lineno}: malformed JSON: {exc.msg} (column {exc.colno})")


def _read_json_array(path: Path, text: str) -> tuple[list, list[str]]:
    """Decode `[obj, obj, ...]` element by element so each record knows its line."""
    decoder = json.JSONDecoder()
    records, wheres = [], []
    pos, n = text.index("[") + 1, len(text)
    line, counted = 1, 0

    def skip(p: int) -> int:
        while p < n and text[p] in " \t\r\n":
            p += 1
        return p

    pos = skip(pos)
    if pos < n and text[pos] == "]":
        return records, wheres
    while True:
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise _json_error(path, exc) from None
        line += text.count("\n", counted, pos)
        counted = pos
        records.append(obj)
        wheres.append(f"{path} record {len(records) - 1} (line {line})")
        pos = skip(end)
        if pos < n and text[pos] == ",":
            pos = skip(pos + 1)
            continue
        if pos < n and text[pos] == "]":
            if skip(pos + 1) != n:
                bad = text.count("\n", 0, skip(pos + 1)) + 1
                raise DataError(f"{path}: line {bad}: malformed JSON: extra data after the closing ']'")
            return records, wheres
        bad = text.count("\n", 0, pos) + 1
        raise DataError(f"{path}: line {bad}: malformed JSON: expected ',' or ']' between records")


def _read_jsonl(path: Path, text: str) -> tuple[list, list[str]]:
    """One record per line; malformed lines are collected in the `problems` attribute of the list."""
    records, wheres, errors = _Records(), [], []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            records.append(json.loads(raw))
        except json.JSONDecodeError as exc:
            errors.append(f"{path}: line {number}: malformed JSON: {exc.msg} (column {exc.colno})")
            continue
        wheres.append(f"{path} line {number}")
    records.problems = errors
    return records, wheres


class _Records(list):
    """A list of records that also carries the problems found while reading it."""

    problems: list[str] = []


def _read_json(path: Path) -> tuple[list, list[str]]:
    text = _read_text(path)
    head = text.lstrip()[:1]
    if path.suffix == ".jsonl" or head not in ("[", "{"):
        return _read_jsonl(path, text)
    if head == "[":
        return _read_json_array(path, text)
    try:  # one object per file, or JSON lines saved as .json
        return [json.loads(text)], [f"{path} record 0"]
    except json.JSONDecodeError as exc:
        if exc.msg.startswith("Extra data"):
            return _read_jsonl(path, text)
        raise _json_error(path, exc) from None


def _read_csv(path: Path) -> tuple[list, list[str]]:
    reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
    records, wheres = [], []
    for row in reader:
        records.append(row)
        wheres.append(f"{path} line {reader.line_num}")
    return records, wheres


def _read_parquet(path: Path) -> tuple[list, list[str]]:
    import pyarrow.parquet as pq

    try:
        records = pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise DataError(f"{path}: not a readable parquet file: {exc}") from None
    return records, [f"{path} row {i}" for i in range(len(records))]


def _read_xlsx(path: Path) -> tuple[list, list[str]]:
    import openpyxl

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:
        raise DataError(f"{path}: not a readable xlsx file: {exc}") from None
    rows = book.active.iter_rows(values_only=True)
    header = next(rows, None)
    if not header:
        return [], []
    names = [str(h) if h is not None else f"column_{i}" for i, h in enumerate(header)]
    records, wheres = [], []
    for number, row in enumerate(rows, start=2):
        if all(v is None for v in row):
            continue
        records.append({k: ("" if v is None else v) for k, v in zip(names, row, strict=False)})
        wheres.append(f"{path} row {number}")
    return records, wheres


def _read_txt(path: Path) -> tuple[list, list[str]]:
    """Pretraining text: one document per non-empty line."""
    records, wheres = [], []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if line.strip():
            records.append({"text": line})
            wheres.append(f"{path} line {number}")
    return records, wheres


_READERS = {".json": _read_json, ".jsonl": _read_json, ".csv": _read_csv, ".parquet": _read_parquet,
            ".xlsx": _read_xlsx, ".txt": _read_txt}


def read_file(path: str | os.PathLike, problems: list[str] | None = None) -> tuple[list, list[str]]:
    """(records, wheres) of one local file, or a DataError naming the file and line.

    With a `problems` list, malformed JSON lines are appended to it (so they are reported with the
    other bad records) instead of raised.
    """
    path = Path(path)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"{path}: unsupported file type {path.suffix!r} "
                        f"(supported: {', '.join(SUPPORTED_SUFFIXES)})")
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} does not exist")
    records, wheres = reader(path)
    found = list(getattr(records, "problems", []))
    for where, record in zip(wheres, records, strict=True):
        if not isinstance(record, dict):
            found.append(f"{where}: a record must be a JSON object, got {type(record).__name__}")
    if found and problems is None:
        raise DataError(collect(found))
    if problems is not None:
        problems += found
        keep = [i for i, r in enumerate(records) if isinstance(r, dict)]
        records, wheres = [records[i] for i in keep], [wheres[i] for i in keep]
    return list(records), wheres


def collect(problems: list[str], limit: int = 20) -> str:
    """Several problems as one message; the CLI prints it after 'Error: ', so each gets its own line."""
    shown = problems[:limit]
    if len(problems) > limit:
        shown.append(f"... and {len(problems) - limit} more problems")
    return "\nError: ".join(shown)
