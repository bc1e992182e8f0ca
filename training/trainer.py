"""Multi-head fine-tuning: one shared encoder, one linear head per head name.

``train(TrainConfig) -> Path`` is the whole pipeline (data -> fine-tune -> report -> export ->
bundle); the CLI and ``sentiwire retrain`` call it. The steps live in their own modules:
``config`` (the recipe), ``dataset`` (examples and batches), ``loop`` (the optimisation loop),
``budget`` (the time budget), ``devset`` (dev scoring), ``reports`` and ``export``.
"""

from __future__ import annotations

import copy
import json
import random
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from training.checkpoint import VOLATILE
from training.config import RANDOM_TINY, TrainConfig, TrainError
from training.data import DataError
from training.dataset import Prepared, prepare
from training.loop import LoopResult, run_loop
from training.reports import log, summary_line, write_reports


def train(config: TrainConfig) -> Path:
    """Fine-tune and write a bundle at ``config.output``; returns its path.

    SIGTERM is treated like Ctrl-C (no partial bundle is left), also when started in the
    background where SIGINT is ignored.
    """
    previous: Any = None
    try:
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    except ValueError:  # not the main thread: leave signal handling to the caller
        previous = None
    try:
        return _train(config)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _encoder_layers(encoder: Any) -> list[Any]:
    inner = getattr(encoder, "encoder", None)
    layers = getattr(inner, "layer", None)
    if layers is None:
        raise TrainError(f"cannot find transformer layers in {type(encoder).__name__} to freeze")
    return list(layers)


def _build_model(config: TrainConfig, model_dir: Path, heads: list[Any]) -> Any:
    """The encoder (pretrained or tiny random) with one head per name, frozen parts as configured."""
    import torch

    from training.model import TINY_BERT, MultiHeadClassifier, load_encoder, random_encoder

    torch.manual_seed(config.seed)
    if config.base_model == RANDOM_TINY:
        encoder, hidden = random_encoder(TINY_BERT)
    else:
        encoder, hidden = load_encoder(model_dir)
    model = MultiHeadClassifier(encoder, hidden, heads, dropout=config.dropout)
    if config.freeze_embeddings:
        # the 30k x hidden word-embedding matrix dominates AdamW's per-step cost on CPU
        embeddings: Any = model.encoder
        for p in embeddings.get_input_embeddings().parameters():
            p.requires_grad_(False)
    if config.freeze_layers > 0:
        # lower layers change least in fine-tuning; freezing them shortens backward on CPU
        layers = _encoder_layers(model.encoder)
        if config.freeze_layers >= len(layers):
            raise TrainError(f"freeze_layers={config.freeze_layers} but the encoder has {len(layers)} layers")
        for layer in layers[: config.freeze_layers]:
            for p in layer.parameters():
                p.requires_grad_(False)
    return model


def _train(config: TrainConfig) -> Path:
    import torch
    from tokenizers import Tokenizer

    from streamer.model.bundle import HeadSpec
    from streamer.model.tokenizer import pad_token_of
    from training.base_models import minilm_dir, resolve_base_model
    from training.model import TINY_BERT

    config.validate()
    out = Path(config.output)
    if out.exists() and not config.overwrite:
        raise TrainError(f"{out}: already exists (choose another --output or pass --overwrite)")
    started = time.monotonic()
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    if config.threads > 0:
        torch.set_num_threads(config.threads)

    if config.base_model == RANDOM_TINY:
        model_dir, base_info = minilm_dir(), {"name": RANDOM_TINY, "sha256": None, "config": TINY_BERT}
    else:
        base = resolve_base_model(config.base_model)
        model_dir, base_info = base.path, {"name": base.name, "path": str(base.path), "sha256": base.sha256}
    tok_file = model_dir / "tokenizer.json"
    tokenizer = Tokenizer.from_file(str(tok_file))
    tokenizer.enable_truncation(max_length=config.max_length)
    pad_id, _ = pad_token_of(tokenizer)
    if pad_id is None:
        raise TrainError(f"{tok_file}: no padding token ([PAD] or <pad>)")
    tokenizer.no_padding()

    def tokenize(texts: list[str]) -> list[list[int]]:
        return [e.ids for e in tokenizer.encode_batch(texts)] if texts else []

    from training.checkpoint import Checkpointer, checkpoint_path, identity
    from training.distill import attach

    try:
        prep = prepare(config, tokenize)
        distillation = attach(config, prep)
    except DataError as exc:
        raise TrainError(str(exc)) from exc
    heads = [HeadSpec(h, labs) for h, labs in prep.heads]
    n_train = sum(len(v) for v in prep.train.values())
    log(
        f"data: {n_train} train / {len(prep.dev)} dev rows; heads "
        + ", ".join(f"{h.name}({len(h.labels)})" for h in heads)
        + "; sources "
        + ", ".join(f"{k}={len(v)}" for k, v in sorted(prep.train.items()))
    )

    model = _build_model(config, model_dir, heads)
    checkpointer = None
    if config.checkpoint_every or config.resume:
        checkpointer = Checkpointer(checkpoint_path(config), config.checkpoint_every, identity(config, prep))
    if config.from_weights is not None:
        result = reuse_weights(model, prep, config, pad_id=pad_id)
    else:
        result = run_loop(
            model, heads, prep, config, pad_id=pad_id, started=started, checkpointer=checkpointer
        )
    train_seconds = time.monotonic() - started
    log(
        f"best dev at step {result.best_step}: {summary_line(result.best_metrics)} ({train_seconds / 60:.1f} min)"
    )
    from training.export import new_version

    version = config.version or new_version()
    path = _export(model, config, version, prep, result, tok_file, base_info, train_seconds, distillation)
    if checkpointer is not None:
        checkpointer.remove()
    log(f"bundle written: {path} (version {version}, {(time.monotonic() - started) / 60:.1f} min total)")
    return path


# Recipe fields that do not change what was trained (the checkpoint's VOLATILE ones, plus where
# the bundle goes and the re-export switch itself): a re-export may differ in them.
NOT_TRAINING = frozenset(VOLATILE) | {"from_weights", "output", "name"}


def reuse_weights(model: Any, prep: Prepared, config: TrainConfig, *, pad_id: int) -> LoopResult:
    """The kept weights of a failed export, checked against this recipe and scored on its dev rows."""
    import torch

    from training.devset import dev_metrics, monitor_value, predict_dev

    path = Path(config.from_weights or "")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError) as exc:
        raise TrainError(f"--from-weights {path}: not readable ({exc})") from exc
    if not isinstance(saved, dict) or "state_dict" not in saved or "recipe" not in saved:
        raise TrainError(f"--from-weights {path}: not weights kept by a failed export")
    now = {k: v for k, v in config.to_json().items() if k not in NOT_TRAINING}
    then = {k: v for k, v in dict(saved["recipe"]).items() if k not in NOT_TRAINING}
    differ = sorted(k for k in set(now) | set(then) if now.get(k) != then.get(k))
    if differ:
        raise TrainError(f"--from-weights {path}: trained with another recipe (differs in {differ})")
    try:
        model.load_state_dict(saved["state_dict"])
    except RuntimeError as exc:
        raise TrainError(f"--from-weights {path}: weights do not fit this model ({exc})") from exc
    model.eval()
    preds = predict_dev(model, prep.dev, pad_id, len(prep.heads), config.eval_batch_size)
    metrics = dev_metrics(prep.heads, prep.dev, preds)
    value = monitor_value(metrics, config.monitor)
    log(f"weights from {path}: dev {summary_line(metrics)}; exporting without training")
    # The training curves and best step, when the failed export kept them (plots and history).
    curves: dict[str, Any] = saved.get("curves") or {
        "loss_steps": [],
        "head_loss": {},
        "evals": [],
        "shares": {},
    }
    best_step = int(saved.get("best_step") or 0)
    return LoopResult(value, best_step, metrics, best_step, curves)


def _export(
    model: Any,
    config: TrainConfig,
    version: str,
    prep: Prepared,
    result: LoopResult,
    tok_file: Path,
    base_info: dict[str, Any],
    train_seconds: float,
    distillation: dict[str, Any],
) -> Path:
    """Reports, then the verified bundle; a failed export keeps the trained weights beside it."""
    import torch

    from training.export import ExportError, build_bundle

    out = Path(config.output)
    recipe = config.to_json()
    recipe["version"] = None  # a re-run gets its own version
    recipe["from_weights"] = None  # a re-run trains
    with tempfile.TemporaryDirectory(prefix="sentiwire-report-") as tmp:
        report_dir = Path(tmp) / "report"
        write_reports(report_dir, result.best_metrics, result.curves)
        (report_dir / "data.json").write_text(json.dumps(prep.load_reports, indent=2) + "\n")
        parity = copy.copy(prep.dev_texts)
        random.Random(config.seed).shuffle(parity)
        metrics_out = {
            h: {k: m[k] for k in ("n", "accuracy", "macro_f1", "majority_baseline", "by_source", "per_class")}
            for h, m in result.best_metrics.items()
        }
        try:
            return build_bundle(
                model,
                tokenizer_file=tok_file,
                out_dir=out,
                name=config.name,
                version=version,
                max_length=config.max_length,
                base_model=base_info,
                parity_texts=parity[:128],
                agreement_texts=parity[128:2000],
                metrics=metrics_out,
                data=prep.data_info,
                recipe=recipe,
                history=[
                    {
                        "event": "train",
                        "version": version,
                        "best_step": result.best_step,
                        "steps": result.steps,
                        "monitor": config.monitor,
                        "monitor_value": result.best_value,
                        "train_seconds": round(train_seconds, 1),
                        "evals": [
                            {"step": e["step"], "monitor": e["monitor"]} for e in result.curves["evals"]
                        ],
                        "source_shares": result.curves.get("shares", {}),
                        "distillation": distillation,
                    }
                ],
                report_dir=report_dir,
                holdout=prep.holdout(),
                holdout_scored=prep.holdout_scored(),
                holdout_slices=prep.holdout_slices(),
                force=config.force,
                overwrite=config.overwrite,
            )
        except ExportError as exc:
            # keep the trained weights: re-exporting (e.g. after a parity failure) must not need a re-train
            saved = out.with_name(f".{out.name}.failed-export-{version}.pt")
            torch.save(
                {
                    "state_dict": model.state_dict(),
                    "recipe": recipe,
                    "base_model": base_info,
                    "best_step": result.best_step,
                    "curves": {**result.curves, "head_loss": dict(result.curves["head_loss"])},
                },
                saved,
            )
            raise ExportError(
                f"{exc}\n(trained weights kept in {saved}: the same command with --from-weights {saved} "
                "exports them without training again)"
            ) from exc
