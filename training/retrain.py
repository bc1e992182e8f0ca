"""``sentiwire retrain``: train a candidate from the served bundle's recipe plus new labels,
score candidate and current on the same holdout, and promote only if no head got worse.

Layout of a models directory (the served path is a symlink, swapped atomically)::

    models/current -> versions/20261125T031502Z      # what the daemons serve (hot reload)
    models/versions/<v>/                             # promoted bundles, never modified after the swap
    models/data/<v>/                                 # the new labeled rows <v> was trained / judged on
    models/history.jsonl                             # every decision, promoted or refused, both metric sets

New rows are copied into ``data/<v>`` so the candidate's recipe names files that stay put: the
next retrain of a promoted bundle re-reads exactly what it was trained on.

Module level stays light (the CLI imports it); torch enters only through ``training.trainer.train``.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import fcntl
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

if TYPE_CHECKING:
    from streamer.model.bundle import Bundle
    from training.config import TrainConfig
    from training.data import LabeledSet, SourceSpec

HISTORY_FILE = "history.jsonl"
VERSIONS_DIR = "versions"
DATA_DIR = "data"
CANDIDATES_DIR = "candidates"
LOCK_FILE = ".retrain.lock"


class RetrainError(Exception):
    """Retraining cannot proceed; the message names the path, head or option at fault."""


# ---------------------------------------------------------------- the decision (pure)


@dataclass(frozen=True)
class HeadComparison:
    head: str
    current: float
    candidate: float
    n: int

    @property
    def delta(self) -> float:
        return self.candidate - self.current


@dataclass(frozen=True)
class Decision:
    promote: bool
    tolerance: float
    heads: tuple[HeadComparison, ...]
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "promote": self.promote,
            "tolerance": self.tolerance,
            "reason": self.reason,
            "heads": {
                h.head: {"current": h.current, "candidate": h.candidate, "delta": h.delta, "n": h.n}
                for h in self.heads
            },
        }


def decide(current: Mapping[str, Any], candidate: Mapping[str, Any], tolerance: float) -> Decision:
    """Promote iff every head scored on the holdout keeps its macro-F1 within ``tolerance``.

    Both arguments map head -> metrics dict with ``macro_f1`` and ``n`` (holdout rows). A head the
    candidate lacks, or a holdout with no scored head at all, refuses: nothing is promoted unjudged.
    """
    if tolerance < 0:
        raise RetrainError(f"tolerance must be >= 0, got {tolerance}")
    if not current:
        return Decision(False, tolerance, (), "no head has holdout rows: nothing to judge the candidate on")
    rows: list[HeadComparison] = []
    missing: list[str] = []
    for head in sorted(current):
        if head not in candidate or candidate[head].get("macro_f1") is None:
            missing.append(head)
            continue
        rows.append(
            HeadComparison(
                head,
                float(current[head]["macro_f1"]),
                float(candidate[head]["macro_f1"]),
                int(current[head]["n"]),
            )
        )
    if missing:
        return Decision(False, tolerance, tuple(rows), f"candidate has no score for head(s) {missing}")
    # A drop of exactly `tolerance` is allowed; 1e-9 absorbs float noise in the subtraction.
    worse = [h for h in rows if h.delta < -tolerance - 1e-9]
    if worse:
        why = ", ".join(f"{h.head} {h.current:.4f} -> {h.candidate:.4f} ({h.delta:+.4f})" for h in worse)
        return Decision(False, tolerance, tuple(rows), f"macro-F1 dropped by more than {tolerance}: {why}")
    summary = ", ".join(f"{h.head} {h.current:.4f} -> {h.candidate:.4f}" for h in rows)
    return Decision(True, tolerance, tuple(rows), f"no head dropped by more than {tolerance}: {summary}")


# ---------------------------------------------------------------- models directory


@dataclass(frozen=True)
class ModelsDir:
    """The served symlink and the directories beside it."""

    served: Path

    @property
    def root(self) -> Path:
        return self.served.parent

    @property
    def versions(self) -> Path:
        return self.root / VERSIONS_DIR

    @property
    def history(self) -> Path:
        return self.root / HISTORY_FILE

    def data(self, version: str) -> Path:
        return self.root / DATA_DIR / version

    def candidate(self, version: str) -> Path:
        return self.root / CANDIDATES_DIR / version

    def check(self) -> None:
        if not self.served.is_symlink():
            raise RetrainError(
                f"{self.served}: the served path must be a symlink to {VERSIONS_DIR}/<version> so promotion "
                f"can swap it atomically; move the bundle to {self.versions}/<version> and link it "
                f"(see `sentiwire retrain --adopt`)"
            )
        if not self.served.resolve().is_dir():
            raise RetrainError(f"{self.served}: symlink target {os.readlink(self.served)} does not exist")

    def new_version(self) -> str:
        """A sortable UTC timestamp not yet used by a version, candidate or data dir."""
        base = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        version, n = base, 1
        while any(p.exists() for p in (self.versions / version, self.candidate(version), self.data(version))):
            n += 1
            version = f"{base}-{n}"
        return version


def swap_symlink(link: Path, target: Path) -> None:
    """Point ``link`` at ``target`` atomically: a new relative symlink renamed over the old one."""
    rel = os.path.relpath(target, link.parent)
    tmp = link.parent / f".{link.name}.swap-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    os.symlink(rel, tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(link.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def adopt(served: Path) -> Path:
    """Turn a plain bundle directory at ``served`` into ``versions/<version>`` + symlink."""
    from streamer.model.bundle import load_bundle

    if served.is_symlink():
        return served.resolve()
    bundle = load_bundle(served, verify=True)
    md = ModelsDir(served)
    dest = md.versions / bundle.version
    if dest.exists():
        raise RetrainError(f"{dest}: already exists; cannot adopt {served} as version {bundle.version}")
    md.versions.mkdir(parents=True, exist_ok=True)
    os.replace(served, dest)
    swap_symlink(served, dest)
    return dest


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """One retrain per models directory at a time (the CronJob forbids overlap too)."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / LOCK_FILE).open("w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RetrainError(f"{root}: another retrain holds {LOCK_FILE}") from None
        yield


def append_history(path: Path, record: Mapping[str, Any]) -> None:
    """One JSON line per decision, flushed to disk before returning."""
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, ensure_ascii=False, sort_keys=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_history(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise RetrainError(f"{path}: line {i} is not JSON ({exc.msg})") from exc
    return out


# ---------------------------------------------------------------- data


def _key(text: str) -> str:
    return " ".join(text.lower().split())


def _write_csv(path: Path, texts: Sequence[str], labels: Sequence[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["text", "label"])
        w.writerows(zip(texts, labels, strict=True))


def split_holdout(
    texts: Sequence[str], labels: Sequence[str], fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Stratified (train, holdout) indices; classes with one row stay in train."""
    from sklearn.model_selection import train_test_split

    if not 0 < fraction < 1:
        raise RetrainError(f"holdout fraction must be in (0, 1), got {fraction}")
    counts: dict[str, int] = {}
    for lab in labels:
        counts[lab] = counts.get(lab, 0) + 1
    pool = [i for i, lab in enumerate(labels) if counts[lab] >= 2]
    keep = [i for i, lab in enumerate(labels) if counts[lab] < 2]
    n_hold = round(len(pool) * fraction)
    if n_hold < len(set(labels[i] for i in pool)) or len(pool) - n_hold < 1:
        raise RetrainError(
            f"too few new rows ({len(texts)}) to carve a {fraction:.0%} holdout; pass --holdout"
        )
    tr, ho = train_test_split(pool, test_size=n_hold, random_state=seed, stratify=[labels[i] for i in pool])
    return sorted([*tr, *keep]), sorted(ho)


@dataclass
class PreparedData:
    train: list[SourceSpec]
    holdout: dict[str, list[LabeledSet]]
    notes: list[str] = field(default_factory=list)


def prepare_data(
    bundle: Bundle,
    new: Sequence[SourceSpec],
    holdout: Sequence[SourceSpec],
    out: Path,
    *,
    fraction: float,
    seed: int,
) -> PreparedData:
    """Validate new rows against the bundle's labels, copy them under ``out``, carve a holdout if none given.

    Rows whose label the served heads do not know are skipped and reported (a retrain never
    grows a head's label set silently).
    """
    from training.data import SourceSpec, load_source

    labels = {h.name: list(h.labels) for h in bundle.heads}
    notes: list[str] = []

    def load(spec: SourceSpec, role: str) -> LabeledSet:
        if spec.head not in labels:
            raise RetrainError(
                f"{role} {spec.path}: head {spec.head!r} is not served (bundle has {sorted(labels)})"
            )
        s = load_source(spec, allowed_labels=labels[spec.head])
        if s.report.n_skipped:
            notes.append(f"{spec.path}: skipped {s.report.n_skipped} row(s): {dict(s.report.skipped)}")
        return s

    given: dict[str, list[LabeledSet]] = {}
    for spec in holdout:
        given.setdefault(spec.head, []).append(load(spec, "--holdout"))
    train: list[SourceSpec] = []
    held: dict[str, list[LabeledSet]] = {h: list(v) for h, v in given.items()}
    loaded = [load(spec, "--data") for spec in new]
    splits: list[tuple[list[int], list[int]]] = []
    for s in loaded:
        if s.spec.head in given:
            splits.append((list(range(len(s.texts))), []))
        else:
            splits.append(split_holdout(s.texts, s.labels, fraction, seed))
    # A text scored in the holdout never also trains the candidate (exact match after case/space folding).
    held_keys: dict[str, set[str]] = {}
    for s, (_, ho_idx) in zip(loaded, splits, strict=True):
        held_keys.setdefault(s.spec.head, set()).update(_key(s.texts[i]) for i in ho_idx)
    for h, sets in given.items():
        held_keys.setdefault(h, set()).update(_key(t) for ls in sets for t in ls.texts)
    for k, (spec, s, (tr_all, ho_idx)) in enumerate(zip(new, loaded, splits, strict=True)):
        name = spec.display_name
        tr_idx = [i for i in tr_all if _key(s.texts[i]) not in held_keys.get(spec.head, set())]
        if len(tr_idx) < len(tr_all):
            notes.append(
                f"{spec.path}: {len(tr_all) - len(tr_idx)} training row(s) dropped: same text is in the holdout"
            )
        path = out / f"{k:02d}-{spec.head}-{name}.train.csv"
        _write_csv(path, [s.texts[i] for i in tr_idx], [s.labels[i] for i in tr_idx])
        train.append(SourceSpec(head=spec.head, path=str(path.resolve()), name=f"{name}@retrain"))
        if ho_idx:
            hpath = out / f"{k:02d}-{spec.head}-{name}.holdout.csv"
            _write_csv(hpath, [s.texts[i] for i in ho_idx], [s.labels[i] for i in ho_idx])
            held.setdefault(spec.head, []).append(load_source(SourceSpec(head=spec.head, path=str(hpath))))
    for head, sets in held.items():
        for s in sets:
            notes.append(f"holdout {head}: {len(s.texts)} rows from {s.spec.path}")
    return PreparedData(train, held, notes)


def rebase_recipe_data(specs: Sequence[SourceSpec], data_root: Path | None) -> list[SourceSpec]:
    """Recipe paths as they resolve here (relative ones against ``data_root``); missing files are an error."""
    out = []
    missing = []
    for spec in specs:
        p = Path(spec.path)
        if not p.is_absolute() and data_root is not None:
            p = data_root / p
        if not p.is_file():
            missing.append(str(p))
        out.append(dataclasses.replace(spec, path=str(p)))
    if missing:
        raise RetrainError(
            f"recipe data not found: {missing}; pass --data-root to resolve relative recipe paths, "
            "or --no-recipe-data to train on the new data only"
        )
    return out


def read_corrections(
    settings_path: Path, topic: str, out: Path, *, timeout_s: float = 60.0
) -> list[SourceSpec]:
    """Snapshot a topic of human-corrected labels (from the beginning to the current end) into CSVs.

    A record is JSON ``{"text": ..., "head": ..., "label": ...}`` or ``{"text": ..., "labels": {head: label}}``.
    Records that are not such objects are counted and reported, never dropped silently.
    """
    import asyncio

    from training.data import SourceSpec

    rows: dict[str, tuple[list[str], list[str]]] = {}
    bad: dict[str, int] = {}
    bad_examples: list[str] = []

    def add(offset: str, value: bytes | None) -> None:
        try:
            obj = json.loads(value or b"")
        except ValueError:
            obj = None
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str) or not obj["text"].strip():
            problem = "not a JSON object with a non-empty text"
        else:
            raw = obj.get("labels")
            pairs: dict[Any, Any] = raw if isinstance(raw, dict) else {obj.get("head"): obj.get("label")}
            good = {h: lab for h, lab in pairs.items() if isinstance(h, str) and isinstance(lab, str) and lab}
            if good:
                for h, lab in good.items():
                    rows.setdefault(h, ([], []))[0].append(obj["text"])
                    rows[h][1].append(lab)
                return
            problem = "no head/label pair"
        bad[problem] = bad.get(problem, 0) + 1
        if len(bad_examples) < 10:
            bad_examples.append(f"{topic}@{offset}: {problem}")

    async def consume() -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        from streamer.config import load_settings
        from streamer.kafka.clients import client_kwargs

        settings = load_settings(settings_path)
        consumer = AIOKafkaConsumer(
            **client_kwargs(settings.kafka),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            # consumer.topics() fetches this same metadata but keeps only the names.
            cluster = await consumer._client.fetch_all_metadata()
            parts = cluster.partitions_for_topic(topic)
            if not parts:
                raise RetrainError(f"--corrections-topic {topic}: topic does not exist")
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            end = await consumer.end_offsets(tps)
            deadline = time.monotonic() + timeout_s
            pending = set(tps)
            while pending:
                for tp in list(pending):
                    if await consumer.position(tp) >= end[tp]:
                        pending.discard(tp)
                if not pending:
                    break
                if time.monotonic() > deadline:
                    raise RetrainError(
                        f"--corrections-topic {topic}: not read to its end within {timeout_s}s"
                    )
                batch = await consumer.getmany(*pending, timeout_ms=1000)
                for tp, msgs in batch.items():
                    for m in msgs:
                        if m.offset < end[tp]:
                            add(f"{tp.partition}:{m.offset}", m.value)
        finally:
            await consumer.stop()

    asyncio.run(consume())
    if bad:
        print(f"note: {topic}: skipped {sum(bad.values())} record(s): {bad}", file=sys.stderr)
        for line in bad_examples:
            print(f"  {line}", file=sys.stderr)
    specs = []
    for head, (texts, labels) in sorted(rows.items()):
        path = out / f"corrections-{head}.csv"
        _write_csv(path, texts, labels)
        specs.append(SourceSpec(head=head, path=str(path), name=f"{topic}"))
    if not specs:
        print(f"note: {topic}: no usable corrections", file=sys.stderr)
    return specs


# ---------------------------------------------------------------- evaluation


def evaluate(
    bundle_path: Path, holdout: Mapping[str, Sequence[LabeledSet]], variant: str = "fp32"
) -> dict[str, Any]:
    """Per head holdout score through ``training.evaluate.evaluate_bundle`` (the serving inference path).

    A head's score is its macro-F1 over all its labels when every holdout source has them all;
    when a source covers only some labels (e.g. binary review data for a 3-way sentiment head),
    ``evaluate_bundle`` scores that source on its own label subset, and the head's score is the
    row-weighted mean of its sources' macro-F1. Either way both models get the same rule.
    """
    from training.evaluate import evaluate_bundle

    specs = [s.spec for sets in holdout.values() for s in sets]
    result = evaluate_bundle(bundle_path, specs, variant="int8" if variant == "int8" else "fp32")
    out: dict[str, Any] = {}
    for head, hm in result["heads"].items():
        sources = hm["by_source"]
        n = sum(int(m["n"]) for m in sources.values())
        labels = hm.get("labels") or next(iter(sources.values()))["labels"]
        full = all(len(m["scored_labels"]) == len(labels) for m in sources.values())
        if full and hm.get("macro_f1") is not None:
            score, basis = float(hm["macro_f1"]), "macro-F1 over all labels"
        else:
            score = sum(float(m["macro_f1"]) * int(m["n"]) for m in sources.values()) / max(n, 1)
            basis = "row-weighted mean of per-source macro-F1 (sources scored on their own label subsets)"
        out[head] = {
            "macro_f1": score,
            "n": n,
            "basis": basis,
            "by_source": {
                name: {k: m[k] for k in ("n", "accuracy", "macro_f1", "scored_labels")}
                for name, m in sources.items()
            },
        }
    return out


# ---------------------------------------------------------------- the whole run


@dataclass
class RetrainOptions:
    served: Path
    data: list[SourceSpec] = field(default_factory=list)
    holdout: list[SourceSpec] = field(default_factory=list)
    tolerance: float = 0.01
    holdout_fraction: float = 0.2
    seed: int = 13
    recipe_data: bool = True
    data_root: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    keep_rejected: bool = False
    variant: Literal["fp32", "int8"] = "fp32"
    dry_run: bool = False


def candidate_config(
    bundle: Bundle, opts: RetrainOptions, train: Sequence[SourceSpec], out: Path
) -> TrainConfig:
    """The served bundle's recipe, with the new data added and the options' overrides applied."""
    from training.config import TrainConfig, TrainError

    recipe = bundle.manifest.get("recipe")
    if not isinstance(recipe, dict) or "data" not in recipe:
        raise RetrainError(f"{bundle.path}: bundle.json has no training recipe; it cannot be retrained")
    try:
        cfg = TrainConfig.from_json(recipe)
    except (TrainError, KeyError, TypeError) as exc:
        raise RetrainError(f"{bundle.path}: bundle.json recipe is not a training config: {exc}") from exc
    base = rebase_recipe_data(cfg.data, opts.data_root) if opts.recipe_data else []
    cfg.dev = rebase_recipe_data(cfg.dev, opts.data_root) if opts.recipe_data else []
    cfg.data = [*base, *train]
    cfg.labels = {h.name: list(h.labels) for h in bundle.heads}
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for key, value in opts.overrides.items():
        if key not in fields or key in ("data", "dev", "labels", "output", "version"):
            raise RetrainError(f"--set {key}: not a recipe field that can be overridden")
        setattr(cfg, key, value)
    cfg.output = str(out)
    cfg.version = out.name
    cfg.name = bundle.name
    cfg.overwrite = False
    cfg.progress = False
    return cfg


def retrain(opts: RetrainOptions) -> dict[str, Any]:
    """Run one retrain; returns the history record (also appended to history.jsonl)."""
    from streamer.model.bundle import load_bundle, read_manifest, write_manifest
    from training.config import TrainError
    from training.trainer import train

    md = ModelsDir(opts.served)
    md.check()
    with locked(md.root):
        started = time.monotonic()
        current = load_bundle(opts.served, verify=True)
        version = md.new_version()
        data_dir = md.data(version)
        prep = prepare_data(
            current, opts.data, opts.holdout, data_dir, fraction=opts.holdout_fraction, seed=opts.seed
        )
        for note in prep.notes:
            print(f"note: {note}", file=sys.stderr)
        if not prep.train:
            # A scheduled run with no new labels is normal: report it, train nothing, record nothing.
            return {
                "event": "retrain",
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
                "current": {"version": current.version, "path": str(current.path)},
                "candidate": {"version": None},
                "skipped": True,
                "decision": {
                    "promote": False,
                    "reason": "no new labeled rows (--data / --corrections-topic)",
                },
            }
        cand_dir = md.candidate(version)
        cfg = candidate_config(current, opts, prep.train, cand_dir)
        record: dict[str, Any] = {
            "event": "retrain",
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "current": {"version": current.version, "path": str(current.path)},
            "candidate": {"version": version},
            "new_data": [s.to_json() for s in prep.train],
            "holdout": {h: [s.spec.path for s in sets] for h, sets in prep.holdout.items()},
        }
        if opts.dry_run:
            record["decision"] = {"promote": False, "reason": "dry run: nothing trained"}
            record["recipe"] = cfg.to_json()
            return record
        try:
            train(cfg)
        except TrainError as exc:
            raise RetrainError(f"candidate training failed: {exc}") from exc
        cur_metrics = evaluate(current.path, prep.holdout, opts.variant)
        cand_metrics = evaluate(cand_dir, prep.holdout, opts.variant)
        decision = decide(cur_metrics, cand_metrics, opts.tolerance)
        record["metrics"] = {"current": cur_metrics, "candidate": cand_metrics}
        record["decision"] = decision.to_json()
        record["seconds"] = round(time.monotonic() - started, 1)
        if decision.promote:
            final = md.versions / version
            md.versions.mkdir(parents=True, exist_ok=True)
            os.replace(cand_dir, final)
            manifest = read_manifest(final)
            # The promoted bundle carries its parent's history, the refusals judged against
            # the parent since it was promoted, and this decision.
            refused = [
                h
                for h in read_history(md.history)
                if h.get("current", {}).get("version") == current.version and not h["decision"].get("promote")
            ]
            manifest["history"] = [*current.manifest.get("history", []), *refused, record]
            write_manifest(final, manifest)
            load_bundle(final, verify=True)
            record["candidate"]["path"] = str(final)
            swap_symlink(opts.served, final)
        else:
            record["candidate"]["path"] = str(cand_dir) if opts.keep_rejected else None
            if not opts.keep_rejected:
                shutil.rmtree(cand_dir, ignore_errors=True)
                shutil.rmtree(data_dir, ignore_errors=True)
        append_history(md.history, record)
        return record


# ---------------------------------------------------------------- CLI


def _parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise RetrainError(f"--set {item!r}: expected KEY=VALUE (VALUE as JSON, e.g. epochs=2)")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def summary(record: Mapping[str, Any]) -> str:
    d = record["decision"]
    if record.get("skipped"):
        return f"NOTHING TO DO: {d['reason']}; {record['current']['version']} keeps serving"
    lines = [
        f"{'PROMOTED' if d['promote'] else 'REFUSED'}: {record['candidate']['version']} "
        f"(current {record['current']['version']}): {d['reason']}"
    ]
    heads = d.get("heads") or {}
    if heads:
        lines.append(f"{'head':<12} {'n':>6} {'current F1':>11} {'candidate F1':>13} {'delta':>8}")
        for h, r in heads.items():
            lines.append(
                f"{h:<12} {r['n']:>6} {r['current']:>11.4f} {r['candidate']:>13.4f} {r['delta']:>+8.4f}"
            )
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    """Attach ``sentiwire retrain``."""

    @app.command("retrain")
    def retrain_cmd(
        served: Annotated[Path, typer.Option(help="served bundle symlink (models/current)")] = Path(
            "models/current"
        ),
        data: Annotated[
            list[str] | None, typer.Option(help="new labeled data HEAD=PATH[?options] (repeatable)")
        ] = None,
        holdout: Annotated[
            list[str] | None, typer.Option(help="holdout HEAD=PATH both models are scored on (repeatable)")
        ] = None,
        corrections_topic: Annotated[
            str | None, typer.Option(help="Kafka topic of human-corrected labels")
        ] = None,
        config: Annotated[
            Path | None, typer.Option(help="daemon config file (Kafka settings for --corrections-topic)")
        ] = None,
        tolerance: Annotated[float, typer.Option(help="largest allowed macro-F1 drop on any head")] = 0.01,
        holdout_fraction: Annotated[
            float, typer.Option(help="share of new data held out when no --holdout")
        ] = 0.2,
        seed: Annotated[int, typer.Option(help="seed of the holdout split")] = 13,
        recipe_data: Annotated[
            bool, typer.Option(help="also train on the recipe's data (--no-recipe-data: new data only)")
        ] = True,
        data_root: Annotated[
            Path | None, typer.Option(help="resolve relative recipe data paths here")
        ] = None,
        set_: Annotated[
            list[str] | None, typer.Option("--set", help="override a recipe field, e.g. --set epochs=2")
        ] = None,
        keep_rejected: Annotated[
            bool, typer.Option(help="keep a refused candidate under candidates/")
        ] = False,
        variant: Annotated[
            str, typer.Option(help="model variant scored on the holdout: fp32 | int8")
        ] = "fp32",
        dry_run: Annotated[
            bool, typer.Option(help="prepare data and print the candidate recipe; train nothing")
        ] = False,
        adopt_dir: Annotated[
            bool,
            typer.Option(
                "--adopt", help="first move a plain bundle dir at --served to versions/<v> and link it"
            ),
        ] = False,
    ) -> None:
        """Retrain from the served bundle's recipe plus new labels; promote only if no head gets worse."""
        from training.data import DataError, parse_source

        try:
            if variant not in ("fp32", "int8"):
                raise RetrainError(f"--variant must be fp32 or int8, got {variant!r}")
            if corrections_topic and config is None:
                raise RetrainError("--corrections-topic needs --config (the Kafka settings)")
            if adopt_dir:
                adopt(served)
            specs = [parse_source(s) for s in data or []]
            held = [parse_source(s) for s in holdout or []]
            with tempfile.TemporaryDirectory(prefix="sentiwire-corrections-") as stage:
                if corrections_topic and config is not None:
                    specs += read_corrections(config, corrections_topic, Path(stage))
                opts = RetrainOptions(
                    served=served,
                    data=specs,
                    holdout=held,
                    tolerance=tolerance,
                    holdout_fraction=holdout_fraction,
                    seed=seed,
                    recipe_data=recipe_data,
                    data_root=data_root,
                    overrides=_parse_overrides(set_ or []),
                    keep_rejected=keep_rejected,
                    variant="int8" if variant == "int8" else "fp32",
                    dry_run=dry_run,
                )
                record = retrain(opts)
        except (RetrainError, DataError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        if dry_run:
            typer.echo(json.dumps(record, indent=2))
            return
        typer.echo(summary(record))
