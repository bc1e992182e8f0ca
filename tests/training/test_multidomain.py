"""The multi-domain recipe's data pieces: held-out parts, dev files, 2-label sources, leave-out,
source shares, and the bad-input errors (no torch, except the dev prediction check)."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from training.config import TrainConfig, TrainError
from training.data import DataError, SourceSpec, load_source, parse_source
from training.dataset import Example, SourceSampler, prepare
from training.devset import dev_metrics, monitor_value
from training.parts import holdout_rows

LABELS = ("negative", "neutral", "positive")


def tok(texts: list[str]) -> list[list[int]]:
    return [[101, len(t), 102] for t in texts]


def write_csv(path: Path, rows: list[tuple[str, ...]], header: str = "text,label") -> Path:
    import csv

    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header.split(","))
        w.writerows(rows)
    return path


@pytest.fixture
def reviews(tmp_path: Path) -> Path:
    rows = [
        (f"{src} review {i} was {'great' if i % 2 else 'awful'}", "positive" if i % 2 else "negative", src)
        for src in ("amazon", "imdb", "yelp")
        for i in range(40)
    ]
    (tmp_path / "uci").mkdir()
    return write_csv(tmp_path / "uci" / "all.csv", rows, "text,label,source")


@pytest.fixture
def news(tmp_path: Path) -> Path:
    rows = [(f"news sentence {i}", LABELS[i % 3]) for i in range(60)]
    return write_csv(tmp_path / "news.csv", rows)


def test_parse_holdout_part_dev_options() -> None:
    s = parse_source("sentiment=r/all.csv?slice=source&holdout=0.3&part=holdout")
    assert (s.holdout, s.part, s.dev) == (0.3, "holdout", None)
    assert SourceSpec.from_json(s.to_json()) == s
    d = parse_source("sentiment=sst2/train.csv?dev=sst2/dev.csv")
    assert d.dev == "sst2/dev.csv"
    assert d.dev_spec().path == "sst2/dev.csv"
    assert d.dev_spec().display_name == "sst2"  # dev rows are reported under the source's name
    old = {k: v for k, v in s.to_json().items() if k not in ("holdout", "part", "dev")}
    assert SourceSpec.from_json(old).holdout is None  # recipes written before these options load


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("s=a.csv?holdout=1.5", "holdout must be a fraction"),
        ("s=a.csv?holdout=x", "holdout must be a fraction"),
        ("s=a.csv?part=holdout", "part= needs holdout"),
        ("s=a.csv?holdout=0.3&part=dev", "part must be one of"),
        ("s=a.csv?holdout=0.3&dev=b.csv", "use one"),
    ],
)
def test_parse_holdout_errors(spec: str, problem: str) -> None:
    with pytest.raises(DataError, match=problem):
        parse_source(spec)


def test_holdout_is_stratified_fixed_and_order_free() -> None:
    texts = [f"t{i}" for i in range(200)]
    labels = ["a" if i % 4 else "b" for i in range(200)]
    strata = ["x" if i < 100 else "y" for i in range(200)]
    held = holdout_rows(texts, labels, strata, 0.3)
    assert Counter((labels[i], strata[i]) for i in held) == {
        ("a", "x"): 22,
        ("a", "y"): 22,
        ("b", "x"): 8,
        ("b", "y"): 8,
    }
    perm = list(range(200))
    random.Random(0).shuffle(perm)
    again = holdout_rows([texts[i] for i in perm], [labels[i] for i in perm], [strata[i] for i in perm], 0.3)
    assert {texts[perm[j]] for j in again} == {texts[i] for i in held}


def test_part_and_where_select_the_same_rows(reviews: Path) -> None:
    held = load_source(parse_source(f"sentiment={reviews}?slice=source&holdout=0.3&part=holdout"))
    rest = load_source(parse_source(f"sentiment={reviews}?slice=source&holdout=0.3&part=train"))
    assert len(held.texts) == 36  # 30% of each (label, source) group of 20
    assert len(rest.texts) == 84
    assert not set(held.texts) & set(rest.texts)
    assert Counter(held.slices or []) == {"amazon": 12, "imdb": 12, "yelp": 12}
    amazon = load_source(parse_source(f"sentiment={reviews}?where=source:amazon&holdout=0.3&part=holdout"))
    assert set(amazon.texts) == {
        t for t, s in zip(held.texts, held.slices or [], strict=True) if s == "amazon"
    }
    assert held.rows[0] >= 1
    assert held.report.filtered == 84


def test_two_label_source_trains_and_scores_two_way(reviews: Path, news: Path) -> None:
    cfg = TrainConfig(
        data=[
            parse_source(f"sentiment={news}"),
            parse_source(f"sentiment={reviews}?slice=source&holdout=0.3"),
        ],
        dev_fraction=0.2,
    )
    prep = prepare(cfg, tok)
    assert prep.heads == [("sentiment", LABELS)]
    assert all(e.allowed is None for e in prep.train["news"])
    assert all(e.allowed == (0, 2) for e in prep.train["uci"])
    dev_all = [e for e in prep.dev if e.source == "uci"]
    assert len(dev_all) == 36  # the whole fixed holdout, no dev_fraction split of it
    assert len(prep.train["uci"]) == 84
    info = {d["path"]: d for d in prep.data_info}
    assert info[str(reviews)]["labels"] == ["negative", "positive"]
    # predictions: everything "neutral" for news, "positive" for reviews
    preds = [1 if e.allowed is None else 2 for e in prep.dev]
    m = dev_metrics(prep.heads, prep.dev, preds)["sentiment"]
    assert m["by_source"]["uci"]["scored_labels"] == ["negative", "positive"]
    assert m["by_source"]["uci"]["accuracy"] == pytest.approx(0.5)
    assert m["by_source"]["uci"]["macro_f1"] == pytest.approx(1 / 3)  # 2-way: F1(pos) 2/3, F1(neg) 0
    assert set(m["by_source"]["uci"]["slices"]) == {"amazon", "imdb", "yelp"}
    assert m["n"] == len(prep.dev) - 36  # the head's overall: its full-label sources
    value = monitor_value({"sentiment": m}, "sources")
    assert value == pytest.approx((m["by_source"]["news"]["macro_f1"] + 1 / 3) / 2)


def test_dev_file_is_the_sources_dev_set_and_deduped_from_train(tmp_path: Path) -> None:
    (tmp_path / "sst2").mkdir()
    rows = [(f"phrase {i}", "positive" if i % 2 else "negative") for i in range(30)]
    train = write_csv(tmp_path / "sst2" / "train.csv", rows)
    dev = write_csv(tmp_path / "sst2" / "dev.csv", [("PHRASE 1", "positive"), ("a new sentence", "negative")])
    prep = prepare(TrainConfig(data=[parse_source(f"sentiment={train}?dev={dev}")]), tok)
    assert [e.source for e in prep.dev] == ["sst2", "sst2"]
    assert prep.dev_texts == ["PHRASE 1", "a new sentence"]
    assert len(prep.train["sst2"]) == 29  # "phrase 1" is a dev sentence: never trained on
    assert {d["role"] for d in prep.data_info} == {"train", "dev"}


def test_leave_out_scores_the_source_without_training_on_it(reviews: Path, news: Path) -> None:
    data = [parse_source(f"sentiment={news}"), parse_source(f"sentiment={reviews}?slice=source&holdout=0.3")]
    prep = prepare(TrainConfig(data=data, dev_fraction=0.2, leave_out=[reviews.parent.name]), tok)
    assert set(prep.train) == {"news"}
    assert sum(e.source == "uci" for e in prep.dev) == 36
    assert prep.left_out == {"uci"}
    assert next(d for d in prep.data_info if d["path"] == str(reviews))["left_out"] is True
    with pytest.raises(TrainError, match=r"--leave-out \['nope'\]: no such training source"):
        prepare(TrainConfig(data=data, leave_out=["nope"]), tok)
    with pytest.raises(TrainError, match="leaves no training source"):
        prepare(TrainConfig(data=data[:1], leave_out=["news"]), tok)


def test_sentiment_label_outside_the_head_is_an_error_naming_file_and_row(tmp_path: Path) -> None:
    rows = [(f"up {i}", "positive") for i in range(5)] + [(f"flat {i}", "neutral") for i in range(5)]
    f = write_csv(tmp_path / "t.csv", [*rows, ("down", "negativ")])
    from training.trainer import train

    cfg = TrainConfig(
        data=[parse_source(f"sentiment={f}")], output=str(tmp_path / "out"), base_model="random:tiny"
    )
    with pytest.raises(TrainError, match=r"t\.csv: row 11: label 'negativ' is not a sentiment label"):
        train(cfg)
    assert not (tmp_path / "out").exists()
    # with an explicit label set such rows are skipped and counted, as documented
    prep = prepare(
        TrainConfig(data=[parse_source(f"sentiment={f}")], labels={"sentiment": list(LABELS)}), tok
    )
    assert prep.load_reports[0]["skipped"]


def test_label_outside_scored_names_the_row(tmp_path: Path) -> None:
    f = write_csv(
        tmp_path / "r.csv",
        [(f"r{i}", "positive" if i % 2 else "negative") for i in range(20)] + [("meh", "neutral")],
    )
    with pytest.raises(DataError, match=r"r\.csv: row 21: label 'neutral' is not in scored"):
        prepare(TrainConfig(data=[parse_source(f"sentiment={f}?scored=negative,positive")]), tok)


def test_missing_column_in_a_dev_file_names_the_file(tmp_path: Path, news: Path) -> None:
    bad = write_csv(tmp_path / "dev.csv", [("x",)], header="sentence")
    with pytest.raises(DataError, match=r"dev\.csv: missing column\(s\) \['text', 'label'\]"):
        prepare(TrainConfig(data=[parse_source(f"sentiment={news}?dev={bad}")]), tok)


def test_source_weights_keep_the_big_source_from_drowning_the_others() -> None:
    def ex(name: str, n: int) -> list[Example]:
        return [Example([1], 0, 0, name, None) for _ in range(n)]

    sizes = {"financial-phrasebank": 3300, "sst2": 67000, "twitter": 8400, "uci-review-sentences": 2100}
    train = {n: ex(n, k) for n, k in sizes.items()}
    plain = SourceSampler(train, 0.5, {}, 0).shares()
    assert plain["sst2"] > 0.5
    weights = {"financial-phrasebank": 2.0, "sst2": 0.4, "uci-review-sentences": 1.5}
    mixed = SourceSampler(train, 0.5, weights, 0).shares()
    assert sum(mixed.values()) == pytest.approx(1.0)
    assert max(mixed.values()) < 0.35
    assert min(mixed.values()) > 0.15
    assert mixed["financial-phrasebank"] > mixed["sst2"]
    sampler = SourceSampler(train, 0.5, weights, 1)
    drawn = Counter(e.source for _ in range(100) for e in sampler.batch(64))
    assert drawn["sst2"] / sum(drawn.values()) == pytest.approx(mixed["sst2"], abs=0.03)


def test_dev_prediction_is_restricted_to_the_source_labels() -> None:
    torch = pytest.importorskip("torch")
    from streamer.model.bundle import HeadSpec
    from training.devset import predict_dev

    class Fixed(torch.nn.Module):  # type: ignore[misc]
        head_specs = (HeadSpec("sentiment", LABELS),)

        def forward(self, ids: object, mask: object) -> dict[str, object]:
            n = ids.shape[0]  # type: ignore[attr-defined]
            return {"sentiment": torch.tensor([[0.1, 5.0, 0.3]]).repeat(n, 1)}

    dev = [Example([101, 102], 0, 2, "pb", None), Example([101, 102], 0, 2, "sst2", None, allowed=(0, 2))]
    assert predict_dev(Fixed(), dev, 0, 1, 8) == [
        1,
        2,
    ]  # neutral for PhraseBank, positive (not neutral) for SST-2
