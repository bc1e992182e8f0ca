"""Pure pieces of the trainer: metrics, splits, sampling, batching, time budget, recipes."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from training.budget import PLAN_AT_STEP, Schedule, TimeBudget, fit_time_budget
from training.config import TrainConfig, TrainError
from training.data import parse_source
from training.dataset import Example, SourceSampler, _split, prepare
from training.devset import dev_metrics, monitor_value
from training.metrics import classification_metrics, majority_baseline


def test_classification_metrics_by_hand() -> None:
    truth = ["a", "a", "b", "c"]
    pred = ["a", "b", "b", "b"]
    m = classification_metrics(truth, pred, ["a", "b", "c"])
    assert m["accuracy"] == 0.5
    # F1: a = 2/3 (P 1, R .5), b = 2/3 (P 1/3, R 1) -> .5, c = 0
    assert m["per_class"]["a"]["f1"] == pytest.approx(2 / 3)
    assert m["per_class"]["b"]["f1"] == pytest.approx(0.5)
    assert m["per_class"]["c"]["f1"] == 0.0
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.5 + 0.0) / 3)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]
    base = majority_baseline(["a", "a", "b"], ["a", "b"])
    assert base["accuracy"] == pytest.approx(2 / 3)
    assert base["macro_f1"] == pytest.approx(0.4)  # F1(a)=.8, F1(b)=0


def test_split_is_stratified_and_deterministic() -> None:
    labels = ["x"] * 80 + ["y"] * 20 + ["lonely"]
    texts = [str(i) for i in range(len(labels))]
    tr, dv = _split(texts, labels, 0.2, seed=1)
    assert sorted(tr + dv) == list(range(len(labels)))
    assert Counter(labels[i] for i in dv) == {"x": 16, "y": 4}
    assert 100 in tr  # a class with one row cannot be split: it stays in train
    assert _split(texts, labels, 0.2, seed=1) == (tr, dv)
    assert _split(texts, labels, 0.2, seed=2) != (tr, dv)


def ex(source: str, n: int, head: int = 0) -> list[Example]:
    return [Example([101, i, 102], head, i % 2, source, None) for i in range(n)]


def test_sampler_balances_sources_by_temperature() -> None:
    train = {"small": ex("small", 100), "big": ex("big", 10000)}
    sampler = SourceSampler(train, 0.5, {}, 0)
    picks = Counter(e.source for _ in range(200) for e in sampler.batch(50))
    share = picks["small"] / sum(picks.values())
    assert share == pytest.approx(10 / 110, abs=0.02)  # sqrt(100) : sqrt(10000)
    uniform = SourceSampler(train, 0.0, {}, 0)
    assert uniform.probs.tolist() == [0.5, 0.5]
    weighted = SourceSampler(train, 0.0, {"small": 3.0}, 0)
    assert weighted.probs[weighted.names.index("small")] == pytest.approx(0.75)


def test_sampler_cycles_each_source_without_replacement() -> None:
    train = {"only": ex("only", 10)}
    s = SourceSampler(train, 1.0, {}, 0)
    first = [e.ids[1] for e in s.batch(10)]
    assert sorted(first) == list(range(10))
    buckets = s.batches(4, 3)
    assert [len(b) for b in buckets] == [4, 4, 4]


def test_collate_pads_and_masks_labels_per_head() -> None:
    from training.dataset import collate

    batch = [Example([101, 5, 102], 0, 2, "a", None), Example([101, 102], 1, 7, "b", None)]
    ids, mask, labels = collate(batch, pad_id=0, n_heads=2)
    assert ids.tolist() == [[101, 5, 102], [101, 102, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert labels.tolist() == [[2, -100], [-100, 7]]


def test_fit_time_budget() -> None:
    # 10 steps took 10 s, 100 s budget, 20 s spent: 80 s left, eval costs 1000/10*1/3 = 33.3 s
    assert fit_time_budget(10, 1000, 10.0, 20.0, 100.0, 1000, 10, 1000) == 10 + 46
    assert fit_time_budget(10, 50, 10.0, 20.0, 10_000.0, 10, 10, 50) == 50  # never lengthens
    assert fit_time_budget(10, 1000, 10.0, 200.0, 100.0, 1000, 10, 1000) == 11  # over budget: stop soon
    # 1 s/step, 180 s left, 10 s per evaluation every 100 steps: the shortened schedule runs
    # 2 evaluations (step 100 + the final one), not the 10 the original 1000 steps would have.
    assert fit_time_budget(10, 1000, 10.0, 20.0, 200.0, 300, 10, 100) == 170


def test_dev_metrics_by_source_and_slice_and_monitor() -> None:
    heads = [("sentiment", ("negative", "positive")), ("topic", ("a", "b"))]
    dev = [
        Example([1], 0, 0, "pb", "100"),
        Example([1], 0, 1, "pb", "50"),
        Example([1], 0, 1, "tw", None),
        Example([1], 1, 0, "tp", None),
    ]
    m = dev_metrics(heads, dev, [0, 0, 1, 0])
    assert m["sentiment"]["accuracy"] == pytest.approx(2 / 3)
    assert m["sentiment"]["by_source"]["pb"]["slices"]["100"]["accuracy"] == 1.0
    assert m["sentiment"]["by_source"]["pb"]["slices"]["50"]["accuracy"] == 0.0
    assert m["sentiment"]["by_source"]["tw"]["accuracy"] == 1.0
    assert m["topic"]["accuracy"] == 1.0
    assert monitor_value(m, "topic") == m["topic"]["macro_f1"]
    assert monitor_value(m, "mean") == pytest.approx(
        (m["sentiment"]["macro_f1"] + m["topic"]["macro_f1"]) / 2
    )
    assert monitor_value(m, "sentiment/tw") == m["sentiment"]["by_source"]["tw"]["macro_f1"]
    with pytest.raises(TrainError, match="no dev source"):
        monitor_value(m, "sentiment/nope")


def test_recipe_round_trips_through_json() -> None:
    cfg = TrainConfig(
        data=[
            parse_source("sentiment=a.csv?map=Bearish:negative"),
            parse_source("topic=b.jsonl?slice=x&scored=a,b"),
        ],
        dev=[parse_source("sentiment=c.csv")],
        labels={"topic": ["a", "b"]},
        source_weights={"a": 2.0},
        max_train_minutes=3.5,
    )
    back = TrainConfig.from_json(json.loads(json.dumps(cfg.to_json())))
    assert back == cfg
    with pytest.raises(TrainError, match="unknown keys"):
        TrainConfig.from_json({**cfg.to_json(), "bogus": 1})


@pytest.mark.parametrize(
    ("kw", "problem"),
    [
        ({"data": []}, "at least one --data"),
        ({"epochs": 0}, "epochs"),
        ({"dev_fraction": 0.0}, "dev_fraction"),
        ({"dev": [parse_source("other=x.csv")]}, "no --data"),
    ],
)
def test_config_validation(kw: dict[str, object], problem: str) -> None:
    base: dict[str, object] = {"data": [parse_source("sentiment=a.csv")]}
    cfg = TrainConfig(**{**base, **kw})  # type: ignore[arg-type]
    with pytest.raises(TrainError, match=problem):
        cfg.validate()


def test_prepare_dedupes_splits_per_source_and_fingerprints(tmp_path: Path) -> None:
    rows = [f"sentence number {i}" for i in range(40)]
    a = tmp_path / "a.csv"
    a.write_text(
        "text,label\n" + "".join(f"{t},{'positive' if i % 2 else 'negative'}\n" for i, t in enumerate(rows))
    )
    b = tmp_path / "b.csv"  # repeats 10 of a's sentences (different case) + 20 new ones
    b.write_text(
        "text,label\n"
        + "".join(f"{t.upper()},neutral\n" for t in rows[:10])
        + "".join(f"other {i},neutral\n" for i in range(20))
    )
    cfg = TrainConfig(
        data=[parse_source(f"sentiment={a}"), parse_source(f"sentiment={b}")], dev_fraction=0.25
    )
    prep = prepare(cfg, lambda texts: [[101, len(t), 102] for t in texts])
    assert prep.heads == [("sentiment", ("negative", "neutral", "positive"))]
    total = sum(len(v) for v in prep.train.values()) + len(prep.dev)
    assert total == 40 + 20  # the 10 repeated sentences are dropped once
    dev_sources = Counter(e.source for e in prep.dev)
    assert set(dev_sources) == {"a", "b"}
    info = {d["path"]: d for d in prep.data_info}
    assert info[str(a)]["rows"] == 40
    assert len(info[str(a)]["sha256"]) == 64
    assert len(info[str(a)]["fingerprint"]) == 64
    assert sum(r.get("duplicates_dropped", 0) for r in prep.load_reports) == 10
    again = prepare(cfg, lambda texts: [[101, len(t), 102] for t in texts])
    assert [e.ids for e in again.dev] == [e.ids for e in prep.dev]
    assert np.array_equal([e.label for e in again.dev], [e.label for e in prep.dev])


def test_scored_labels_rule() -> None:
    from training.data import DataError
    from training.evaluate import scored_labels

    head = ("negative", "neutral", "positive")
    plain = parse_source("sentiment=r.csv")
    assert scored_labels(plain, head, {"negative", "positive"}) == ["negative", "positive"]
    # a small 3-class file that happens to lack one class is still scored on all labels
    assert scored_labels(plain, head, {"neutral", "positive"}) == list(head)
    explicit = parse_source("sentiment=r.csv?scored=positive,neutral")
    assert scored_labels(explicit, head, {"neutral"}) == ["neutral", "positive"]
    with pytest.raises(DataError, match="not in scored"):
        scored_labels(explicit, head, {"negative"})
    with pytest.raises(DataError, match="must name >= 2"):
        scored_labels(parse_source("sentiment=r.csv?scored=bogus,neutral"), head, {"neutral"})


def test_time_budget_replans_the_schedule_to_end_in_time() -> None:
    now = [0.0]
    plan = Schedule(total=1000, warmup=60, eval_every=100)
    budget = TimeBudget(
        1.0, plan, warmup_ratio=0.06, dev_rows=0, batch_size=32, started=0.0, clock=lambda: now[0]
    )
    assert budget.replan(PLAN_AT_STEP - 1) is None  # only at the planning steps
    now[0] = 15.0  # 1 s/step: 60 s fit about 60 steps, not 1000
    message = budget.replan(PLAN_AT_STEP)
    assert message is not None
    assert "schedule now ends at step" in message
    assert PLAN_AT_STEP < plan.total < 100
    assert plan.warmup == max(PLAN_AT_STEP, int(plan.total * 0.06))
    assert plan.eval_every == plan.total
    assert plan.factor(plan.total) == 0.0
    assert not budget.out_of_time()
    now[0] = 61.0
    assert budget.out_of_time()
    assert not TimeBudget(None, plan, warmup_ratio=0.06, dev_rows=0, batch_size=32, started=0.0).out_of_time()
