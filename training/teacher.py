"""``make teacher``'s second half: soft labels of a trained teacher bundle for every training text.

    python -m training.teacher current --teacher models/sentiwire-teacher --data ... (exit 0: up to date)
    python -m training.teacher logits --teacher models/sentiwire-teacher --out models/teacher-logits

The teacher is an ordinary bundle trained by ``sentiwire train`` (MPNet, resumable with
``--checkpoint-every``/``--resume``); its recipe says which data it was trained on. ``logits``
re-reads that data (refusing files that changed since), runs the bundle's fp32 graph over
every row of every training source (train and dev parts), and writes
``<out>/<key>.npz`` + ``<key>.json`` (:mod:`training.distill`). ``current`` tells the Makefile
whether the teacher bundle was trained on exactly the given sources, so its cost is paid once
per data change.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from streamer.errors import ExitCode, SentiwireError, exit_code_for
from training.data import DataError
from training.distill import FORMAT, data_key, hashes, write_logits


def _teacher_prep(bundle: Any) -> Any:
    """The teacher's own data preparation, re-run from its recipe (no tokenizing needed)."""
    from training.config import TrainConfig
    from training.dataset import prepare

    cfg = TrainConfig.from_json(bundle.manifest["recipe"])
    cfg.progress = False
    prep = prepare(cfg, lambda texts: [[0]] * len(texts))
    recorded = {
        (d["head"], d["path"], d["role"]): d.get("fingerprint") for d in bundle.manifest.get("data", [])
    }
    for d in prep.data_info:
        if recorded.get((d["head"], d["path"], d["role"])) != d["fingerprint"]:
            raise DataError(
                f"{d['path']}: its rows changed since the teacher {bundle.path} was trained; re-run `make teacher`"
            )
    return prep


def teacher_logits(teacher_dir: Path, out_dir: Path, *, batch_size: int = 64, progress: bool = True) -> Path:
    """Write (or find up to date) the teacher-logits file for the teacher bundle's data."""
    from tqdm.auto import tqdm  # type: ignore[import-untyped]

    from streamer.enums import Variant
    from streamer.model.bundle import load_bundle
    from streamer.model.classifier import Classifier

    bundle = load_bundle(teacher_dir, verify=True)
    prep = _teacher_prep(bundle)
    key = data_key(prep.heads, prep.data_info)
    existing = out_dir / f"{key}.json"
    if existing.is_file():
        import json

        if json.loads(existing.read_text()).get("teacher", {}).get("version") == bundle.version:
            print(f"teacher logits up to date: {existing}", file=sys.stderr)
            return existing
    clf = Classifier(bundle, variant=Variant.FP32)
    arrays: dict[str, np.ndarray] = {}
    for h, (head, labels) in enumerate(prep.heads):
        trained = [t for texts in _head_train(prep, h).values() for t in texts]
        dev = [t for e, t in zip(prep.dev, prep.dev_texts, strict=True) if e.head == h]
        every = [*trained, *dev, *_all_rows(bundle, head)]  # also rows the teacher's own recipe skipped
        keys = hashes(every)
        uniq, first = np.unique(keys, return_index=True)
        texts = [every[int(i)] for i in first]
        flags = np.isin(uniq, hashes(trained))
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # less padding per batch
        logits = np.zeros((len(texts), len(labels)), dtype=np.float32)
        index = [h2.name for h2 in bundle.heads].index(head)
        bar = tqdm(total=len(texts), desc=f"teacher logits {head}", unit="text", disable=not progress)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            out = clf.runtime.run(clf.encode([texts[i] for i in rows]))
            logits[rows] = out[index]
            bar.update(len(rows))
        bar.close()
        arrays[f"keys__{head}"], arrays[f"logits__{head}"], arrays[f"trained__{head}"] = uniq, logits, flags
    manifest = {
        "format": FORMAT,
        "key": key,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "teacher": {
            "name": bundle.name,
            "version": bundle.version,
            "path": str(bundle.path),
            "base_model": bundle.manifest.get("base_model", {}).get("name"),
            "metrics": bundle.manifest.get("metrics", {}),
        },
        "heads": {head: list(labels) for head, labels in prep.heads},
        "sources": [
            {k: d[k] for k in ("head", "path", "sha256", "fingerprint", "rows")}
            for d in prep.data_info
            if d["role"] == "train"
        ],
        "rows": {head: len(arrays[f"keys__{head}"]) for head, _ in prep.heads},
    }
    path = write_logits(out_dir, key, manifest, arrays)
    print(f"teacher logits written: {path}", file=sys.stderr)
    return path


def _all_rows(bundle: Any, head: str) -> list[str]:
    """Every usable row of the head's training sources (``max_rows`` may have trained on fewer)."""
    from training.config import TrainConfig
    from training.data import load_source

    cfg = TrainConfig.from_json(bundle.manifest["recipe"])
    labels = list(bundle.head(head).labels)
    return [
        t for spec in cfg.data if spec.head == head for t in load_source(spec, allowed_labels=labels).texts
    ]


def _head_train(prep: Any, h: int) -> dict[str, list[str]]:
    return {n: prep.train_texts[n] for n, ex in prep.train.items() if ex and ex[0].head == h}


def is_current(teacher_dir: Path, data: list[str]) -> tuple[bool, str]:
    """Whether the teacher bundle was trained on exactly these sources, with unchanged files."""
    from streamer.model.bundle import BundleError, load_bundle, sha256_file
    from training.data import parse_source

    try:
        bundle = load_bundle(teacher_dir, verify=True)
    except BundleError as exc:
        return False, f"no usable teacher bundle ({exc})"
    wanted = [parse_source(s).to_json() for s in data]
    recipe = bundle.manifest.get("recipe", {}).get("data", [])
    if wanted != recipe:
        return False, f"{teacher_dir} was trained on other sources than these"
    for d in bundle.manifest.get("data", []):
        if not Path(d["path"]).is_file() or sha256_file(Path(d["path"])) != d["sha256"]:
            return False, f"{d['path']} changed since {teacher_dir} was trained"
    return True, f"{teacher_dir} is up to date for these sources"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.teacher", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    cur = sub.add_parser("current", help="exit 0 if the teacher bundle was trained on exactly --data")
    cur.add_argument("--teacher", type=Path, required=True)
    cur.add_argument(
        "--data", action="append", default=[], help="HEAD=PATH[?options], as for sentiwire train"
    )
    lg = sub.add_parser("logits", help="write the teacher's logits for every training text")
    lg.add_argument("--teacher", type=Path, required=True)
    lg.add_argument("--out", type=Path, required=True)
    lg.add_argument("--batch-size", type=int, default=64)
    lg.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "current":
            ok, why = is_current(args.teacher, args.data)
            print(why, file=sys.stderr)
            return int(ExitCode.OK) if ok else int(ExitCode.FAILED)
        teacher_logits(args.teacher, args.out, batch_size=args.batch_size, progress=not args.no_progress)
    except SentiwireError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return int(exit_code_for(exc))
    except KeyboardInterrupt:
        print("interrupted; no teacher-logits file was written", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    return int(ExitCode.OK)


if __name__ == "__main__":
    sys.exit(main())
