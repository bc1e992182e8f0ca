"""Teacher logits for distillation: the file ``make teacher`` writes and the student reads.

Layout, beside the bundles (``models/teacher-logits/`` by default)::

    <key>.npz    per head: keys__<head> (uint64 text hashes, sorted), logits__<head> (float32
                 [rows, labels]), trained__<head> (bool: the teacher trained on that text)
    <key>.json   the manifest: format, teacher bundle, heads with their labels, the training
                 sources with their data fingerprints, the npz's sha256 (written last)

``<key>`` is :func:`data_key` of the heads and the training sources' fingerprints, so the
student finds the file for exactly its data; a file for other data, other labels, or with an
altered npz is refused with the file and the mismatch named. A student dev row the teacher
trained on is refused too (the teacher was trained with another split): distilling from it
would leak dev rows into training.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from streamer.model.bundle import sha256_file
from training.data import DataError
from training.parts import text_key

FORMAT = 1
DEFAULT_DIR = "models/teacher-logits"


class TeacherFileError(DataError):
    """A teacher-logits file that does not belong to this run's data or labels."""


def text_hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text_key(text).encode()).digest()[:8], "big")


def hashes(texts: Iterable[str]) -> np.ndarray:
    return np.fromiter((text_hash(t) for t in texts), dtype=np.uint64)


def train_sources(data_info: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The trained sources' identity: head, path, content fingerprint (left-out sources excluded)."""
    return [
        {"head": d["head"], "path": d["path"], "fingerprint": d["fingerprint"]}
        for d in data_info
        if d["role"] == "train" and not d.get("left_out")
    ]


def data_key(heads: Sequence[tuple[str, Sequence[str]]], data_info: Sequence[dict[str, Any]]) -> str:
    """Names the file: heads, labels and the trained rows' fingerprints (not paths, not the split)."""
    ident = {
        "heads": [[h, list(labels)] for h, labels in heads],
        "sources": sorted([s["head"], s["fingerprint"]] for s in train_sources(data_info)),
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def write_logits(out_dir: Path, key: str, manifest: dict[str, Any], arrays: dict[str, np.ndarray]) -> Path:
    """The npz, then the manifest (its presence marks a complete file); both via rename."""
    import os

    out_dir.mkdir(parents=True, exist_ok=True)
    npz, js = out_dir / f"{key}.npz", out_dir / f"{key}.json"
    tmp_npz, tmp_js = out_dir / f".{key}.npz.partial", out_dir / f".{key}.json.partial"
    try:
        with tmp_npz.open("wb") as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]
        os.replace(tmp_npz, npz)
        tmp_js.write_text(json.dumps({**manifest, "npz": npz.name, "npz_sha256": sha256_file(npz)}, indent=2))
        os.replace(tmp_js, js)
    finally:
        tmp_npz.unlink(missing_ok=True)
        tmp_js.unlink(missing_ok=True)
    return js


class TeacherLogits:
    """A validated teacher file: logits by text for each head."""

    def __init__(self, manifest_path: Path) -> None:
        self.path = manifest_path
        try:
            self.manifest: dict[str, Any] = json.loads(manifest_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise TeacherFileError(f"{manifest_path}: unreadable teacher manifest ({exc})") from exc
        if self.manifest.get("format") != FORMAT:
            raise TeacherFileError(
                f"{manifest_path}: format {self.manifest.get('format')!r}, expected {FORMAT}"
            )
        npz = manifest_path.with_name(str(self.manifest.get("npz")))
        if not npz.is_file() or sha256_file(npz) != self.manifest.get("npz_sha256"):
            raise TeacherFileError(f"{npz}: missing or altered (sha256 differs from {manifest_path.name})")
        with np.load(npz) as z:
            self.arrays = {k: z[k] for k in z.files}

    def check(self, heads: Sequence[tuple[str, Sequence[str]]], data_info: Sequence[dict[str, Any]]) -> None:
        """Refuse the file unless it has this run's heads, labels and training data."""
        theirs = {h: list(labs) for h, labs in self.manifest.get("heads", {}).items()}
        for head, labels in heads:
            if head not in theirs:
                raise TeacherFileError(
                    f"{self.path}: no logits for head {head!r} (teacher heads {sorted(theirs)})"
                )
            if theirs[head] != list(labels):
                raise TeacherFileError(
                    f"{self.path}: head {head!r} labels differ: teacher {theirs[head]} vs this run {list(labels)}"
                )
        known = {(s["head"], s["fingerprint"]) for s in self.manifest.get("sources", [])}
        for s in train_sources(data_info):
            if (s["head"], s["fingerprint"]) not in known:
                by_path = [t for t in self.manifest.get("sources", []) if t["path"] == s["path"]]
                why = (
                    "its rows changed since the teacher's run"
                    if by_path
                    else "the teacher was not trained on it"
                )
                raise TeacherFileError(
                    f"{self.path}: does not match {s['head']}={s['path']}: {why} "
                    f"(data fingerprint {s['fingerprint'][:12]}); re-run `make teacher`"
                )

    def lookup(self, head: str, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(logits [n, labels], found [n] bool, trained [n] bool) for ``texts`` of ``head``."""
        keys, logits = self.arrays[f"keys__{head}"], self.arrays[f"logits__{head}"]
        trained = self.arrays[f"trained__{head}"]
        h = hashes(texts)
        pos = np.clip(np.searchsorted(keys, h), 0, max(0, len(keys) - 1))
        found = (keys[pos] == h) if len(keys) else np.zeros(len(h), dtype=bool)
        return logits[pos], found, trained[pos] & found


def resolve(path: str | Path, key: str) -> tuple[Path | None, str]:
    """The manifest to use and a note; a directory is searched for this data's key."""
    p = Path(path)
    if p.suffix == ".json" or p.is_file():
        return (p if p.suffix == ".json" else p.with_suffix(".json")), ""
    candidate = p / f"{key}.json"
    if candidate.is_file():
        return candidate, ""
    if not p.is_dir():
        return None, f"{p} does not exist"
    others = sorted(p.glob("*.json"))
    if not others:
        return None, f"{p} has no teacher-logits file"
    return None, (
        f"{p} has teacher logits only for other data ({', '.join(o.name for o in others)}; "
        f"this run's data key is {key}): the data or labels changed since `make teacher`"
    )


def attach(config: Any, prep: Any) -> dict[str, Any]:
    """Give every training example its teacher logits, or say why this run is not distilled.

    Returns the record kept in ``bundle.json["history"]``. A directory without this data's
    file means no distillation (said loudly); an explicit file that does not match, missing
    rows, or dev rows the teacher trained on are errors.
    """
    from training.reports import log

    if not config.teacher_logits:
        return {"used": False, "reason": "no --teacher-logits given"}
    if config.kd_alpha == 0.0:
        return {"used": False, "reason": "kd_alpha is 0"}
    key = data_key(prep.heads, prep.data_info)
    manifest, note = resolve(config.teacher_logits, key)
    if manifest is None:
        log(f"NOTE: training WITHOUT distillation: {note}; run `make teacher` for a distilled student")
        return {"used": False, "reason": note, "key": key}
    teacher = TeacherLogits(manifest)
    teacher.check(prep.heads, prep.data_info)
    for h, (head, _) in enumerate(prep.heads):
        dev = [t for e, t in zip(prep.dev, prep.dev_texts, strict=True) if e.head == h]
        _, _, leaked = teacher.lookup(head, dev)
        if leaked.any():
            first = dev[int(np.argmax(leaked))]
            raise TeacherFileError(
                f"{manifest}: the teacher trained on {int(leaked.sum())} of this run's {head} dev rows "
                f"(e.g. {first[:60]!r}): it used another dev split; train the teacher with this recipe's "
                "split (seed, dev fraction, holdouts)"
            )
    head_of = {name: ex[0].head for name, ex in prep.train.items() if ex}
    for name, examples in prep.train.items():
        if not examples:
            continue
        head = prep.heads[head_of[name]][0]
        logits, found, _ = teacher.lookup(head, prep.train_texts[name])
        if not found.all():
            path, rows = prep.train_rows[name]
            missing = [rows[i] for i in np.flatnonzero(~found)[:5]]
            raise TeacherFileError(
                f"{manifest}: no teacher logits for {int((~found).sum())} training row(s) of {path} "
                f"(rows {missing}...); re-run `make teacher`"
            )
        for e, row in zip(examples, logits, strict=True):
            e.soft = row
    log(
        f"distilling from {manifest} (teacher {teacher.manifest.get('teacher', {}).get('name')}): "
        f"alpha {config.kd_alpha}, temperature {config.kd_temperature}"
    )
    return {
        "used": True,
        "file": str(manifest),
        "npz_sha256": teacher.manifest.get("npz_sha256"),
        "key": key,
        "teacher": teacher.manifest.get("teacher"),
        "alpha": config.kd_alpha,
        "temperature": config.kd_temperature,
    }
