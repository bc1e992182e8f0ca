"""The optimisation loop: AdamW over encoder and heads, one masked loss per head, periodic dev
evaluation, early stopping, and the best dev checkpoint restored at the end.

Each example carries a label for its own head only; the other heads' targets are masked
(-100), so one batch mixes sources of different heads.
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
from training.budget import Schedule, TimeBudget
from training.config import TrainConfig
from training.dataset import Example, Prepared, SourceSampler
from training.devset import dev_metrics, monitor_value, predict_dev
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


def make_losses(heads: Sequence[HeadSpec], train: dict[str, list[Example]], config: TrainConfig) -> list[Any]:
    """One cross-entropy per head, with balanced class weights when asked."""
    import torch

    losses = []
    for h, spec in enumerate(heads):
        weight = None
        if config.class_weights:
            counts = np.bincount(
                [e.label for ex in train.values() for e in ex if e.head == h], minlength=len(spec.labels)
            ).astype(float)
            w = counts.sum() / (len(counts) * np.maximum(counts, 1.0))
            weight = torch.tensor(w / w.mean(), dtype=torch.float32)
        losses.append(torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=config.label_smoothing))
    return losses


def run_loop(
    model: Any, heads: Sequence[HeadSpec], prep: Prepared, config: TrainConfig, *, pad_id: int, started: float
) -> LoopResult:
    """Train ``model`` in place; on return it holds the best dev checkpoint, in eval mode.

    Ctrl-C (or SIGTERM, see ``training.trainer.train``) closes the progress bar and re-raises.
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
    losses = make_losses(heads, prep.train, config)

    sampler = SourceSampler(prep.train, config.sampling_temperature, config.source_weights, config.seed)
    curves: dict[str, Any] = {"loss_steps": [], "head_loss": defaultdict(list), "evals": []}
    ema: dict[str, float] = {}
    best: tuple[float, int, dict[str, Any], dict[str, Any]] | None = None
    bad_evals = 0
    step = 0
    log(
        f"training {total_steps} steps ({config.epochs} epochs x {steps_per_epoch}), batch {config.batch_size}, "
        f"eval every {plan.eval_every} steps, {torch.get_num_threads()} threads"
    )
    bar = tqdm(total=total_steps, desc="train", unit="step", disable=not config.progress, dynamic_ncols=True)
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
                queue = sampler.batches(config.batch_size, max(1, config.length_buckets))
            batch = queue.pop()
            ids, mask, labels = dataset.collate(batch, pad_id, n_heads)  # looked up per call: tests patch it
            logits = model(ids, mask)
            total = torch.zeros(())
            for h, spec in enumerate(heads):
                sel = labels[h] >= 0
                if bool(sel.any()):
                    loss_h = losses[h](logits[spec.name][sel], labels[h][sel])
                    total = total + loss_h
                    lv = float(loss_h.detach())
                    ema[spec.name] = 0.98 * ema.get(spec.name, lv) + 0.02 * lv
            optimizer.zero_grad(set_to_none=True)
            total.backward()  # type: ignore[no-untyped-call]
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
                value = monitor_value(metrics, config.monitor)
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
