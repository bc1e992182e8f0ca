"""Labeled data sources: parsing ``HEAD=PATH[?options]``, reading CSV/JSONL/Parquet, label maps.

Pure logic + file reading; no torch. Bad input raises :class:`DataError` naming the file, the
row and the problem. Rows that are merely unusable (blank text, label outside the map) are
skipped and *counted* (see :class:`LoadReport`); ``strict=True`` turns a skip into an error.

Source spec: ``HEAD=PATH`` optionally followed by ``?key=value&...`` with keys
``text`` / ``label`` (column names), ``map`` (``FROM:TO,FROM:TO``), ``where`` (``COLUMN:VALUE``,
keep only matching rows), ``slice`` (a column whose values get their own dev metrics), ``name`` (source name in
reports), ``scored`` (``a,b``: the labels this source can have; evaluation restricts the argmax
to them and training's loss covers only them), ``holdout`` (a fixed fraction kept out of training
as this source's dev set, see :mod:`training.parts`), ``part`` (``train`` | ``holdout``: read only
that part of a ``holdout`` source) and ``dev`` (a file that is this source's dev set instead of a
split of it).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from streamer.model.bundle import sha256_file
from training.parts import PARTS, holdout_rows
from training.readers import DataError as DataError
from training.readers import read_rows as read_rows

GENERIC_STEMS = {"train", "valid", "validation", "dev", "test", "all", "data"}
SENTIMENT_LABELS = ("negative", "neutral", "positive")
MAX_SKIPS_LISTED = 20


@dataclass(frozen=True)
class SourceSpec:
    head: str
    path: str
    text_column: str = "text"
    label_column: str = "label"
    label_map: tuple[tuple[str, str], ...] = ()
    where: tuple[str, str] | None = None
    slice_column: str | None = None
    name: str = ""
    scored: tuple[str, ...] = ()  # the labels this source has (argmax and loss restricted to them)
    holdout: float | None = None  # fixed held-out fraction (training: this source's dev rows)
    part: str | None = None  # "train" | "holdout": read only that part of a holdout source
    dev: str | None = None  # a file that is this source's dev set

    @property
    def display_name(self) -> str:
        if self.name:
            return self.name
        p = Path(self.path)
        return p.parent.name if p.stem.lower() in GENERIC_STEMS and p.parent.name else p.stem

    def to_json(self) -> dict[str, Any]:
        return {
            "head": self.head,
            "path": self.path,
            "text_column": self.text_column,
            "label_column": self.label_column,
            "label_map": dict(self.label_map),
            "where": list(self.where) if self.where else None,
            "slice_column": self.slice_column,
            "name": self.name,
            "scored": list(self.scored),
            "holdout": self.holdout,
            "part": self.part,
            "dev": self.dev,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SourceSpec:
        return cls(
            head=d["head"],
            path=d["path"],
            text_column=d.get("text_column", "text"),
            label_column=d.get("label_column", "label"),
            label_map=tuple(dict(d.get("label_map") or {}).items()),
            where=tuple(d["where"]) if d.get("where") else None,
            slice_column=d.get("slice_column"),
            name=d.get("name", ""),
            scored=tuple(d.get("scored") or ()),
            holdout=d.get("holdout"),
            part=d.get("part"),
            dev=d.get("dev"),
        )

    def dev_spec(self) -> SourceSpec:
        """The spec of this source's ``dev`` file: same columns, map and filter, same name."""
        if not self.dev:
            raise DataError(f"--data {self.head}={self.path}: has no dev= file")
        return SourceSpec(
            head=self.head,
            path=self.dev,
            text_column=self.text_column,
            label_column=self.label_column,
            label_map=self.label_map,
            where=self.where,
            slice_column=self.slice_column,
            name=self.display_name,
            scored=self.scored,
        )


def _parse_map(value: str, spec: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in value.split(","):
        src, sep, dst = item.partition(":")
        if not sep or not src.strip() or not dst.strip():
            raise DataError(f"--data {spec!r}: label map entry {item!r} must look like FROM:TO")
        pairs.append((src.strip(), dst.strip()))
    return tuple(pairs)


def parse_source(
    spec: str,
    *,
    text_column: str = "text",
    label_column: str = "label",
    label_map: Mapping[str, str] | None = None,
) -> SourceSpec:
    """Parse ``HEAD=PATH[?text=..&label=..&map=A:b,C:d&where=col:val&slice=col&name=..]``."""
    head, sep, rest = spec.partition("=")
    head = head.strip()
    if not sep or not head or not rest:
        raise DataError(f"--data {spec!r}: expected HEAD=PATH (e.g. sentiment=data/train.csv)")
    if not head.isidentifier():
        raise DataError(f"--data {spec!r}: head name {head!r} must be a simple identifier")
    path, _, query = rest.partition("?")
    opts = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=False)) if query else {}
    unknown = set(opts) - {
        "text",
        "label",
        "map",
        "where",
        "slice",
        "name",
        "scored",
        "holdout",
        "part",
        "dev",
    }
    if unknown:
        raise DataError(f"--data {spec!r}: unknown option(s) {sorted(unknown)}")
    mapping = tuple((label_map or {}).items())
    if "map" in opts:
        mapping = _parse_map(opts["map"], spec)
    where = None
    if "where" in opts:
        col, sep2, val = opts["where"].partition(":")
        if not sep2 or not col:
            raise DataError(f"--data {spec!r}: where must look like COLUMN:VALUE")
        where = (col, val)
    holdout = _parse_holdout(opts, spec)
    return SourceSpec(
        head=head,
        path=path,
        text_column=opts.get("text", text_column),
        label_column=opts.get("label", label_column),
        label_map=mapping,
        where=where,
        slice_column=opts.get("slice") or None,
        name=opts.get("name", ""),
        scored=tuple(x.strip() for x in opts.get("scored", "").split(",") if x.strip()),
        holdout=holdout,
        part=opts.get("part") or None,
        dev=opts.get("dev") or None,
    )


def _parse_holdout(opts: Mapping[str, str], spec: str) -> float | None:
    holdout = None
    if "holdout" in opts:
        try:
            holdout = float(opts["holdout"])
        except ValueError:
            holdout = -1.0
        if not 0.0 < holdout < 1.0:
            raise DataError(f"--data {spec!r}: holdout must be a fraction in (0, 1), got {opts['holdout']!r}")
    if "part" in opts:
        if opts["part"] not in PARTS:
            raise DataError(f"--data {spec!r}: part must be one of {list(PARTS)}")
        if holdout is None:
            raise DataError(f"--data {spec!r}: part= needs holdout=FRACTION (which rows are held out)")
    if holdout is not None and opts.get("dev"):
        raise DataError(f"--data {spec!r}: holdout= and dev= both name a dev set; use one")
    return holdout


def parse_label_maps(items: Sequence[str]) -> dict[str, dict[str, str]]:
    """``HEAD:FROM=TO,FROM=TO`` (repeatable) -> {head: {from: to}}."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        head, sep, rest = item.partition(":")
        if not sep or not head or not rest:
            raise DataError(f"--label-map {item!r}: expected HEAD:FROM=TO[,FROM=TO...]")
        for pair in rest.split(","):
            src, sep2, dst = pair.partition("=")
            if not sep2 or not src.strip() or not dst.strip():
                raise DataError(f"--label-map {item!r}: entry {pair!r} must look like FROM=TO")
            out.setdefault(head, {})[src.strip()] = dst.strip()
    return out


# ---------------------------------------------------------------- labeled examples


@dataclass
class LoadReport:
    """What happened to every row of one source."""

    source: str
    path: str
    rows: int = 0
    used: int = 0
    filtered: int = 0  # excluded by ``where`` on purpose
    skipped: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def skip(self, row: int, problem: str, strict: bool) -> None:
        msg = f"{self.path}: row {row}: {problem}"
        if strict:
            raise DataError(msg + " (--strict)")
        self.skipped[problem.split(":")[0]] += 1
        if len(self.examples) < MAX_SKIPS_LISTED:
            self.examples.append(msg)

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "path": self.path,
            "rows": self.rows,
            "used": self.used,
            "filtered": self.filtered,
            "skipped": dict(self.skipped),
            "skipped_examples": self.examples,
        }


@dataclass(frozen=True)
class LabeledSet:
    """Rows of one source that survived validation, labels already mapped."""

    spec: SourceSpec
    texts: list[str]
    labels: list[str]
    slices: list[str] | None
    sha256: str
    report: LoadReport
    rows: list[int] = field(default_factory=list)  # the file's 1-based row number of each text


def load_source(
    spec: SourceSpec,
    *,
    allowed_labels: Sequence[str] | None = None,
    strict: bool = False,
    require_label: bool = True,
) -> LabeledSet:
    """Read, filter, map and validate one source."""
    path = Path(spec.path)
    columns, rows = read_rows(path)
    needed = [spec.text_column] + ([spec.label_column] if require_label else [])
    if spec.where:
        needed.append(spec.where[0])
    if spec.slice_column:
        needed.append(spec.slice_column)
    missing = [c for c in needed if c not in columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; file has {columns}")
    mapping = dict(spec.label_map)
    allowed = set(allowed_labels) if allowed_labels is not None else None
    report = LoadReport(source=spec.display_name, path=str(path), rows=len(rows))
    texts: list[str] = []
    labels: list[str] = []
    slices: list[str] | None = [] if spec.slice_column else None
    numbers: list[int] = []
    for i, row in rows:
        if spec.where and str(row.get(spec.where[0])) != spec.where[1]:
            report.filtered += 1
            continue
        text = row.get(spec.text_column)
        if not isinstance(text, str) or not text.strip():
            report.skip(i, f"blank text in column {spec.text_column!r}", strict)
            continue
        label = ""
        if require_label:
            raw = row.get(spec.label_column)
            if raw is None or str(raw).strip() == "":
                report.skip(i, f"blank label in column {spec.label_column!r}", strict)
                continue
            raw_label = str(raw).strip()
            label = mapping.get(raw_label, raw_label)
            if allowed is not None and label not in allowed:
                shown = f"{raw_label!r}" + (f" (mapped to {label!r})" if label != raw_label else "")
                report.skip(i, f"label outside the label set: {shown} not in {sorted(allowed)}", strict)
                continue
        texts.append(text)
        labels.append(label)
        numbers.append(i)
        if slices is not None:
            slices.append(str(row.get(spec.slice_column or "")))
    if spec.part is not None and spec.holdout is not None:
        held = holdout_rows(texts, labels, slices, spec.holdout)
        keep = [j for j in range(len(texts)) if (j in held) == (spec.part == "holdout")]
        report.filtered += len(texts) - len(keep)
        texts, labels, numbers = (
            [texts[j] for j in keep],
            [labels[j] for j in keep],
            [numbers[j] for j in keep],
        )
        slices = [slices[j] for j in keep] if slices is not None else None
    report.used = len(texts)
    if not texts:
        raise DataError(
            f"{path}: no usable rows ({report.rows} rows, {report.filtered} filtered out, "
            f"skipped: {dict(report.skipped) or 'none'})"
        )
    return LabeledSet(spec, texts, labels, slices, sha256_file(path), report, numbers)


def head_labels(head: str, observed: Sequence[str], explicit: Sequence[str] | None = None) -> tuple[str, ...]:
    """Ordered label set of a head: explicit, else canonical sentiment order, else sorted."""
    if explicit:
        if len(set(explicit)) != len(explicit):
            raise DataError(f"--labels {head}: duplicate labels in {list(explicit)}")
        return tuple(explicit)
    seen = set(observed)
    if head == "sentiment" and seen <= set(SENTIMENT_LABELS):
        return SENTIMENT_LABELS
    if len(seen) < 2:
        raise DataError(f"head {head!r}: training data has fewer than 2 labels ({sorted(seen)})")
    return tuple(sorted(seen))


def fingerprint(texts: Sequence[str], labels: Sequence[str]) -> str:
    """Content hash of the examples actually used (after filtering/mapping)."""
    h = hashlib.sha256()
    for t, lab in zip(texts, labels, strict=True):
        h.update(t.encode())
        h.update(b"\x1f")
        h.update(lab.encode())
        h.update(b"\x1e")
    return h.hexdigest()
