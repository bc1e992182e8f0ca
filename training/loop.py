"""The optimisation loop: AdamW over encoder and heads, one masked loss per head, periodic dev
evaluation, early stopping, and the best dev checkpoint restored at the end.

Each example carries a label for its own head only; the other heads' targets are masked
(-100), so one batch mixes sources of different heads. Within a head the loss covers the
labels the example's source has, mixed with the teacher's logits when distilling
(:mod:`training.losses`). With a :class:`~training.checkpoint.Checkpointer` the loop saves its
state every N steps and resumes from it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamer.model.bundle import HeadSpec
from training import dataset
from training.batches import label_masks, teacher_targets
from training.budget import Schedule, TimeBudget
from training.checkpoint import Checkpointer
from training.config import TrainConfig
from training.dataset import Example, Prepared, SourceSampler
from training.devset import dev_metrics, monitor_value, predict_dev
from training.losses import head_loss
from training.reports import log, summary_line


@dataclass
class LoopResult:
    """The best evaluation of the run (its weights are loaded into the model) and the curves."""

    best_value: float
    best_step: int
    best_metrics: dict[str, Any]
    steps: int
    curves: dict[str, Any]


def make_optimizer(model: Any, config: TrainConfig) -> Any:
    """AdamW; no weight decay on biases and norms; the new heads get their own learning rate."""
    import torch

    head_params = [p for n, p in model.named_parameters() if n.startswith("heads.")]
    decay: list[Any] = []
    no_decay: list[Any] = []
    for n, p in model.named_parameters():
        if n.startswith("heads.") or not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay, "lr": config.lr},
        {"params": no_decay, "weight_decay": 0.0, "lr": config.lr},
        {"params": head_params, "weight_decay": config.weight_decay, "lr": config.head_lr or config.lr},
    ]
    return torch.optim.AdamW(groups)


def class_weights(
    heads: Sequence[HeadSpec], train: dict[str, list[Example]], config: TrainConfig
) -> list[Any]:
    """Per head: balanced class weights when asked, else None."""
    import torch

    weights: list[Any] = []
    for h, spec in enumerate(heads):
        weight = None
        if config.class_weights:
            counts = np.bincount(
                [e.label for ex in train.values() for e in ex if e.head == h], minlength=len(spec.labels)
            ).astype(float)
            w = counts.sum() / (len(counts) * np.maximum(counts, 1.0))
            weight = torch.tensor(w / w.mean(), dtype=torch.float32)
        weights.append(weight)
    return weights


def batch_loss(
    model: Any, batch: Sequence[Example], heads: Sequence[HeadSpec], config: TrainConfig, weights: list[Any], *,
    pad_id: int, distill: bool, ema: dict[str, float],
) -> Any:  # fmt: skip
    """The summed per-head losses of one batch; updates the per-head loss averages in ``ema``."""
    import torch

    sizes = [len(h.labels) for h in heads]
    ids, mask, labels = dataset.collate(batch, pad_id, len(heads))  # looked up per call: tests patch it
    masks = label_masks(batch, sizes)
    teach = teacher_targets(batch, sizes) if distill else None
    logits = model(ids, mask)
    total = torch.zeros(())
    for h, spec in enumerate(heads):
        sel = labels[h] >= 0
        if bool(sel.any()):
            t, has = teach[h] if teach is not None else (None, None)
            loss_h = head_loss(
                logits[spec.name][sel], labels[h][sel], masks[h][sel],
                weight=weights[h], label_smoothing=config.label_smoothing,
                teacher=None if t is None else t[sel], has_teacher=None if has is None else has[sel],
                alpha=config.kd_alpha if distill else 0.0, temperature=config.kd_temperature,
            )  # fmt: skip
            total = total + loss_h
            lv = float(loss_h.detach())
            ema[spec.name] = 0.98 * ema.get(spec.name, lv) + 0.02 * lv
    return total


def run_loop(
    model: Any,
    heads: Sequence[HeadSpec],
    prep: Prepared,
    config: TrainConfig,
    *,
    pad_id: int,
    started: float,
    checkpointer: Checkpointer | None = None,
) -> LoopResult:
    """Train ``model`` in place; on return it holds the best dev checkpoint, in eval mode.

    Ctrl-C (or SIGTERM, see ``training.trainer.train``) closes the progress bar and re-raises;
    with a checkpointer, its last checkpoint stays for ``--resume``.
    """
    import torch
    from tqdm.auto import tqdm  # type: ignore[import-untyped]

    n_heads = len(heads)
    n_train = sum(len(v) for v in prep.train.values())
    optimizer = make_optimizer(model, config)
    steps_per_epoch = config.steps_per_epoch or max(1, math.ceil(n_train / config.batch_size))
    total_steps = steps_per_epoch * config.epochs
    # shrunk by the time budget on a slow machine
    plan = Schedule(
        total=total_steps,
        warmup=int(total_steps * config.warmup_ratio),
        eval_every=config.eval_every or steps_per_epoch,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, plan.factor)
    weights = class_weights(heads, prep.train, config)
    distill = any(e.soft is not None for ex in prep.train.values() for e in ex)

    sampler = SourceSampler(prep.train, config.sampling_temperature, config.source_weights, config.seed)
    shares = sampler.shares()
    log("sampling shares: " + ", ".join(f"{n} {v:.1%}" for n, v in shares.items()))
    curves: dict[str, Any] = {"loss_steps": [], "head_loss": defaultdict(list), "evals": [], "shares": shares}
    ema: dict[str, float] = {}
    best: tuple[float, int, dict[str, Any], dict[str, Any]] | None = None
    bad_evals = 0
    step = 0
    saved = checkpointer.load() if checkpointer is not None and config.resume else None
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        plan.total, plan.warmup, plan.eval_every = saved["plan"]
        scheduler.load_state_dict(saved["scheduler"])
        sampler.restore(saved["sampler"])
        torch.set_rng_state(saved["torch_rng"])
        step, bad_evals, ema, best = saved["step"], saved["bad_evals"], saved["ema"], saved["best"]
        curves = {**saved["curves"], "head_loss": defaultdict(list, saved["curves"]["head_loss"])}
        log(f"resumed from {checkpointer.path if checkpointer else ''} at step {step}")
    log(
        f"training {total_steps} steps ({config.epochs} epochs x {steps_per_epoch}), batch {config.batch_size}, "
        f"eval every {plan.eval_every} steps, {torch.get_num_threads()} threads"
    )
    bar = tqdm(
        total=plan.total,
        initial=step,
        desc="train",
        unit="step",
        disable=not config.progress,
        dynamic_ncols=True,
    )
    queue: list[list[Example]] = []
    budget = TimeBudget(
        config.max_train_minutes,
        plan,
        warmup_ratio=config.warmup_ratio,
        dev_rows=len(prep.dev),
        batch_size=config.batch_size,
        started=started,
    )
    try:
        while step < plan.total:
            model.train()
            if not queue:
                if checkpointer is not None and checkpointer.due(step, between_pools=True):
                    checkpointer.save(
                        {
                            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), "plan": (plan.total, plan.warmup, plan.eval_every),
                            "sampler": sampler.state(), "torch_rng": torch.get_rng_state(), "step": step,
                            "bad_evals": bad_evals, "ema": ema, "best": best,
                            "curves": {**curves, "head_loss": dict(curves["head_loss"])},
                        },
                        step,
                    )  # fmt: skip
                    bar.write(f"checkpoint at step {step}: {checkpointer.path}")
                queue = sampler.batches(config.batch_size, max(1, config.length_buckets))
            batch = queue.pop()
            total = batch_loss(model, batch, heads, config, weights, pad_id=pad_id, distill=distill, ema=ema)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
            curves["loss_steps"].append(step)
            for spec in heads:
                curves["head_loss"][spec.name].append(ema.get(spec.name, float("nan")))
            bar.update(1)
            bar.set_postfix({f"loss_{k}": f"{v:.3f}" for k, v in ema.items()}, refresh=False)
            replanned = budget.replan(step)
            if replanned is not None:
                bar.write(replanned)
                bar.total = plan.total
            out_of_time = budget.out_of_time()
            if out_of_time:
                bar.write(
                    f"time budget of {config.max_train_minutes} min reached at step {step}: final evaluation"
                )
            if step % plan.eval_every == 0 or step == plan.total or out_of_time:
                preds = predict_dev(model, prep.dev, pad_id, n_heads, config.eval_batch_size)
                metrics = dev_metrics(prep.heads, prep.dev, preds)
                value = monitor_value(_monitored(metrics, prep, preds), config.monitor)
                curves["evals"].append({"step": step, "metrics": metrics, "monitor": value})
                improved = best is None or value > best[0] + 1e-6
                bar.write(
                    f"step {step}/{plan.total} dev {summary_line(metrics)}  "
                    f"monitor({config.monitor}) {value:.4f}{' *' if improved else ''}"
                )
                if improved:
                    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                    best = (value, step, metrics, state)
                    bad_evals = 0
                else:
                    bad_evals += 1
                    if bad_evals > config.patience:
                        bar.write(f"early stop: no dev improvement in {bad_evals} evaluations")
                        break
                if out_of_time:
                    break
    except KeyboardInterrupt:
        bar.close()
        log("interrupted: no bundle written")
        raise
    bar.close()
    assert best is not None
    best_value, best_step, best_metrics, best_state = best
    model.load_state_dict(best_state)
    model.eval()
    return LoopResult(best_value, best_step, best_metrics, step, curves)


def _monitored(metrics: dict[str, Any], prep: Prepared, preds: Sequence[int]) -> dict[str, Any]:
    """The metrics early stopping sees: without left-out sources, whose rows must not pick the model."""
    if not prep.left_out:
        return metrics
    keep = [(e, p) for e, p in zip(prep.dev, preds, strict=True) if e.source not in prep.left_out]
    return dev_metrics(prep.heads, [e for e, _ in keep], [p for _, p in keep])
