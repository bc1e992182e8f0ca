"""The profile folding of bench.stages: each sample goes to its data-path step, idle and start-up apart."""

from __future__ import annotations

from bench.stages import IDLE, START_UP, fold, table

SERVE = 'process 12:"python -m sentiwire serve --config c.yaml"'
BENCH = 'process 11:"python -m bench.run --stages sentiwire-fp32"'


def _line(count: int, *frames: str, process: str = SERVE) -> str:
    return ";".join((BENCH, process, *frames)) + f" {count}"


def test_samples_go_to_the_innermost_step_of_the_serve_process() -> None:
    raw = [
        _line(7, "run (asyncio/runners.py:118)", "Classifier._run (streamer/model/classifier.py:210)",
              "OrtRuntime.run (streamer/model/runtime.py:80)"),
        _line(3, "run (asyncio/runners.py:118)", "Classifier.encode (streamer/model/classifier.py:170)",
              "encode (streamer/model/tokenizer.py:60)"),
        _line(2, "Scheduler._after_publish (streamer/scheduler.py:300)", "Monitor.features (streamer/drift.py:90)"),
        _line(4, "BaseEventLoop._run_once (asyncio/base_events.py:1900)", "EpollSelector.select (selectors.py:468)"),
        _line(5, "<module> (sentiwire/__main__.py:3)", "_call_with_frames_removed (<frozen importlib._bootstrap>:241)"),
        _line(9, "main (bench/run.py:250)", process='process 13:"python -m bench.peers naive"'),
        "garbage line",
    ]  # fmt: skip
    steps = fold(raw)
    assert steps == {
        "infer (runtime call)": 7,
        "tokenize": 3,
        "drift monitor": 2,  # inside the scheduler's call, but the drift monitor's cost
        IDLE: 4,
        START_UP: 5,
    }
    md = table(steps)
    assert "21 samples, 12 active" in md
    assert "| infer (runtime call) | 7 | 58.3% |" in md
    assert f"| {IDLE} | 4 |  |" in md
