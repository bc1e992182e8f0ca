"""Teacher-logits files: found by data key, refused when stale, and the whole teacher -> student path."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from training.config import TrainConfig, TrainError
from training.data import parse_source
from training.dataset import Prepared, prepare
from training.distill import TeacherFileError, attach, data_key, hashes, write_logits


def tok(texts: list[str]) -> list[list[int]]:
    return [[101, len(t), 102] for t in texts]


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        w.writerows(rows)
    return path


@pytest.fixture
def sources(tmp_path: Path) -> list[Path]:
    words = ["rose", "fell", "held"]
    news = [(f"shares {words[i % 3]} {i}", ("positive", "negative", "neutral")[i % 3]) for i in range(45)]
    reviews = [
        (f"the film was {'good' if i % 2 else 'bad'} {i}", "positive" if i % 2 else "negative")
        for i in range(30)
    ]
    return [
        write_csv(tmp_path / "news" / "news.csv", news),
        write_csv(tmp_path / "rev" / "reviews.csv", reviews),
    ]


def config(sources: list[Path], **kw: Any) -> TrainConfig:
    return TrainConfig(data=[parse_source(f"sentiment={p}") for p in sources], dev_fraction=0.2, **kw)


def fake_teacher(
    prep: Prepared, out: Path, *, labels: list[str] | None = None, trained_dev: bool = False
) -> Path:
    """What `python -m training.teacher logits` writes, with logits = row position."""
    texts = [t for name in prep.train_texts for t in prep.train_texts[name]] + prep.dev_texts
    keys = hashes(texts)
    uniq, first = np.unique(keys, return_index=True)
    trained = np.isin(
        uniq,
        hashes([t for v in prep.train_texts.values() for t in v] + (prep.dev_texts if trained_dev else [])),
    )
    logits = np.stack([np.full(3, float(i), dtype=np.float32) for i in first])
    manifest = {
        "format": 1,
        "teacher": {"name": "fake", "version": "1"},
        "heads": {"sentiment": labels or ["negative", "neutral", "positive"]},
        "sources": [
            {k: d[k] for k in ("head", "path", "fingerprint")} for d in prep.data_info if d["role"] == "train"
        ],
    }
    arrays = {"keys__sentiment": uniq, "logits__sentiment": logits, "trained__sentiment": trained}
    return write_logits(out, data_key(prep.heads, prep.data_info), manifest, arrays)


def test_student_rows_get_their_teacher_logits(sources: list[Path], tmp_path: Path) -> None:
    prep = prepare(config(sources), tok)
    path = fake_teacher(prep, tmp_path / "tl")
    info = attach(config(sources, teacher_logits=str(tmp_path / "tl")), prep)
    assert info["used"] is True
    assert info["file"] == str(path)
    assert info["alpha"] == 0.5
    assert all(e.soft is not None for ex in prep.train.values() for e in ex)
    assert all(e.soft is None for e in prep.dev)
    assert not list((tmp_path / "tl").glob(".*"))  # no partial files left


def test_no_file_for_this_data_trains_without_distillation(
    sources: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prep = prepare(config(sources), tok)
    info = attach(config(sources, teacher_logits=str(tmp_path / "missing")), prep)
    assert info["used"] is False
    assert "WITHOUT distillation" in capsys.readouterr().err
    assert attach(config(sources), prep)["used"] is False
    # a directory holding only another data version's file: named, and not used
    other = prepare(config(sources[:1]), tok)
    fake_teacher(other, tmp_path / "tl")
    info = attach(config(sources, teacher_logits=str(tmp_path / "tl")), prep)
    assert info["used"] is False
    assert "only for other data" in info["reason"]


def test_stale_explicit_file_is_refused_naming_file_and_source(sources: list[Path], tmp_path: Path) -> None:
    prep = prepare(config(sources), tok)
    path = fake_teacher(prep, tmp_path / "tl")
    with sources[1].open("a", encoding="utf-8") as fh:
        fh.write("a brand new review,positive\n")
    changed = prepare(config(sources), tok)
    with pytest.raises(
        TeacherFileError, match=rf"{path.name}: does not match sentiment=.*reviews\.csv: its rows changed"
    ):
        attach(config(sources, teacher_logits=str(path)), changed)
    assert all(e.soft is None for ex in changed.train.values() for e in ex)


def test_labels_that_differ_are_refused(sources: list[Path], tmp_path: Path) -> None:
    prep = prepare(config(sources), tok)
    path = fake_teacher(prep, tmp_path / "tl", labels=["negative", "positive", "neutral"])
    with pytest.raises(
        TeacherFileError, match=r"labels differ: teacher \['negative', 'positive', 'neutral'\]"
    ):
        attach(config(sources, teacher_logits=str(path)), prep)


def test_altered_npz_is_refused(sources: list[Path], tmp_path: Path) -> None:
    prep = prepare(config(sources), tok)
    path = fake_teacher(prep, tmp_path / "tl")
    npz = path.with_suffix(".npz")
    npz.write_bytes(npz.read_bytes()[:-10])
    with pytest.raises(TeacherFileError, match=r"\.npz: missing or altered"):
        attach(config(sources, teacher_logits=str(path)), prep)


def test_rows_without_logits_name_file_and_rows(sources: list[Path], tmp_path: Path) -> None:
    prep = prepare(config(sources), tok)
    path = fake_teacher(prep, tmp_path / "tl")
    manifest = json.loads(path.read_text())
    with np.load(path.with_suffix(".npz")) as z:
        arrays = {k: z[k][5:] for k in z.files}  # drop some rows' logits
    write_logits(path.parent, path.stem, manifest, arrays)
    with pytest.raises(
        TeacherFileError, match=r"no teacher logits for \d+ training row\(s\) of .*\.csv \(rows \["
    ):
        attach(config(sources, teacher_logits=str(path)), prep)


def test_teacher_trained_on_our_dev_rows_is_refused(sources: list[Path], tmp_path: Path) -> None:
    prep = prepare(config(sources), tok)
    path = fake_teacher(prep, tmp_path / "tl", trained_dev=True)
    with pytest.raises(TeacherFileError, match=r"the teacher trained on .* dev rows"):
        attach(config(sources, teacher_logits=str(path)), prep)


@pytest.mark.train
def test_teacher_then_distilled_student(sources: list[Path], tmp_path: Path) -> None:
    """Tiny teacher bundle -> its logits file -> a student that uses it (recorded in bundle.json)."""
    from streamer.model.bundle import load_bundle
    from training.teacher import is_current, teacher_logits
    from training.trainer import train

    def cfg(out: str, **kw: Any) -> TrainConfig:
        return config(
            sources, base_model="random:tiny", epochs=1, steps_per_epoch=4, batch_size=8, max_length=24,
            force=True, progress=False, output=str(tmp_path / out), **kw,
        )  # fmt: skip

    teacher = train(cfg("teacher"))
    logits = teacher_logits(teacher, tmp_path / "tl", progress=False)
    assert teacher_logits(teacher, tmp_path / "tl", progress=False) == logits  # up to date: not redone
    specs = [f"sentiment={p}" for p in sources]
    assert is_current(teacher, specs)[0]
    assert not is_current(teacher, specs[:1])[0]
    student = load_bundle(train(cfg("student", teacher_logits=str(tmp_path / "tl"), kd_alpha=0.7)))
    kd = student.manifest["history"][0]["distillation"]
    assert kd["used"] is True
    assert kd["file"] == str(logits)
    assert student.manifest["recipe"]["kd_alpha"] == 0.7
    gate = student.manifest["export"]["int8_metrics"]
    assert set(gate["heads"]["sentiment"]["by_source"]) == {"news", "reviews"}
    assert gate["limit"] == 0.005
    with sources[0].open("a", encoding="utf-8") as fh:
        fh.write("a new headline,neutral\n")
    with pytest.raises(TrainError, match=r"does not match sentiment=.*news\.csv"):
        train(cfg("stale", teacher_logits=str(logits)))
    assert not (tmp_path / "stale").exists()
