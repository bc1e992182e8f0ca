"""The per-head loss: masked cross-entropy over a source's labels, distillation mix."""

from __future__ import annotations

import pytest
import torch

from training.batches import Example, label_masks, teacher_targets
from training.losses import distillation, head_loss, masked_cross_entropy

NEG, NEU, POS = 0, 1, 2
TWO_WAY = torch.tensor([[True, False, True]])


def mean(num: torch.Tensor, den: torch.Tensor) -> float:
    return float(num.sum() / den.sum())


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("weighted", [False, True])
def test_all_labels_allowed_is_torch_cross_entropy(smoothing: float, weighted: bool) -> None:
    torch.manual_seed(0)
    logits, target = torch.randn(7, 3), torch.tensor([0, 1, 2, 2, 1, 0, 2])
    weight = torch.tensor([0.5, 2.0, 1.0]) if weighted else None
    ref = torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=smoothing)(logits, target)
    got = head_loss(logits, target, None, weight=weight, label_smoothing=smoothing)
    assert float(got) == pytest.approx(float(ref), abs=1e-6)


def test_two_label_source_never_penalises_neutral() -> None:
    """A positive review: however much mass the head puts on neutral, the loss does not change."""
    target = torch.tensor([POS])
    base = torch.tensor([[0.0, -5.0, 2.0]])
    for neutral in (-5.0, 0.0, 3.0, 10.0):
        logits = base.clone()
        logits[0, NEU] = neutral
        num, den = masked_cross_entropy(logits, target, TWO_WAY)
        # exactly the 2-way cross-entropy of (negative, positive)
        two_way = torch.nn.functional.cross_entropy(logits[:, [NEG, POS]], torch.tensor([1]))
        assert mean(num, den) == pytest.approx(float(two_way), abs=1e-6)
    logits = base.clone().requires_grad_(True)
    num, den = masked_cross_entropy(logits, target, TWO_WAY, label_smoothing=0.1)
    (num.sum() / den.sum()).backward()
    assert logits.grad is not None
    assert float(logits.grad[0, NEU]) == 0.0  # no gradient pushes neutral down (or up)
    assert float(logits.grad[0, POS]) < 0.0 < float(logits.grad[0, NEG])


def test_smoothing_spreads_over_the_source_labels_only() -> None:
    logits, target = torch.tensor([[1.0, 50.0, 1.0]]), torch.tensor([POS])
    num, den = masked_cross_entropy(logits, target, TWO_WAY, label_smoothing=0.2)
    assert torch.isfinite(num).all()
    # both allowed logits equal: each has log p = log 0.5, so the loss is log 2 whatever the smoothing
    assert mean(num, den) == pytest.approx(float(torch.log(torch.tensor(2.0))), abs=1e-6)


def test_distillation_mix() -> None:
    torch.manual_seed(1)
    student, teacher = torch.randn(4, 3), torch.randn(4, 3)
    target = torch.tensor([0, 1, 2, 0])
    gold = head_loss(student, target)
    assert float(distillation(teacher, teacher, 2.0).abs().max()) < 1e-6  # KL(p||p) = 0
    kd = distillation(student, teacher, 2.0)
    mixed = head_loss(student, target, teacher=teacher, alpha=0.3, temperature=2.0)
    assert float(mixed) == pytest.approx(0.7 * float(gold) + 0.3 * float(kd.mean()), abs=1e-6)
    only_kd = head_loss(student, target, teacher=teacher, alpha=1.0, temperature=2.0)
    assert float(only_kd) == pytest.approx(float(kd.mean()), abs=1e-6)
    # rows without teacher logits keep the gold loss alone
    has = torch.tensor([True, False, True, False])
    partial = head_loss(student, target, teacher=teacher, has_teacher=has, alpha=0.5, temperature=2.0)
    num, _ = masked_cross_entropy(student, target)
    expect = (0.5 * num + 0.5 * kd).where(has, num).mean()
    assert float(partial) == pytest.approx(float(expect), abs=1e-6)


def test_temperature_scales_kd_by_t_squared() -> None:
    student, teacher = torch.tensor([[0.0, 0.0, 0.0]]), torch.tensor([[4.0, 0.0, -4.0]])
    t = 3.0
    p = torch.softmax(teacher / t, dim=1)
    kl = (p * (p.log() - torch.log_softmax(student / t, dim=1))).sum()
    assert float(distillation(student, teacher, t)[0]) == pytest.approx(float(kl) * t * t, abs=1e-6)


def test_batch_masks_and_teacher_targets() -> None:
    batch = [
        Example([1], 0, POS, "sst2", None, allowed=(NEG, POS), soft=[1.0, 2.0, 3.0]),
        Example([1], 0, NEU, "pb", None),
        Example([1], 1, 4, "topic", None, soft=[0.0] * 5),
    ]
    masks = label_masks(batch, [3, 5])
    assert masks[0].tolist() == [[True, False, True], [True, True, True], [True, True, True]]
    assert masks[1].all()
    (s_logits, s_has), (_, t_has) = teacher_targets(batch, [3, 5])
    assert s_has.tolist() == [True, False, False]
    assert s_logits[0].tolist() == [1.0, 2.0, 3.0]
    assert t_has.tolist() == [False, False, True]
