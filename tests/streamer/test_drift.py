"""Drift statistics and the ok/drifting hysteresis, pure (no model, no broker)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from streamer.drift import (
    BINS,
    Counts,
    Monitor,
    Observation,
    Profile,
    ProfileError,
    State,
    Thresholds,
    bin_of,
    compare,
    js_distance,
    normalized_entropy,
    profile_of,
    psi,
)

HEADS = {"sentiment": ("negative", "neutral", "positive")}


@dataclass(frozen=True)
class Pred:
    label: str
    score: float
    scores: dict[str, float]


def pred(label: str, score: float = 0.8) -> dict[str, Pred]:
    rest = (1.0 - score) / 2
    scores = {lab: (score if lab == label else rest) for lab in HEADS["sentiment"]}
    return {"sentiment": Pred(label, score, scores)}


def profile(mix: dict[str, int], *, truncated: int = 0, score: float = 0.8) -> Profile:
    counts = Counts(HEADS)
    for label, n in mix.items():
        for i in range(n):
            counts.add(counts.features(pred(label, score)), i < truncated, 0, 10)
    return counts.profile()


def test_js_distance_bounds_and_symmetry() -> None:
    assert js_distance([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == pytest.approx(0.0, abs=1e-7)
    assert js_distance([1, 0], [0, 1]) == pytest.approx(1.0)
    a, b = [0.6, 0.3, 0.1], [0.2, 0.3, 0.5]
    assert js_distance(a, b) == pytest.approx(js_distance(b, a))
    assert 0 < js_distance(a, b) < 1
    assert js_distance([6, 3, 1], [2, 3, 5]) == pytest.approx(js_distance(a, b))  # counts or shares


def test_psi_known_value() -> None:
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    expected = (0.7 - 0.5) * math.log(0.7 / 0.5) + (0.3 - 0.5) * math.log(0.3 / 0.5)
    assert psi([0.5, 0.5], [0.7, 0.3]) == pytest.approx(expected)
    assert math.isfinite(psi([1.0, 0.0], [0.0, 1.0]))  # empty bins floored, not infinite


def test_bins_and_entropy() -> None:
    assert bin_of(0.0) == 0
    assert bin_of(1.0) == BINS - 1
    assert bin_of(0.55) == 5
    assert normalized_entropy([1.0, 0.0, 0.0]) == 0.0
    assert normalized_entropy([1 / 3] * 3) == pytest.approx(1.0)


def test_counts_add_and_take_back() -> None:
    counts = Counts(HEADS)
    f = counts.features(pred("positive", 0.9))
    counts.add(f, True, 1, 10)
    counts.add(counts.features(pred("negative")), False, 0, 10)
    p = counts.profile()
    assert p.heads["sentiment"].label_mix == (0.5, 0.0, 0.5)
    assert p.truncation_rate == 0.5
    assert p.unknown_share == pytest.approx(0.05)
    counts.add(f, True, 1, 10, sign=-1)
    assert counts.profile().heads["sentiment"].label_mix == (1.0, 0.0, 0.0)


def test_profile_json_round_trip_and_errors() -> None:
    p = profile({"negative": 3, "positive": 7}, truncated=2)
    again = Profile.from_json(p.to_json())
    assert again == p
    assert profile_of({"drift_profile": p.to_json()}, HEADS) == p
    assert profile_of({}, HEADS) is None  # an older bundle: drift off, not an error
    with pytest.raises(ProfileError, match="differ"):
        profile_of({"drift_profile": p.to_json()}, {"topic": ("a", "b")})
    with pytest.raises(ProfileError, match="format"):
        Profile.from_json({**p.to_json(), "bins": 7})
    with pytest.raises(ProfileError, match="malformed"):
        Profile.from_json({"format": 1, "bins": BINS, "heads": {}})


def test_compare_names_the_breaches() -> None:
    ref = profile({"negative": 30, "neutral": 40, "positive": 30})
    same = compare(ref, profile({"negative": 30, "neutral": 40, "positive": 30}), Thresholds())
    assert same.breaches == ()
    assert same.clear
    shifted = compare(ref, profile({"negative": 90, "neutral": 5, "positive": 5}, truncated=50), Thresholds())
    assert "label_js:sentiment" in shifted.breaches
    assert "truncation_rate" in shifted.breaches
    assert not shifted.clear
    unsure = compare(ref, profile({"negative": 30, "neutral": 40, "positive": 30}, score=0.4), Thresholds())
    assert "confidence_psi:sentiment" in unsure.breaches
    assert "label_js:sentiment" not in unsure.breaches


def _monitor(window: int = 200) -> Monitor:
    ref = profile({"negative": 300, "neutral": 400, "positive": 300})
    return Monitor(ref, window_messages=window, min_messages=100, segments=4)


def _stream(mon: Monitor, labels: list[str], now: float = 0.0, batch: int = 10) -> list[State]:
    states = []
    for start in range(0, len(labels), batch):
        obs = [Observation(mon.features(pred(lab)), False) for lab in labels[start : start + batch]]
        mon.observe(obs, now)
        states.append(mon.state)
    return states


NORMAL = [
    "negative",
    "neutral",
    "neutral",
    "positive",
    "neutral",
    "negative",
    "positive",
    "neutral",
    "negative",
    "positive",
]


def test_a_burst_shorter_than_the_window_is_not_drift() -> None:
    mon = _monitor()
    assert set(_stream(mon, NORMAL * 30)) == {State.OK}
    # 100 negative messages in a row (half the window): the whole window's mix breaches for a
    # while, but a part of the window stays clean, so the state never changes
    states = []
    for _ in range(3):
        states += _stream(mon, ["negative"] * 100 + NORMAL * 30)
    assert set(states) == {State.OK}
    assert mon.last is not None


def test_a_lasting_shift_fires_within_one_window_and_resolves_after() -> None:
    mon = _monitor()
    _stream(mon, NORMAL * 30)
    states = _stream(mon, ["negative"] * 400)
    fired_at = states.index(State.DRIFTING) * 10 + 10
    assert fired_at <= 200 + 50  # within one window (and its filling segment) of the change
    states = _stream(mon, NORMAL * 60)
    assert states[-1] == State.OK
    resolved_at = states.index(State.OK) * 10 + 10
    assert 100 <= resolved_at <= 400


def test_no_verdict_below_min_messages_and_time_window_expires() -> None:
    ref = profile({"negative": 300, "neutral": 400, "positive": 300})
    mon = Monitor(ref, window_messages=1000, window_s=60.0, min_messages=50, segments=4)
    obs = [Observation(mon.features(pred("negative")), False) for _ in range(40)]
    assert mon.observe(obs, now=0.0) is None
    assert mon.observe(obs, now=1.0) is not None
    assert len(mon.window) == 80
    mon.observe([], now=80.0)  # the segment closes at 15 s, and leaves after 4 more segments
    assert len(mon.window) == 0
    assert mon.observe(obs, now=81.0) is None  # too few messages again: no verdict
