"""Drift: is the served stream still the one the model was checked on?

At export the bundle records a reference profile of its dev texts (``drift_profile`` in
bundle.json, built by ``training.profile``): per head the label mix and histograms of the
top-class probability and of the normalized entropy (fixed bins on [0, 1]), plus the
truncation rate and the share of unknown tokens. The daemon keeps the same counts over a
sliding window (the last ``window_messages``, and/or ``window_s`` seconds) and compares:

* label mix: Jensen-Shannon distance (base 2, in [0, 1]);
* confidence and entropy: PSI (population stability index) over the fixed bins;
* truncation and unknown-token rates: absolute difference.

Any statistic over its threshold is a breach. The state moves ok -> drifting only when the
whole window breaches and so does each of its ``segments`` parts on its own: a burst of
negative news shorter than the window leaves a part clean and is not drift (the spike
detector is for bursts). It moves back once the whole window is under ``resolve_ratio`` x
every threshold.

Everything here is pure; counts live in plain lists so one
message costs a few microseconds (``python -m bench.drift``).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from streamer.errors import UsageError

PROFILE_KEY = "drift_profile"
PROFILE_FORMAT = 1
BINS = 10  # fixed bins on [0, 1] for the top-class probability and the normalized entropy
_PSI_FLOOR = 1e-4  # empty bins: PSI is undefined at 0


class ProfileError(UsageError):
    """A ``drift_profile`` in bundle.json that cannot be read; the message says what is wrong."""


class State(StrEnum):
    OK = "ok"
    DRIFTING = "drifting"


class _Scored(Protocol):
    """What drift reads of one head's prediction (``HeadPrediction``)."""

    @property
    def label(self) -> str: ...
    @property
    def score(self) -> float: ...
    @property
    def scores(self) -> dict[str, float]: ...


# ---------------------------------------------------------------- the profile


@dataclass(frozen=True)
class HeadProfile:
    labels: tuple[str, ...]
    label_mix: tuple[float, ...]
    confidence: tuple[float, ...]  # shares per bin of the top-class probability
    entropy: tuple[float, ...]  # shares per bin of the entropy / log(number of labels)


@dataclass(frozen=True)
class Profile:
    messages: int
    heads: dict[str, HeadProfile]
    truncation_rate: float
    unknown_share: float | None  # unknown tokens / tokens; None: the tokenizer has no unknown token

    def to_json(self) -> dict[str, Any]:
        return {
            "format": PROFILE_FORMAT,
            "bins": BINS,
            "messages": self.messages,
            "truncation_rate": self.truncation_rate,
            "unknown_share": self.unknown_share,
            "heads": {
                name: {
                    "labels": list(h.labels),
                    "label_mix": list(h.label_mix),
                    "confidence": list(h.confidence),
                    "entropy": list(h.entropy),
                }
                for name, h in self.heads.items()
            },
        }

    @classmethod
    def from_json(cls, raw: Any) -> Profile:
        if not isinstance(raw, Mapping):
            raise ProfileError(f"{PROFILE_KEY} must be an object")
        if raw.get("format") != PROFILE_FORMAT or raw.get("bins") != BINS:
            raise ProfileError(
                f"{PROFILE_KEY}: format {raw.get('format')!r} / bins {raw.get('bins')!r} "
                f"not supported (expected {PROFILE_FORMAT} / {BINS})"
            )
        try:
            heads = {}
            for name, h in raw["heads"].items():
                labels = tuple(str(x) for x in h["labels"])
                mix, conf, ent = (
                    tuple(float(x) for x in h[k]) for k in ("label_mix", "confidence", "entropy")
                )
                if len(mix) != len(labels) or len(conf) != BINS or len(ent) != BINS:
                    raise ProfileError(f"{PROFILE_KEY}.heads.{name}: wrong number of shares")
                heads[str(name)] = HeadProfile(labels, mix, conf, ent)
            unknown = raw.get("unknown_share")
            return cls(
                messages=int(raw["messages"]),
                heads=heads,
                truncation_rate=float(raw["truncation_rate"]),
                unknown_share=None if unknown is None else float(unknown),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ProfileError(f"{PROFILE_KEY}: malformed ({exc!r})") from None


def bin_of(x: float) -> int:
    """The fixed bin of a value in [0, 1] (1.0 falls in the last bin)."""
    return min(max(int(x * BINS), 0), BINS - 1)


def normalized_entropy(scores: Sequence[float]) -> float:
    """Entropy of a distribution over k labels divided by log(k): 0 certain, 1 uniform."""
    h = -sum(p * math.log(p) for p in scores if p > 0.0)
    return h / math.log(len(scores)) if len(scores) > 1 else 0.0


class Counts:
    """Running counts of the profile's quantities; messages can be added and taken back."""

    def __init__(self, heads: Mapping[str, Sequence[str]]) -> None:
        self.heads = {name: tuple(labels) for name, labels in heads.items()}
        self._index = {name: {lab: i for i, lab in enumerate(labels)} for name, labels in self.heads.items()}
        self.messages = 0
        self.labels = {name: [0] * len(labels) for name, labels in self.heads.items()}
        self.confidence = {name: [0] * BINS for name in self.heads}
        self.entropy = {name: [0] * BINS for name in self.heads}
        self.truncated = 0
        self.unknown = 0
        self.tokens = 0

    def features(self, pred: Mapping[str, _Scored]) -> tuple[int, ...]:
        """One message as bin indexes: (label, confidence bin, entropy bin) per head."""
        out: list[int] = []
        for name, index in self._index.items():
            p = pred[name]
            out += (index[p.label], bin_of(p.score), bin_of(normalized_entropy(list(p.scores.values()))))
        return tuple(out)

    def add(self, feats: tuple[int, ...], truncated: bool, unknown: int, tokens: int, sign: int = 1) -> None:
        i = 0
        for name in self.heads:
            self.labels[name][feats[i]] += sign
            self.confidence[name][feats[i + 1]] += sign
            self.entropy[name][feats[i + 2]] += sign
            i += 3
        self.messages += sign
        self.truncated += sign * truncated
        self.unknown += sign * unknown
        self.tokens += sign * tokens

    def take(self, other: Counts) -> None:
        """Subtract every message of ``other`` (a segment leaving the window)."""
        for name in self.heads:
            for mine, theirs in (
                (self.labels[name], other.labels[name]),
                (self.confidence[name], other.confidence[name]),
                (self.entropy[name], other.entropy[name]),
            ):
                for i, v in enumerate(theirs):
                    mine[i] -= v
        self.messages -= other.messages
        self.truncated -= other.truncated
        self.unknown -= other.unknown
        self.tokens -= other.tokens

    def profile(self) -> Profile:
        n = max(self.messages, 1)
        return Profile(
            messages=self.messages,
            heads={
                name: HeadProfile(
                    labels,
                    tuple(c / n for c in self.labels[name]),
                    tuple(c / n for c in self.confidence[name]),
                    tuple(c / n for c in self.entropy[name]),
                )
                for name, labels in self.heads.items()
            },
            truncation_rate=self.truncated / n,
            unknown_share=self.unknown / self.tokens if self.tokens else None,
        )


# ---------------------------------------------------------------- statistics


def js_distance(p: Sequence[float], q: Sequence[float]) -> float:
    """Jensen-Shannon distance (square root of the divergence, base 2): 0 same, 1 disjoint."""
    sp, sq = sum(p) or 1.0, sum(q) or 1.0
    div = 0.0
    for a, b in zip(p, q, strict=True):
        a, b = a / sp, b / sq
        m = (a + b) / 2
        if a > 0:
            div += a * math.log2(a / m) / 2
        if b > 0:
            div += b * math.log2(b / m) / 2
    return math.sqrt(max(div, 0.0))


def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    """Population stability index over the same bins (shares floored at 1e-4)."""
    se, sa = sum(expected) or 1.0, sum(actual) or 1.0
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        e, a = max(e / se, _PSI_FLOOR), max(a / sa, _PSI_FLOOR)
        total += (a - e) * math.log(a / e)
    return total


@dataclass(frozen=True)
class Thresholds:
    js: float = 0.15
    psi: float = 0.25
    rate: float = 0.1  # absolute change of the truncation or unknown-token rate
    resolve_ratio: float = 0.8


@dataclass(frozen=True)
class Statistics:
    """The window against the reference; ``breaches`` names each statistic over its threshold."""

    window: int
    label_js: dict[str, float]
    confidence_psi: dict[str, float]
    entropy_psi: dict[str, float]
    truncation_rate: float
    unknown_share: float | None
    truncation_delta: float
    unknown_delta: float
    breaches: tuple[str, ...]
    clear: bool  # every statistic under resolve_ratio x its threshold


def compare(ref: Profile, win: Profile, t: Thresholds) -> Statistics:
    js = {h: js_distance(ref.heads[h].label_mix, win.heads[h].label_mix) for h in ref.heads}
    cpsi = {h: psi(ref.heads[h].confidence, win.heads[h].confidence) for h in ref.heads}
    epsi = {h: psi(ref.heads[h].entropy, win.heads[h].entropy) for h in ref.heads}
    trunc = abs(win.truncation_rate - ref.truncation_rate)
    unk = (
        abs(win.unknown_share - ref.unknown_share)
        if win.unknown_share is not None and ref.unknown_share is not None
        else 0.0
    )
    checks: list[tuple[str, float, float]] = []
    checks += [(f"label_js:{h}", v, t.js) for h, v in js.items()]
    checks += [(f"confidence_psi:{h}", v, t.psi) for h, v in cpsi.items()]
    checks += [(f"entropy_psi:{h}", v, t.psi) for h, v in epsi.items()]
    checks += [("truncation_rate", trunc, t.rate), ("unknown_share", unk, t.rate)]
    return Statistics(
        window=win.messages,
        label_js=js,
        confidence_psi=cpsi,
        entropy_psi=epsi,
        truncation_rate=win.truncation_rate,
        unknown_share=win.unknown_share,
        truncation_delta=trunc,
        unknown_delta=unk,
        breaches=tuple(name for name, v, limit in checks if v > limit),
        clear=all(v <= limit * t.resolve_ratio for _, v, limit in checks),
    )


# ---------------------------------------------------------------- the window and the state


@dataclass(frozen=True)
class Observation:
    """One message as the window counts it."""

    feats: tuple[int, ...]
    truncated: bool
    unknown: int = 0  # unknown tokens (0 where the message was not sampled for them)
    tokens: int = 0


@dataclass
class _Segment:
    counts: Counts
    started: float


class Window:
    """The last ``segments`` full segments plus the one filling, about ``max_messages`` in all.

    A segment closes at ``max_messages / segments`` messages or (``max_age_s`` > 0) that share
    of the age limit; only whole segments leave, so adding a message is a few list updates.
    """

    def __init__(
        self, heads: Mapping[str, Sequence[str]], max_messages: int, max_age_s: float, segments: int
    ):
        self.heads = heads
        self.segment_messages = max(1, -(-max_messages // segments))
        self.segment_s = max_age_s / segments if max_age_s > 0 else 0.0
        self.segments = segments
        self.total = Counts(heads)
        self.full: deque[_Segment] = deque()
        self.filling: _Segment | None = None

    def add(self, obs: Observation, now: float) -> None:
        seg = self.filling
        if seg is None or seg.counts.messages >= self.segment_messages:
            self._close(now)
            seg = self.filling = _Segment(Counts(self.heads), now)
        seg.counts.add(obs.feats, obs.truncated, obs.unknown, obs.tokens)
        self.total.add(obs.feats, obs.truncated, obs.unknown, obs.tokens)

    def expire(self, now: float) -> None:
        """Close the filling segment once it is too old; drop segments past the age limit."""
        seg = self.filling
        if seg is not None and self.segment_s > 0 and now - seg.started >= self.segment_s:
            self._close(now)
        if self.segment_s > 0:
            limit = now - self.segment_s * (self.segments + 1)
            while self.full and self.full[0].started < limit:
                self.total.take(self.full.popleft().counts)

    def _close(self, now: float) -> None:
        if self.filling is not None and self.filling.counts.messages:
            self.full.append(self.filling)
        self.filling = None
        while len(self.full) > self.segments:
            self.total.take(self.full.popleft().counts)

    def __len__(self) -> int:
        return self.total.messages


class Monitor:
    """A reference profile, the window and the state: :meth:`observe` after every batch.

    ok -> drifting when the whole window breaches and so does each of its ``segments`` full
    segments (a burst shorter than the window leaves one of them clean); drifting -> ok when
    every statistic of the whole window is under ``resolve_ratio`` x its threshold.
    """

    def __init__(
        self,
        reference: Profile,
        *,
        window_messages: int,
        window_s: float = 0.0,
        min_messages: int = 1,
        segments: int = 4,
        thresholds: Thresholds = Thresholds(),
    ) -> None:
        self.reference = reference
        heads = {n: h.labels for n, h in reference.heads.items()}
        self.window = Window(heads, window_messages, window_s, segments)
        self.min_messages = min_messages
        self.thresholds = thresholds
        self.state = State.OK
        self.last: Statistics | None = None

    def features(self, pred: Mapping[str, _Scored]) -> tuple[int, ...]:
        return self.window.total.features(pred)

    def observe(self, observations: Sequence[Observation], now: float) -> Statistics | None:
        """Add one batch; the window's statistics once it holds ``min_messages`` (else None)."""
        win = self.window
        for obs in observations:
            win.add(obs, now)
        win.expire(now)
        if len(win) < self.min_messages:
            self.last = None
            return None
        ref, t = self.reference, self.thresholds
        stats = compare(ref, win.total.profile(), t)
        if self.state == State.OK:
            if stats.breaches and len(win.full) >= win.segments:
                parts = (compare(ref, seg.counts.profile(), t) for seg in win.full)
                if all(part.breaches for part in parts):
                    self.state = State.DRIFTING
        elif stats.clear:
            self.state = State.OK
        self.last = stats
        return stats


def profile_of(manifest: Mapping[str, Any], heads: Mapping[str, Sequence[str]]) -> Profile | None:
    """The bundle's reference profile, None if it has none; ProfileError if it does not fit its heads."""
    raw = manifest.get(PROFILE_KEY)
    if raw is None:
        return None
    prof = Profile.from_json(raw)
    got = {n: h.labels for n, h in prof.heads.items()}
    want = {n: tuple(labels) for n, labels in heads.items()}
    if got != want:
        raise ProfileError(f"{PROFILE_KEY}: heads {got} differ from the bundle's {want}")
    return prof
