"""One retrain, start to end: new data, candidate recipe, training, scoring, decision, promotion.

Under the models directory's lock; every decision (promoted or refused) is appended to
``history.jsonl``; a refused candidate and its data are removed unless ``keep_rejected``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamer.enums import Variant
from training.retrain.decision import decide
from training.retrain.errors import RetrainError
from training.retrain.newdata import prepare_data, rebase_recipe_data
from training.retrain.registry import ModelsDir, append_history, locked, read_history, swap_symlink
from training.retrain.scoring import evaluate

if TYPE_CHECKING:
    from streamer.model.bundle import Bundle
    from training.config import TrainConfig
    from training.data import SourceSpec


@dataclass
class RetrainOptions:
    served: Path
    data: list[SourceSpec] = field(default_factory=list)
    holdout: list[SourceSpec] = field(default_factory=list)
    tolerance: float = 0.01
    holdout_fraction: float = 0.2
    seed: int = 13
    recipe_data: bool = True
    data_root: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    keep_rejected: bool = False
    variant: Variant = Variant.FP32
    dry_run: bool = False


def candidate_config(
    bundle: Bundle, opts: RetrainOptions, train: Sequence[SourceSpec], out: Path
) -> TrainConfig:
    """The served bundle's recipe, with the new data added and the options' overrides applied."""
    from training.config import TrainConfig, TrainError

    recipe = bundle.manifest.get("recipe")
    if not isinstance(recipe, dict) or "data" not in recipe:
        raise RetrainError(f"{bundle.path}: bundle.json has no training recipe; it cannot be retrained")
    try:
        cfg = TrainConfig.from_json(recipe)
    except (TrainError, KeyError, TypeError) as exc:
        raise RetrainError(f"{bundle.path}: bundle.json recipe is not a training config: {exc}") from exc
    base = rebase_recipe_data(cfg.data, opts.data_root) if opts.recipe_data else []
    cfg.dev = rebase_recipe_data(cfg.dev, opts.data_root) if opts.recipe_data else []
    cfg.data = [*base, *train]
    cfg.labels = {h.name: list(h.labels) for h in bundle.heads}
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for key, value in opts.overrides.items():
        if key not in fields or key in ("data", "dev", "labels", "output", "version"):
            raise RetrainError(f"--set {key}: not a recipe field that can be overridden")
        setattr(cfg, key, value)
    cfg.output = str(out)
    cfg.version = out.name
    cfg.name = bundle.name
    cfg.overwrite = False
    cfg.progress = False
    return cfg


def retrain(opts: RetrainOptions) -> dict[str, Any]:
    """Run one retrain; returns the history record (also appended to history.jsonl)."""
    from streamer.model.bundle import load_bundle, read_manifest, write_manifest
    from training.config import TrainError
    from training.trainer import train

    md = ModelsDir(opts.served)
    md.check()
    with locked(md.root):
        started = time.monotonic()
        current = load_bundle(opts.served, verify=True)
        version = md.new_version()
        data_dir = md.data(version)
        prep = prepare_data(
            current, opts.data, opts.holdout, data_dir, fraction=opts.holdout_fraction, seed=opts.seed
        )
        for note in prep.notes:
            print(f"note: {note}", file=sys.stderr)
        if not prep.train:
            # A scheduled run with no new labels is normal: report it, train nothing, record nothing.
            return {
                "event": "retrain",
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
                "current": {"version": current.version, "path": str(current.path)},
                "candidate": {"version": None},
                "skipped": True,
                "decision": {
                    "promote": False,
                    "reason": "no new labeled rows (--data / --corrections-topic)",
                },
            }
        cand_dir = md.candidate(version)
        cfg = candidate_config(current, opts, prep.train, cand_dir)
        record: dict[str, Any] = {
            "event": "retrain",
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "current": {"version": current.version, "path": str(current.path)},
            "candidate": {"version": version},
            "new_data": [s.to_json() for s in prep.train],
            "holdout": {h: [s.spec.path for s in sets] for h, sets in prep.holdout.items()},
        }
        if opts.dry_run:
            record["decision"] = {"promote": False, "reason": "dry run: nothing trained"}
            record["recipe"] = cfg.to_json()
            return record
        try:
            train(cfg)
        except TrainError as exc:
            raise RetrainError(f"candidate training failed: {exc}") from exc
        cur_metrics = evaluate(current.path, prep.holdout, opts.variant)
        cand_metrics = evaluate(cand_dir, prep.holdout, opts.variant)
        decision = decide(cur_metrics, cand_metrics, opts.tolerance)
        record["metrics"] = {"current": cur_metrics, "candidate": cand_metrics}
        record["decision"] = decision.to_json()
        record["seconds"] = round(time.monotonic() - started, 1)
        if decision.promote:
            final = md.versions / version
            md.versions.mkdir(parents=True, exist_ok=True)
            os.replace(cand_dir, final)
            manifest = read_manifest(final)
            # The promoted bundle carries its parent's history, the refusals judged against
            # the parent since it was promoted, and this decision.
            refused = [
                h
                for h in read_history(md.history)
                if h.get("current", {}).get("version") == current.version and not h["decision"].get("promote")
            ]
            manifest["history"] = [*current.manifest.get("history", []), *refused, record]
            write_manifest(final, manifest)
            load_bundle(final, verify=True)
            record["candidate"]["path"] = str(final)
            swap_symlink(opts.served, final)
        else:
            record["candidate"]["path"] = str(cand_dir) if opts.keep_rejected else None
            if not opts.keep_rejected:
                shutil.rmtree(cand_dir, ignore_errors=True)
                shutil.rmtree(data_dir, ignore_errors=True)
        append_history(md.history, record)
        return record
