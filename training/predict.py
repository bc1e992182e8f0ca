"""Batch prediction of a file to JSONL through the serving inference path (no torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from streamer.enums import Device, Precision, Runtime, Variant
from training.data import DataError, read_rows
from training.evaluate import load_offline_classifier, serving_report

ID_COLUMNS = ("id", "key")


def predict_file(
    bundle_path: str | Path,
    input_path: str | Path,
    output_path: str | Path,
    *,
    text_column: str = "text",
    variant: Variant | None = None,
    precision: Precision | None = None,
    runtime: Runtime = Runtime.AUTO,
    device: Device = Device.CPU,
    strict: bool = False,
    batch_size: int = 64,
) -> dict[str, Any]:
    """One JSON line per input row, in order; blank rows get ``{"row", "error"}`` and are counted.

    The output is written to a temporary name and renamed at the end, so a failed run
    never leaves a truncated file that looks complete. The classifier is the daemon's for these
    settings (:func:`training.evaluate.load_offline_classifier`); the summary says what ran.
    """
    clf = load_offline_classifier(
        bundle_path, variant=variant, precision=precision, runtime=runtime, device=device
    )
    columns, rows = read_rows(input_path)
    if text_column not in columns:
        raise DataError(f"{input_path}: missing column {text_column!r}; file has {columns}")
    id_col = next((c for c in ID_COLUMNS if c in columns), None)
    out = Path(output_path)
    tmp = out.with_name(f".{out.name}.partial")
    skipped: list[int] = []
    written = 0
    try:
        with tmp.open("wb") as fh:
            for start in range(0, len(rows), batch_size):
                chunk = rows[start : start + batch_size]
                good = []
                for i, row in chunk:
                    text = row.get(text_column)
                    if not isinstance(text, str) or not text.strip():
                        if strict:
                            raise DataError(
                                f"{input_path}: row {i}: blank text in column {text_column!r} (--strict)"
                            )
                        skipped.append(i)
                    else:
                        good.append((i, row, text))
                enc = clf.encode([t for _, _, t in good])
                preds = clf.to_predictions(clf.infer(enc))
                by_row = {
                    i: (row, p, bool(tr))
                    for (i, row, _), p, tr in zip(good, preds, enc.truncated, strict=True)
                }
                for i, row in chunk:
                    rec: dict[str, Any] = {"row": i}
                    if id_col is not None:
                        rec["id"] = row.get(id_col)
                    if i not in by_row:
                        rec["error"] = f"blank text in column {text_column!r}"
                    else:
                        _, p, truncated = by_row[i]
                        rec["labels"] = {
                            h: {"label": hp.label, "score": hp.score, "scores": hp.scores}
                            for h, hp in p.items()
                        }
                        rec["truncated"] = truncated
                    fh.write(orjson.dumps(rec) + b"\n")
                    written += 1
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {
        "input": str(input_path),
        "output": str(out),
        "rows": len(rows),
        "predicted": written - len(skipped),
        "skipped": len(skipped),
        "skipped_rows": skipped[:20],
        "model": {"name": clf.bundle.name, "version": clf.bundle.version},
        **serving_report(clf),
    }
