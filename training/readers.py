"""Reading labeled-data files (CSV, JSONL, Parquet) into numbered rows; bad files are errors.

Every error names the file and, where there is one, the row.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from streamer.errors import UsageError

SUPPORTED = (".csv", ".jsonl", ".parquet")


class DataError(UsageError):
    """Unusable input: the message names file, row and problem."""


def _rows_csv(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None:
            raise DataError(f"{path}: empty file (no header row)")
        n_cols = len(reader.fieldnames)
        for i, row in enumerate(reader, start=1):
            if None in row or len(row) != n_cols:
                raise DataError(f"{path}: row {i} (line {reader.line_num}): has more fields than the header")
            yield i, row


def _rows_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as fh:
        for i, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: row {i}: invalid JSON ({exc.msg})") from exc
            if not isinstance(obj, dict):
                raise DataError(f"{path}: row {i}: expected a JSON object, got {type(obj).__name__}")
            yield i, obj


def _rows_parquet(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:
        raise DataError(f"{path}: unreadable Parquet file: {exc}") from exc
    yield from enumerate(table.to_pylist(), start=1)


def read_rows(path: str | Path) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    """(column names, [(1-based row number, row)]) of a CSV/JSONL/Parquet file."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in SUPPORTED:
        raise DataError(f"{p}: unsupported file type {suffix or '(none)'} (use .csv, .jsonl or .parquet)")
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    reader = {".csv": _rows_csv, ".jsonl": _rows_jsonl, ".parquet": _rows_parquet}[suffix]
    try:
        rows = list(reader(p))
    except UnicodeDecodeError as exc:
        raise DataError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except csv.Error as exc:
        raise DataError(f"{p}: malformed CSV: {exc}") from exc
    except OSError as exc:
        raise DataError(f"{p}: unreadable: {exc}") from exc
    if not rows:
        raise DataError(f"{p}: no data rows")
    if suffix == ".csv":
        columns = list(rows[0][1].keys())
    else:
        seen: dict[str, None] = {}
        for _, r in rows:
            seen.update(dict.fromkeys(r))
        columns = list(seen)
    return columns, rows
