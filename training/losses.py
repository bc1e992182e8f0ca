"""Per-head training losses: cross-entropy over a source's own labels, plus distillation.

A source that only has some of a head's labels (SST-2 and the UCI reviews are
negative/positive; the sentiment head also has neutral) is trained with a cross-entropy
renormalised over its labels: the other logits are masked out of the softmax, so "neutral"
is never the wrong answer for a review and the head is not taught "never neutral". With
every label allowed the loss is exactly ``torch.nn.CrossEntropyLoss`` (same class weights,
same label smoothing), so recipes without such sources train as before.

Distillation (Hinton et al. 2015) mixes in ``T**2 * KL(teacher_T || student_T)`` over all the
head's labels for rows that have teacher logits: ``(1 - alpha) * gold + alpha * kd``. The
teacher's full distribution is used, also on 2-label sources: it is what the teacher thinks
of neutral there, which gold 2-way labels cannot say.
"""

from __future__ import annotations

from typing import Any


def masked_cross_entropy(
    logits: Any,
    target: Any,
    allowed: Any | None = None,
    *,
    weight: Any | None = None,
    label_smoothing: float = 0.0,
) -> tuple[Any, Any]:
    """Per-row loss numerators and denominators; ``num.sum() / den.sum()`` is the mean loss.

    ``allowed`` is a bool ``[rows, labels]`` mask (None: every label); ``target`` must be allowed.
    Split like this so a caller can mix in other per-row terms before averaging, as torch's
    weighted mean does (it divides by the summed weights of the targets).
    """
    import torch

    if allowed is None:
        allowed = torch.ones_like(logits, dtype=torch.bool)
    logp = torch.log_softmax(logits.masked_fill(~allowed, float("-inf")), dim=1)
    logp = logp.masked_fill(~allowed, 0.0)  # masked labels take no part (and -inf * 0 is nan)
    nll = -logp.gather(1, target.unsqueeze(1)).squeeze(1)
    w = torch.ones(logits.shape[1], dtype=logits.dtype) if weight is None else weight.to(logits.dtype)
    w_target = w[target]
    num = (1.0 - label_smoothing) * w_target * nll
    if label_smoothing > 0.0:
        n_allowed = allowed.sum(dim=1).to(logits.dtype)
        num = num + label_smoothing * -(logp * w).sum(dim=1) / n_allowed
    return num, w_target


def distillation(student: Any, teacher: Any, temperature: float) -> Any:
    """Per-row ``T**2 * KL(softmax(teacher / T) || softmax(student / T))``."""
    import torch

    t = torch.log_softmax(teacher / temperature, dim=1)
    s = torch.log_softmax(student / temperature, dim=1)
    return (t.exp() * (t - s)).sum(dim=1) * temperature**2


def head_loss(
    logits: Any,
    target: Any,
    allowed: Any | None = None,
    *,
    weight: Any | None = None,
    label_smoothing: float = 0.0,
    teacher: Any | None = None,
    has_teacher: Any | None = None,
    alpha: float = 0.0,
    temperature: float = 1.0,
) -> Any:
    """Mean loss of one head's rows: gold cross-entropy, mixed with distillation where available."""
    num, den = masked_cross_entropy(logits, target, allowed, weight=weight, label_smoothing=label_smoothing)
    if teacher is not None and alpha > 0.0:
        import torch

        kd = distillation(logits, teacher, temperature)
        mixed = (1.0 - alpha) * num + alpha * den * kd
        num = mixed if has_teacher is None else torch.where(has_teacher, mixed, num)
    return num.sum() / den.sum()
