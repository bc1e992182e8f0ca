"""Fitting a run into ``max_train_minutes``: the LR schedule re-planned to end in time.

A slow (e.g. shared) machine then gets a complete warm-up/decay cycle and a final
evaluation instead of being cut off at peak learning rate. Re-planning uses the speed
measured since the previous re-plan, because a shared machine's load changes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

PLAN_AT_STEP = 15
EVAL_COST_PER_ROW = 1 / 3  # forward-only on a dev row vs. forward+backward on a train row


def fit_time_budget(
    step: int,
    total: int,
    loop_seconds: float,
    elapsed: float,
    budget: float,
    dev_rows: int,
    batch_size: int,
    eval_every: int,
) -> int:
    """Largest total step count whose remaining steps and evaluations fit the time budget.

    The LR schedule is then re-planned to end there, so a slow (e.g. shared) machine gets a
    complete warm-up/decay cycle instead of being cut off at peak learning rate.
    """
    per_step = loop_seconds / max(1, step)
    per_eval = dev_rows / max(1, batch_size) * per_step * EVAL_COST_PER_ROW
    remaining = budget - elapsed
    every = max(1, eval_every)

    def fit_for(end: int) -> int:
        # Evaluations a schedule ending at `end` still runs: periodic ones before it + the final one.
        evals_left = 1 + max(0, (end - 1) // every - step // every)
        return max(step + 1, min(total, step + int((remaining - evals_left * per_eval) / per_step)))

    # Fewer steps mean fewer evaluations, which frees time for steps: settle the two.
    fit, previous = fit_for(total), total
    for _ in range(10):
        if fit == previous:
            break
        fit, previous = fit_for(fit), fit
    return min(fit, previous)


@dataclass
class Schedule:
    """Linear warm-up, then linear decay to zero at ``total``; the loop runs ``total`` steps."""

    total: int
    warmup: int
    eval_every: int

    def factor(self, step: int) -> float:
        """The LR multiplier at ``step`` (``LambdaLR`` calls it)."""
        if step < self.warmup:
            return (step + 1) / max(1, self.warmup)
        return max(0.0, (self.total - step) / max(1, self.total - self.warmup))


class TimeBudget:
    """Shrinks ``schedule`` when the measured speed says the configured steps will not fit.

    ``minutes=None`` is no budget: :meth:`replan` and :meth:`out_of_time` never act.
    """

    def __init__(
        self,
        minutes: float | None,
        schedule: Schedule,
        *,
        warmup_ratio: float,
        dev_rows: int,
        batch_size: int,
        started: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.minutes = minutes
        self.schedule = schedule
        self.warmup_ratio = warmup_ratio
        self.dev_rows = dev_rows
        self.batch_size = batch_size
        self.started = started
        self.clock = clock
        self._configured = (schedule.total, schedule.warmup, schedule.eval_every)
        self._last_plan = (0, clock())

    def replan(self, step: int) -> str | None:
        """Re-plan at the planning steps; a message when the schedule's end moved, else None."""
        configured_total, configured_warmup, configured_eval_every = self._configured
        if self.minutes is None or not (
            step == PLAN_AT_STEP or (step > PLAN_AT_STEP and step % max(10, configured_total // 20) == 0)
        ):
            return None
        now = self.clock()
        recent = (now - self._last_plan[1]) / max(1, step - self._last_plan[0]) * step
        self._last_plan = (step, now)
        s = self.schedule
        fitted = fit_time_budget(
            step, configured_total, recent, now - self.started,
            self.minutes * 60, self.dev_rows, self.batch_size, s.eval_every,
        )  # fmt: skip
        if fitted == s.total:
            return None
        s.total = fitted
        s.warmup = min(configured_warmup, max(min(step, s.warmup), int(fitted * self.warmup_ratio)))
        s.eval_every = min(configured_eval_every, fitted)
        return f"time budget {self.minutes} min at {recent / step:.2f} s/step: schedule now ends at step {fitted}"

    def out_of_time(self) -> bool:
        return self.minutes is not None and self.clock() - self.started > self.minutes * 60
