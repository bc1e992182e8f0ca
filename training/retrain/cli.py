"""The ``sentiwire retrain`` and ``sentiwire promote`` commands: options in, one summary out."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from streamer.enums import Precision, Runtime, Variant
from streamer.errors import ExitCode, SentiwireError, exit_code_for
from training.retrain.corrections import read_corrections
from training.retrain.errors import CandidateFailed, RetrainError
from training.retrain.registry import adopt
from training.retrain.run import RetrainOptions, retrain
from training.retrain.shadowing import PromoteOptions, promote_shadow


def _parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise RetrainError(f"--set {item!r}: expected KEY=VALUE (VALUE as JSON, e.g. epochs=2)")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def summary(record: Mapping[str, Any]) -> str:
    """The decision in one line (PROMOTED / SHADOWED / REFUSED / FAILED / NOTHING TO DO), then per-head scores."""
    d = record["decision"]
    if record.get("skipped"):
        return f"NOTHING TO DO: {d['reason']}; {record['current']['version']} keeps serving"
    verdict = (
        "PROMOTED"
        if d["promote"]
        else "SHADOWED"
        if d.get("shadowed")
        else "FAILED"
        if d.get("failed")
        else "REFUSED"
    )
    lines = [
        f"{verdict}: {record['candidate']['version']} (current {record['current']['version']}): {d['reason']}"
    ]
    heads = d.get("heads") or {}
    scored_on = record.get("scored_on") or {}
    if heads:
        lines.append(f"{'head':<12} {'n':>6} {'current F1':>11} {'candidate F1':>13} {'delta':>8}  scored on")
        for h, r in heads.items():
            lines.append(
                f"{h:<12} {r['n']:>6} {r['current']:>11.4f} {r['candidate']:>13.4f} {r['delta']:>+8.4f}"
                f"  {scored_on.get(h, '')}".rstrip()
            )
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    """Attach ``sentiwire retrain``."""

    @app.command("retrain")
    def retrain_cmd(
        served: Annotated[Path, typer.Option(help="served bundle symlink (models/current)")] = Path(
            "models/current"
        ),
        data: Annotated[
            list[str] | None, typer.Option(help="new labeled data HEAD=PATH[?options] (repeatable)")
        ] = None,
        holdout: Annotated[
            list[str] | None, typer.Option(help="holdout HEAD=PATH both models are scored on (repeatable)")
        ] = None,
        corrections_topic: Annotated[
            str | None, typer.Option(help="Kafka topic of human-corrected labels")
        ] = None,
        config: Annotated[
            Path | None, typer.Option(help="daemon config file (Kafka settings for --corrections-topic)")
        ] = None,
        tolerance: Annotated[float, typer.Option(help="largest allowed macro-F1 drop on any head")] = 0.01,
        holdout_fraction: Annotated[
            float, typer.Option(help="share of new data held out when no --holdout")
        ] = 0.2,
        seed: Annotated[int, typer.Option(help="seed of the holdout split")] = 13,
        recipe_data: Annotated[
            bool, typer.Option(help="also train on the recipe's data (--no-recipe-data: new data only)")
        ] = True,
        data_root: Annotated[
            Path | None, typer.Option(help="resolve relative recipe data paths here")
        ] = None,
        set_: Annotated[
            list[str] | None, typer.Option("--set", help="override a recipe field, e.g. --set epochs=2")
        ] = None,
        keep_rejected: Annotated[
            bool, typer.Option(help="keep a refused candidate under candidates/")
        ] = False,
        variant: Annotated[
            Variant | None,
            typer.Option(
                help="ONNX graph scored on the holdout, as model.variant (default: follows --precision, else fp32)"
            ),
        ] = None,
        precision: Annotated[
            Precision | None,
            typer.Option(help="arithmetic scored in, as model.precision (default: follows --variant)"),
        ] = None,
        runtime: Annotated[
            Runtime,
            typer.Option(help="inference engine scored on, as model.runtime (auto: chosen per hardware)"),
        ] = Runtime.AUTO,
        dry_run: Annotated[
            bool, typer.Option(help="prepare data and print the candidate recipe; train nothing")
        ] = False,
        adopt_dir: Annotated[
            bool,
            typer.Option(
                "--adopt", help="first move a plain bundle dir at --served to versions/<v> and link it"
            ),
        ] = False,
        shadow: Annotated[
            Path | None,
            typer.Option(
                help="a passing candidate goes to this symlink (the daemons' model.shadow.path), "
                "not to --served; `sentiwire promote` decides"
            ),
        ] = None,
    ) -> None:
        """Retrain from the served bundle's recipe plus new labels; promote only if no head gets worse.

        Exit 0 promoted or shadowed (or nothing to do), 4 refused, 1 the candidate failed
        (training, export), 2 bad input, 3 Kafka unreachable, 130 interrupted.
        """
        from training.data import parse_source

        try:
            if corrections_topic and config is None:
                raise RetrainError("--corrections-topic needs --config (the Kafka settings)")
            if adopt_dir:
                adopt(served)
            specs = [parse_source(s) for s in data or []]
            held = [parse_source(s) for s in holdout or []]
            with tempfile.TemporaryDirectory(prefix="sentiwire-corrections-") as stage:
                if corrections_topic and config is not None:
                    specs += read_corrections(config, corrections_topic, Path(stage))
                opts = RetrainOptions(
                    served=served,
                    data=specs,
                    holdout=held,
                    tolerance=tolerance,
                    holdout_fraction=holdout_fraction,
                    seed=seed,
                    recipe_data=recipe_data,
                    data_root=data_root,
                    overrides=_parse_overrides(set_ or []),
                    keep_rejected=keep_rejected,
                    variant=variant,
                    precision=precision,
                    runtime=runtime,
                    dry_run=dry_run,
                    shadow=shadow,
                )
                record = retrain(opts)
        except CandidateFailed as exc:
            typer.echo(summary(exc.record), err=True)
            raise typer.Exit(int(exc.exit_code)) from None
        except KeyboardInterrupt:
            typer.echo("error: interrupted; nothing was promoted", err=True)
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
        except SentiwireError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(int(exit_code_for(exc))) from None
        if dry_run:
            typer.echo(json.dumps(record, indent=2))
            return
        typer.echo(summary(record))
        d = record["decision"]
        if not record.get("skipped") and not d["promote"] and not d.get("shadowed"):
            raise typer.Exit(int(ExitCode.REFUSED))


def promote_summary(record: Mapping[str, Any]) -> str:
    """The promote decision in one line (PROMOTED / REFUSED), then per-head samples and agreement."""
    d = record["decision"]
    cand, cur = record["candidate"]["version"], record["current"]["version"]
    if record.get("skipped"):
        return f"NOTHING TO DO: {d['reason']}; {cur} keeps serving"
    if d["promote"]:
        lines = [f"PROMOTED: {cand} (was {cur}): {d['reason']}"]
    else:
        lines = [f"REFUSED: {cand} stays a shadow, {cur} keeps serving: {d['reason']}"]
    if d["heads"]:
        lines.append(f"{'head':<12} {'samples':>8} {'agreement':>10}")
        for h, e in d["heads"].items():
            agreement = "-" if e["agreement"] is None else f"{e['agreement']:.4f}"
            lines.append(f"{h:<12} {e['samples']:>8} {agreement:>10}")
    return "\n".join(lines)


def register_promote(app: typer.Typer) -> None:
    """Attach ``sentiwire promote``."""

    @app.command("promote")
    def promote_cmd(
        served: Annotated[Path, typer.Option(help="served bundle symlink")] = Path("models/current"),
        shadow: Annotated[
            Path, typer.Option(help="shadow symlink (`retrain --shadow`, the daemons' model.shadow.path)")
        ] = Path("models/shadow"),
        metrics_url: Annotated[
            list[str] | None,
            typer.Option(help="a daemon's /metrics URL (repeatable: every replica running the shadow)"),
        ] = None,
        min_samples: Annotated[int, typer.Option(help="fewest compared samples per head")] = 1000,
        min_agreement: Annotated[
            float, typer.Option(help="lowest share of labels equal to the served model's, per head")
        ] = 0.9,
        force: Annotated[
            bool, typer.Option(help="promote whatever the evidence says (still recorded)")
        ] = False,
        timeout: Annotated[float, typer.Option(help="seconds to wait for each /metrics")] = 10.0,
    ) -> None:
        """Promote the shadow's bundle to served if every head has enough samples and agreement.

        Exit 0 promoted (or the shadow is already served), 4 refused, 3 metrics unreadable or not
        about this shadow, 2 bad input, 130 interrupted. Every decision goes to history.jsonl.
        """
        opts = PromoteOptions(
            served=served,
            shadow=shadow,
            metrics_urls=list(metrics_url or []),
            min_samples=min_samples,
            min_agreement=min_agreement,
            force=force,
            timeout_s=timeout,
        )
        try:
            record = promote_shadow(opts)
        except KeyboardInterrupt:
            typer.echo("error: interrupted; nothing was promoted", err=True)
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
        except SentiwireError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(int(exit_code_for(exc))) from None
        typer.echo(promote_summary(record))
        if not record.get("skipped") and not record["decision"]["promote"]:
            raise typer.Exit(int(ExitCode.REFUSED))
