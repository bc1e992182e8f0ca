"""Training sub-commands of ``sentiwire``. No heavy imports here.

torch/transformers load only inside ``train``; ``predict`` and ``evaluate`` run on the serving
stack (ONNX Runtime + tokenizers) so they measure exactly what the daemon serves. Errors end
with one ``error:`` line and an ``ExitCode`` (2 bad input, 1 failed export, 130 interrupted).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from streamer.enums import Device, Precision, Runtime, Variant
from streamer.errors import ExitCode, SentiwireError, exit_code_for

DATA_HELP = (
    "HEAD=PATH[?text=COL&label=COL&map=FROM:TO,..&where=COL:VAL&slice=COL&name=NAME"
    "&scored=a,b&holdout=FRACTION&part=train|holdout&dev=PATH] (CSV, JSONL or Parquet; repeatable)"
)

# The daemon's model.variant/precision/runtime/device, so predict and evaluate run what serve runs.
VariantOption = Annotated[
    Variant | None,
    typer.Option(help="ONNX graph to run, as model.variant (default: follows --precision, else fp32)"),
]
PrecisionOption = Annotated[
    Precision | None,
    typer.Option(help="arithmetic to run in, as model.precision (default: follows --variant)"),
]
RuntimeOption = Annotated[
    Runtime, typer.Option(help="inference engine, as model.runtime (auto: chosen per hardware)")
]
DeviceOption = Annotated[Device, typer.Option(help="where inference runs, as model.device")]


def _fail(msg: str, code: ExitCode = ExitCode.USAGE) -> typer.Exit:
    typer.secho(f"error: {msg}", err=True, fg=typer.colors.RED)
    return typer.Exit(int(code))


def _sources(items: list[str], text_column: str, label_column: str, label_maps: list[str]) -> list[Any]:
    from training.data import parse_label_maps, parse_source

    maps = parse_label_maps(label_maps)
    return [
        parse_source(
            s,
            text_column=text_column,
            label_column=label_column,
            label_map=maps.get(s.partition("=")[0].strip()),
        )
        for s in items
    ]


def train_cmd(
    data: Annotated[list[str], typer.Option("--data", help=DATA_HELP)],
    dev: Annotated[
        list[str] | None, typer.Option("--dev", help="HEAD=PATH dev set (else a stratified split)")
    ] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="bundle directory to write")] = Path(
        "models/sentiwire-minilm"
    ),
    base_model: Annotated[str, typer.Option(help="minilm | mpnet | local model directory")] = "minilm",
    name: Annotated[str, typer.Option(help="bundle name")] = "sentiwire",
    version: Annotated[str | None, typer.Option(help="bundle version (default: UTC timestamp)")] = None,
    text_column: Annotated[str, typer.Option(help="default text column")] = "text",
    label_column: Annotated[str, typer.Option(help="default label column")] = "label",
    label_map: Annotated[
        list[str] | None,
        typer.Option("--label-map", help="HEAD:FROM=TO[,FROM=TO] (e.g. sentiment:Bearish=negative)"),
    ] = None,
    labels: Annotated[
        list[str] | None, typer.Option("--labels", help="HEAD=a,b,c: fixed ordered label set for a head")
    ] = None,
    max_length: Annotated[int, typer.Option(help="max tokens per text (longer texts are truncated)")] = 64,
    epochs: Annotated[int, typer.Option()] = 4,
    batch_size: Annotated[int, typer.Option()] = 32,
    lr: Annotated[float, typer.Option(help="encoder learning rate")] = 5e-5,
    head_lr: Annotated[float | None, typer.Option(help="learning rate of the new heads")] = 1e-3,
    weight_decay: Annotated[float, typer.Option()] = 0.01,
    warmup_ratio: Annotated[float, typer.Option()] = 0.06,
    grad_clip: Annotated[float, typer.Option()] = 1.0,
    patience: Annotated[int, typer.Option(help="evaluations without dev improvement before stopping")] = 2,
    class_weights: Annotated[bool, typer.Option(help="balanced class weights in the loss")] = False,
    label_smoothing: Annotated[float, typer.Option()] = 0.0,
    dropout: Annotated[float, typer.Option()] = 0.1,
    seed: Annotated[int, typer.Option()] = 13,
    dev_fraction: Annotated[float, typer.Option(help="stratified dev share per source")] = 0.15,
    max_dev_rows: Annotated[int | None, typer.Option(help="cap dev rows per source (faster evals)")] = None,
    sampling_temperature: Annotated[
        float, typer.Option(help="source sampling ~ size**T (1 = proportional, 0 = uniform)")
    ] = 0.5,
    source_weight: Annotated[
        list[str] | None,
        typer.Option("--source-weight", help="SOURCE=W multiplies a source's sampling weight"),
    ] = None,
    steps_per_epoch: Annotated[int | None, typer.Option()] = None,
    eval_every: Annotated[
        int | None, typer.Option(help="steps between dev evaluations (default: epoch)")
    ] = None,
    max_rows: Annotated[int | None, typer.Option(help="subsample each source to at most N rows")] = None,
    freeze_embeddings: Annotated[bool, typer.Option(help="freeze word embeddings (faster on CPU)")] = False,
    freeze_layers: Annotated[
        int, typer.Option(help="freeze the N lowest encoder layers (faster on CPU)")
    ] = 0,
    max_train_minutes: Annotated[
        float | None, typer.Option(help="stop training after this long (evaluates, keeps the best)")
    ] = None,
    monitor: Annotated[
        str, typer.Option(help="early-stopping metric: mean | sources | HEAD | HEAD/SOURCE")
    ] = "mean",
    threads: Annotated[int, typer.Option(help="torch threads (0 = default)")] = 0,
    force: Annotated[
        bool,
        typer.Option(
            help="accept the int8 graph (servable as model.variant: int8) even if it fails the precision gate"
        ),
    ] = False,
    strict: Annotated[bool, typer.Option(help="skipped rows become errors")] = False,
    overwrite: Annotated[bool, typer.Option(help="replace an existing bundle at --output")] = False,
    progress: Annotated[bool, typer.Option(help="progress bars")] = True,
    leave_out: Annotated[
        list[str] | None,
        typer.Option("--leave-out", help="SOURCE (name or dataset directory): score it, do not train on it"),
    ] = None,
    teacher_logits: Annotated[
        str | None, typer.Option(help="teacher-logits file, or directory holding this data's (distillation)")
    ] = None,
    kd_alpha: Annotated[float, typer.Option(help="distillation share of the loss")] = 0.5,
    kd_temperature: Annotated[float, typer.Option(help="distillation temperature")] = 2.0,
    checkpoint_every: Annotated[
        int | None, typer.Option(help="save a resumable checkpoint every N steps (<output>.checkpoint.pt)")
    ] = None,
    resume: Annotated[bool, typer.Option(help="continue from the checkpoint if there is one")] = False,
    from_weights: Annotated[
        str | None,
        typer.Option(help="export the weights a failed export kept (.failed-export-<v>.pt); no training"),
    ] = None,
) -> None:
    """Fine-tune a multi-head classifier and write a verified ONNX bundle."""
    from training.data import DataError

    try:
        from training.config import TrainConfig
        from training.trainer import train
    except ImportError as exc:
        raise _fail(f"training needs the [train] extra (torch, transformers): {exc}") from exc
    try:
        weights = {}
        for item in source_weight or []:
            k, sep, v = item.partition("=")
            if not sep:
                raise DataError(f"--source-weight {item!r}: expected SOURCE=WEIGHT")
            weights[k] = float(v)
        fixed = {}
        for item in labels or []:
            k, sep, v = item.partition("=")
            if not sep or not v:
                raise DataError(f"--labels {item!r}: expected HEAD=a,b,c")
            fixed[k] = [x.strip() for x in v.split(",")]
        config = TrainConfig(
            data=_sources(data, text_column, label_column, label_map or []),
            dev=_sources(dev or [], text_column, label_column, label_map or []),
            labels=fixed,
            base_model=base_model,
            output=str(output),
            name=name,
            version=version,
            max_length=max_length,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            head_lr=head_lr,
            weight_decay=weight_decay,
            warmup_ratio=warmup_ratio,
            grad_clip=grad_clip,
            patience=patience,
            class_weights=class_weights,
            label_smoothing=label_smoothing,
            dropout=dropout,
            seed=seed,
            dev_fraction=dev_fraction,
            max_dev_rows_per_source=max_dev_rows,
            sampling_temperature=sampling_temperature,
            source_weights=weights,
            steps_per_epoch=steps_per_epoch,
            eval_every=eval_every,
            max_rows_per_source=max_rows,
            freeze_embeddings=freeze_embeddings,
            freeze_layers=freeze_layers,
            max_train_minutes=max_train_minutes,
            monitor=monitor,
            threads=threads,
            force=force,
            strict=strict,
            overwrite=overwrite,
            progress=progress,
            leave_out=leave_out or [],
            teacher_logits=teacher_logits,
            kd_alpha=kd_alpha,
            kd_temperature=kd_temperature,
            checkpoint_every=checkpoint_every,
            resume=resume,
            from_weights=from_weights,
        )
        path = train(config)
    except KeyboardInterrupt:
        raise _fail("interrupted; no bundle was written", ExitCode.INTERRUPTED) from None
    except ValueError as exc:  # e.g. a --source-weight that is not a number
        raise _fail(str(exc)) from exc
    except SentiwireError as exc:
        from streamer.model.bundle import BundleError

        # a bundle error here is about the bundle just exported: a failed export, not bad input
        code = ExitCode.FAILED if isinstance(exc, BundleError) else exit_code_for(exc)
        raise _fail(str(exc), code) from exc
    typer.echo(str(path))


def evaluate_cmd(
    model: Annotated[Path, typer.Option("--model", "-m", help="bundle directory")],
    data: Annotated[list[str], typer.Option("--data", help=DATA_HELP)],
    variant: VariantOption = None,
    precision: PrecisionOption = None,
    runtime: RuntimeOption = Runtime.AUTO,
    device: DeviceOption = Device.CPU,
    report: Annotated[Path | None, typer.Option(help="write the full metrics JSON here")] = None,
    text_column: Annotated[str, typer.Option()] = "text",
    label_column: Annotated[str, typer.Option()] = "label",
    label_map: Annotated[list[str] | None, typer.Option("--label-map", help="HEAD:FROM=TO[,FROM=TO]")] = None,
    strict: Annotated[bool, typer.Option(help="skipped rows become errors")] = False,
    batch_size: Annotated[int, typer.Option()] = 64,
) -> None:
    """Accuracy, macro-F1, per-class P/R/F1 and confusion matrix per head, on labeled files;
    the report says which runtime and precision ran."""
    from training.evaluate import evaluate_bundle, format_table

    try:
        sources = _sources(data, text_column, label_column, label_map or [])
        result = evaluate_bundle(
            model,
            sources,
            variant=variant,
            precision=precision,
            runtime=runtime,
            device=device,
            strict=strict,
            batch_size=batch_size,
        )
    except SentiwireError as exc:
        raise _fail(str(exc), exit_code_for(exc)) from exc
    typer.echo(format_table(result))
    skipped = sum(sum(r["skipped"].values()) for r in result["sources"])
    if skipped:
        typer.secho(f"{skipped} row(s) skipped (see above; --strict makes them errors)", err=True)
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(result, indent=2) + "\n")
        typer.echo(f"report: {report}")


def predict_cmd(
    model: Annotated[Path, typer.Option("--model", "-m", help="bundle directory")],
    input: Annotated[Path, typer.Option("--input", "-i", help=".csv, .jsonl or .parquet")],
    output: Annotated[Path, typer.Option("--output", "-o", help="JSONL, one line per input row")],
    text_column: Annotated[str, typer.Option()] = "text",
    variant: VariantOption = None,
    precision: PrecisionOption = None,
    runtime: RuntimeOption = Runtime.AUTO,
    device: DeviceOption = Device.CPU,
    strict: Annotated[bool, typer.Option(help="blank texts become errors")] = False,
    batch_size: Annotated[int, typer.Option()] = 64,
) -> None:
    """Label every row of a file with each head's label and probabilities (and say which runtime ran)."""
    from training.evaluate import describe_serving
    from training.predict import predict_file

    try:
        summary = predict_file(
            model,
            input,
            output,
            text_column=text_column,
            variant=variant,
            precision=precision,
            runtime=runtime,
            device=device,
            strict=strict,
            batch_size=batch_size,
        )
    except SentiwireError as exc:
        raise _fail(str(exc), exit_code_for(exc)) from exc
    typer.echo(f"model {summary['model']['name']} {summary['model']['version']}: {describe_serving(summary)}")
    msg = f"{summary['predicted']} of {summary['rows']} rows labeled -> {summary['output']}"
    if summary["skipped"]:
        msg += f"; {summary['skipped']} skipped (blank text), rows {summary['skipped_rows']}"
    typer.echo(msg)
    if summary["skipped"]:
        print(f"warning: {summary['skipped']} row(s) skipped", file=sys.stderr)


def register(app: typer.Typer) -> None:
    """Attach the training commands to the top-level app."""
    app.command("train")(train_cmd)
    app.command("evaluate")(evaluate_cmd)
    app.command("predict")(predict_cmd)
    from training.retrain.cli import register as register_retrain
    from training.retrain.cli import register_promote

    register_retrain(app)
    register_promote(app)
