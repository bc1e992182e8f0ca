"""Where `sentiwire serve` spends its time: a py-spy profile folded into the steps of the data path.

    py-spy record -s -r 100 -f raw -o serve.txt -- python -m bench.run --stages sentiwire-fp32 ...
    python -m bench.stages serve.txt

py-spy (not a project dependency: ``pip install py-spy``) samples every Python thread of every
process; this keeps the ``sentiwire serve`` process's stacks and names each sample by the first
step of the data path found from the innermost frame outwards. Samples waiting in epoll or in
the inference pool's queue are idle, start-up (imports, bundle load) is apart; shares are of
the rest. Inference threads run side by side, so shares are of thread time, not of CPU.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

START_UP = "(start-up: imports, bundle load)"
IDLE = "(idle: waiting in epoll or the pool queue)"
_START_UP_KEYS = ("importlib", "load_classifier", "sha256_file", "Classifier.__init__")
_IDLE_LEAVES = ("EpollSelector.select", "_worker (concurrent/futures/thread.py")
# (step, substrings of a frame) in the order they are tried on each frame, innermost frame first.
STEPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("drift monitor", ("streamer/drift.py", "streamer/driftwatch.py")),
    ("infer (runtime call)", ("onnxruntime", "openvino", "streamer/model/runtime.py")),
    ("tokenize", ("tokenizers", "streamer/model/tokenizer.py")),
    ("response cache", ("streamer/model/cache.py", "Classifier.cache_key")),
    ("decode input / encode labels", ("streamer/records.py", "orjson", "Classifier.to_predictions")),
    ("batching and scheduling", ("streamer/batching.py", "streamer/scheduler.py", "streamer/flow.py")),
    (
        "Kafka client (aiokafka, socket I/O)",
        ("aiokafka", "streamer/kafka/", "selector_events.py", "streams.py"),
    ),
    ("metrics", ("prometheus_client", "streamer/metrics.py")),
    ("logging", ("structlog",)),
    ("asyncio event loop", ("asyncio",)),
)


def step_of(frames: Sequence[str]) -> str:
    """The step one sample belongs to (``frames`` outermost first, as py-spy writes them)."""
    if any(k in f for f in frames for k in _START_UP_KEYS):
        return START_UP
    if frames and any(k in frames[-1] for k in _IDLE_LEAVES):
        return IDLE
    for frame in reversed(frames):
        for name, keys in STEPS:
            if any(k in frame for k in keys):
                return name
    return "other"


def fold(lines: Iterable[str], process: str = "sentiwire serve") -> Counter[str]:
    """Samples per step for the processes whose command line contains ``process``."""
    out: Counter[str] = Counter()
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        procs = [i for i, f in enumerate(frames) if f.startswith("process ")]
        if not procs or process not in frames[procs[-1]]:
            continue
        rest = frames[procs[-1] + 1 :]
        if rest and rest[0].startswith("thread "):
            rest = rest[1:]
        out[step_of(rest)] += int(count)
    return out


def table(steps: Counter[str]) -> str:
    active = sum(n for name, n in steps.items() if not name.startswith("("))
    lines = [
        f"{sum(steps.values())} samples, {active} active",
        "",
        "| step | samples | share of active |",
        "|---|---:|---:|",
    ]
    for name, n in steps.most_common():
        share = "" if name.startswith("(") or not active else f"{100 * n / active:.1f}%"
        lines.append(f"| {name} | {n} | {share} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.stages", description=__doc__.split("\n\n")[0])
    p.add_argument("raw", type=Path, help="py-spy record -f raw output")
    p.add_argument("--process", default="sentiwire serve", help="command-line substring of the process")
    args = p.parse_args(argv)
    steps = fold(args.raw.read_text(encoding="utf-8").splitlines(), args.process)
    if not steps:
        print(f"error: no samples of a process matching {args.process!r} in {args.raw}", file=sys.stderr)
        return 2
    print(table(steps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
