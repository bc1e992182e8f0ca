"""The training recipe: every knob of a fine-tune, validated, JSON round-trip.

``TrainConfig`` is stored as ``bundle.json["recipe"]``, so any bundle can be re-trained from
its recipe (``sentiwire retrain`` does).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from streamer.errors import UsageError
from training.data import SourceSpec

RANDOM_TINY = "random:tiny"  # tests: tiny random BERT + MiniLM tokenizer


class TrainError(UsageError):
    """Training cannot start: bad config, data or base model (exit 2, like every input error)."""


@dataclass
class TrainConfig:
    data: list[SourceSpec]
    dev: list[SourceSpec] = field(default_factory=list)
    labels: dict[str, list[str]] = field(default_factory=dict)
    base_model: str = "minilm"
    output: str = "models/sentiwire-minilm"
    name: str = "sentiwire"
    version: str | None = None
    max_length: int = 64
    epochs: int = 4
    batch_size: int = 32
    lr: float = 5e-5
    head_lr: float | None = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    grad_clip: float = 1.0
    patience: int = 2
    class_weights: bool = False
    label_smoothing: float = 0.0
    dropout: float = 0.1
    seed: int = 13
    dev_fraction: float = 0.15
    sampling_temperature: float = 0.5
    source_weights: dict[str, float] = field(default_factory=dict)
    steps_per_epoch: int | None = None
    eval_every: int | None = None
    max_rows_per_source: int | None = None
    max_dev_rows_per_source: int | None = None
    freeze_embeddings: bool = False
    freeze_layers: int = 0
    length_buckets: int = 8
    max_train_minutes: float | None = None
    dedupe: bool = True
    monitor: str = "mean"
    eval_batch_size: int = 128
    threads: int = 0
    force: bool = False
    strict: bool = False
    overwrite: bool = False
    progress: bool = True
    leave_out: list[str] = field(default_factory=list)  # sources (name or dataset directory) not trained on
    teacher_logits: str | None = None  # a teacher-logits file, or the directory to look for this data's
    kd_alpha: float = 0.5  # distillation's share of the loss: (1 - a) * gold + a * teacher
    kd_temperature: float = 2.0
    checkpoint_every: int | None = None  # steps between resumable checkpoints (<output>.checkpoint.pt)
    resume: bool = False  # continue from the checkpoint when there is one
    # Export the weights a failed export kept (<output>'s .failed-export-<v>.pt) instead of
    # training: the same recipe and data, scored on the dev rows again, then exported.
    from_weights: str | None = None

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["data"] = [s.to_json() for s in self.data]
        d["dev"] = [s.to_json() for s in self.dev]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise TrainError(f"recipe has unknown keys {sorted(unknown)}")
        kw = dict(d)
        kw["data"] = [SourceSpec.from_json(s) for s in d["data"]]
        kw["dev"] = [SourceSpec.from_json(s) for s in d.get("dev", [])]
        return cls(**kw)

    def validate(self) -> None:
        if not self.data:
            raise TrainError("at least one --data HEAD=PATH is needed")
        checks = [
            (self.max_length >= 8, "max_length must be >= 8"),
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (0.0 <= self.warmup_ratio < 1.0, "warmup_ratio must be in [0, 1)"),
            (0.0 <= self.label_smoothing < 1.0, "label_smoothing must be in [0, 1)"),
            (0.0 < self.dev_fraction < 0.9, "dev_fraction must be in (0, 0.9)"),
            (self.patience >= 0, "patience must be >= 0"),
            (0.0 <= self.kd_alpha <= 1.0, "kd_alpha must be in [0, 1]"),
            (self.kd_temperature > 0, "kd_temperature must be > 0"),
            (self.checkpoint_every is None or self.checkpoint_every >= 1, "checkpoint_every must be >= 1"),
            (
                not (self.resume and self.max_train_minutes is not None),
                "--resume cannot be combined with --max-train-minutes (the budget counts one run)",
            ),
            (
                not (self.resume and self.from_weights),
                "--from-weights exports kept weights; it does not --resume",
            ),
        ]
        for ok, msg in checks:
            if not ok:
                raise TrainError(msg)
        dev_heads = {s.head for s in self.dev}
        train_heads = {s.head for s in self.data}
        if dev_heads - train_heads:
            raise TrainError(f"--dev for head(s) {sorted(dev_heads - train_heads)} that have no --data")
