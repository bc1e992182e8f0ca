"""One retrain, start to end: new data, candidate recipe, training, scoring, decision, promotion.

Under the models directory's lock; every decision (promoted, shadowed or refused) is appended
to ``history.jsonl``; a refused candidate and its data are removed unless ``keep_rejected``.
With ``shadow``, a candidate that passes the gate is kept in ``versions/<v>`` and the shadow
link (not the served one) points at it: the daemons' shadow comparison decides the promotion.
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

from streamer.enums import Precision, Runtime, Variant
from streamer.errors import ExitCode, SentiwireError, exit_code_for
from training.retrain.decision import decide
from training.retrain.errors import CandidateFailed, RetrainError
from training.retrain.newdata import prepare_data, rebase_recipe_data
from training.retrain.registry import ModelsDir, append_history, locked, read_history, swap_symlink
from training.retrain.scoring import SERVED_HOLDOUT, HoldoutPlan, evaluate, plan_holdout
from training.retrain.shadowing import check_shadow_link

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
    # Scored as the daemons serve: model.variant / precision / runtime (None: follows the other).
    variant: Variant | None = None
    precision: Precision | None = None
    runtime: Runtime = Runtime.AUTO
    dry_run: bool = False
    shadow: Path | None = None  # a passing candidate goes here (a symlink), not to ``served``


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


# Recipe fields that change the dev split: with them overridden, the candidate may train on
# rows of the served bundle's holdout.
SPLIT_FIELDS = ("seed", "dev_fraction", "max_rows_per_source", "max_dev_rows_per_source", "dedupe")


def retrain(opts: RetrainOptions) -> dict[str, Any]:
    """Run one retrain; returns the history record (also appended to history.jsonl).

    A refusal is a record with ``decision.promote`` false. A candidate that fails (training,
    export or scoring) is recorded as well, then raised as :class:`CandidateFailed`.
    """
    from streamer.model.bundle import load_bundle

    md = ModelsDir(opts.served)
    md.check()
    if opts.shadow is not None:
        check_shadow_link(opts.shadow, opts.served)
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
        try:
            cfg = candidate_config(current, opts, prep.train, cand_dir)
            plan = plan_holdout(current, prep.holdout, prep.given)
            check_scoring(current, opts)
        except BaseException:
            shutil.rmtree(data_dir, ignore_errors=True)
            raise
        for head, specs in plan.sources.items():
            if plan.scored_on[head] == SERVED_HOLDOUT:
                print(f"note: holdout {head}: the served bundle's own {len(specs)} file(s)", file=sys.stderr)
        split = sorted(set(opts.overrides) & set(SPLIT_FIELDS))
        if split and opts.recipe_data and SERVED_HOLDOUT in plan.scored_on.values():
            print(
                f"note: --set {', '.join(split)} changes the recipe's dev split: the candidate may train "
                "on rows of the served bundle's holdout, which flatters it",
                file=sys.stderr,
            )
        record: dict[str, Any] = {
            "event": "retrain",
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "current": {"version": current.version, "path": str(current.path)},
            "candidate": {"version": version},
            "new_data": [s.to_json() for s in prep.train],
            "holdout": plan.paths(),
            "scored_on": plan.scored_on,
        }
        refusal = refusal_before_training(current, cfg, plan, opts)
        if opts.dry_run:
            why = f"; would refuse: {refusal}" if refusal else ""
            record["decision"] = {"promote": False, "reason": f"dry run: nothing trained{why}"}
            record["recipe"] = cfg.to_json()
            return record
        if refusal is not None:
            record["decision"] = _no(refusal, opts)
            return _not_promoted(md, record, opts, started)
        try:
            scored = _train_and_score(current, cfg, plan, opts)
        except KeyboardInterrupt:
            _remove_candidate(md, version)
            raise
        except Exception as exc:
            reason, code = _failure(exc, md, version, keep=opts.keep_rejected)
            record["decision"] = _no(reason, opts, failed=True)
            _not_promoted(md, record, opts, started)
            raise CandidateFailed(reason, record, code) from exc
        if isinstance(scored, str):  # the candidate cannot serve the scored variant
            record["decision"] = _no(scored, opts)
            return _not_promoted(md, record, opts, started)
        cur_metrics, cand_metrics = scored
        decision = decide(cur_metrics, cand_metrics, opts.tolerance, heads=[h.name for h in current.heads])
        record["metrics"] = {"current": cur_metrics, "candidate": cand_metrics}
        record["decision"] = decision.to_json()
        if not decision.promote:
            return _not_promoted(md, record, opts, started)
        if opts.shadow is not None:
            # Passed the gate, but the daemons' shadow decides (`sentiwire promote`).
            record["decision"].update(
                promote=False,
                shadowed=True,
                reason=f"{decision.reason}; shadowed at {opts.shadow} (`sentiwire promote` decides)",
            )
            record["shadow_link"] = str(opts.shadow)
        record["seconds"] = round(time.monotonic() - started, 1)
        _promote(md, current, version, record)
        swap_symlink(opts.shadow or opts.served, Path(record["candidate"]["path"]))
        append_history(md.history, record)
        return record


def _no(reason: str, opts: RetrainOptions, *, failed: bool = False) -> dict[str, Any]:
    """A decision not to promote that no per-head comparison made."""
    out: dict[str, Any] = {"promote": False, "tolerance": opts.tolerance, "reason": reason, "heads": {}}
    return {**out, "failed": True} if failed else out


def refusal_before_training(
    current: Bundle, cfg: TrainConfig, plan: HoldoutPlan, opts: RetrainOptions
) -> str | None:
    """Why the candidate cannot be judged (or would lack a served head) before any training."""
    trained = {s.head for s in cfg.data}
    lacking = [h.name for h in current.heads if h.name not in trained]
    if lacking:
        why = " (--no-recipe-data: only the new rows train it)" if not opts.recipe_data else ""
        return f"the candidate would have no head(s) {lacking}: no training rows for them{why}"
    if plan.unscorable:
        return (
            f"head(s) {plan.unscorable} cannot be scored: the new data has no rows for them and the served "
            f"bundle {current.version} keeps no holdout (exported before bundles stored one); "
            "pass --holdout HEAD=PATH for them"
        )
    return None


def check_scoring(current: Bundle, opts: RetrainOptions) -> None:
    """Load the served bundle as it will be scored, before minutes of training: a variant and
    precision that disagree, or a runtime not installed, is bad input named by its option."""
    from streamer.model.errors import InferenceError
    from training.evaluate import load_offline_classifier

    try:
        load_offline_classifier(
            current.path, variant=opts.variant, precision=opts.precision, runtime=opts.runtime
        )
    except InferenceError as exc:
        raise RetrainError(str(exc)) from None


def _train_and_score(
    current: Bundle, cfg: TrainConfig, plan: HoldoutPlan, opts: RetrainOptions
) -> tuple[dict[str, Any], dict[str, Any]] | str:
    """Both bundles' holdout metrics, or why the candidate cannot be promoted unscored: the
    daemons serve int8 (as scored here) and the candidate's int8 failed its export gate."""
    from streamer.model.bundle import load_bundle
    from training.trainer import train

    cand_dir = train(cfg)
    cand = load_bundle(cand_dir, verify=False)
    as_int8 = opts.variant == Variant.INT8 or opts.precision == Precision.INT8
    refusal = cand.int8_refusal() if as_int8 else None
    if refusal:
        return f"not promoted: scored as int8, and {refusal}"
    cand_heads = {h.name for h in cand.heads}
    how: dict[str, Any] = {"precision": opts.precision, "runtime": opts.runtime}
    cur_metrics = evaluate(current.path, plan.sources, opts.variant, **how)
    cand_metrics = evaluate(cand_dir, plan.sources, opts.variant, heads=cand_heads, **how)
    return cur_metrics, cand_metrics


def _failed_export_weights(md: ModelsDir, version: str) -> Path:
    """Where ``training.trainer`` keeps the weights of a candidate whose export failed."""
    return md.candidate(version).with_name(f".{version}.failed-export-{version}.pt")


def _failure(exc: Exception, md: ModelsDir, version: str, *, keep: bool) -> tuple[str, ExitCode]:
    """One line saying what failed, and the exit code."""
    from training.config import TrainError
    from training.export import ExportError

    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, ExportError):
        weights = _failed_export_weights(md, version)
        kept = f"; trained weights kept in {weights}" if keep and weights.exists() else ""
        hint = " (retrain: --set force=true)" if "--force" in first else ""
        return f"candidate export failed: {first}{hint}{kept}", ExitCode.FAILED
    if isinstance(exc, TrainError):
        return f"candidate training failed: {first}", exit_code_for(exc)
    if isinstance(exc, SentiwireError):
        return f"candidate failed: {first}", exit_code_for(exc)
    return f"candidate failed: {type(exc).__name__}: {first}", ExitCode.FAILED


def _remove_candidate(md: ModelsDir, version: str) -> None:
    shutil.rmtree(md.candidate(version), ignore_errors=True)
    shutil.rmtree(md.data(version), ignore_errors=True)
    _failed_export_weights(md, version).unlink(missing_ok=True)


def _not_promoted(
    md: ModelsDir, record: dict[str, Any], opts: RetrainOptions, started: float
) -> dict[str, Any]:
    """Record a refused or failed candidate; remove it and its data unless ``keep_rejected``."""
    version = record["candidate"]["version"]
    cand_dir = md.candidate(version)
    record["candidate"]["path"] = str(cand_dir) if opts.keep_rejected and cand_dir.exists() else None
    if not opts.keep_rejected:
        _remove_candidate(md, version)
    record["seconds"] = round(time.monotonic() - started, 1)
    append_history(md.history, record)
    return record


def _promote(md: ModelsDir, current: Bundle, version: str, record: dict[str, Any]) -> None:
    """Move the candidate to ``versions/<version>`` with its lineage in ``bundle.json["history"]``."""
    from streamer.model.bundle import load_bundle, read_manifest, write_manifest

    final = md.versions / version
    md.versions.mkdir(parents=True, exist_ok=True)
    os.replace(md.candidate(version), final)
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
