"""Online models of forgetting, fitted to what replays observe.

Every replay shows, for free, the loss of the samples it trains on: their **excess loss**
``x = loss - reference`` (the reference being the level the task was learned to when it
ended) says how much of the task has been forgotten since. A forgetting model predicts a task's
current excess from its past observations, before the replay observes it; the better it
ranks the tasks, the better a sampler can spend replay where forgetting is.

Every model here is fitted online, from the observations made so far only, and answers
``predict`` before it is shown the observation (``observe``): run over a kept replay log in
step order, that is a prequential test (``benchmarks/forgetting_gate.py``), the gate a model
must pass before it drives any sampler.

    model = RehearsalModel()
    guess = model.predict(task=3, step=120.0, entry_step=64.0)   # before the replay
    model.observe(task=3, step=120.0, entry_step=64.0, excess=0.41)

The models (all share ``ForgettingModel``'s two methods):

* ``LastExcess``: the task's last observed excess (a task not yet observed: the mean of
  every observation so far). The naive baseline.
* ``MeanExcess``: the mean of the task's observations, shrunk towards the mean over all tasks
  while the task has few: how much the task tends to be found forgotten.
* ``TaskAge``: the steps since the task ended, times the mean excess per step of age seen so
  far: forgetting grows with age alone.
* ``RehearsalModel``: ``x(t) = keep * x_last + rate_k * (t - t_last)``: what the last replay
  left of the last observed excess, plus forgetting at the task's own rate since. ``keep`` and
  each task's rate are fitted by least squares over consecutive observations of the same
  task (a task's first observation follows its end, where the excess is 0), each task's rate
  shrunk towards the pooled one while the task has few observations. With ``power`` below 1 the
  time term is ``(t - t_last) ** power``, the shifted power law in steps that forgetting in
  fine-tuning has been reported to follow (Kalajdzievski 2024, arXiv 2401.05605).

Registered by name in ``FORGETTING_MODELS`` (``replay.mssr.forgetting_model``); a user's model
is any class with the two methods, by import path. ``forecast`` fits one to a memory state's
excess observations and predicts every pooled task's excess now: what MSSR's sampler and
scheduler read.

No Ray, no torch: plain numpy over a handful of numbers per observation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from mssr.registry import Registry

FORGETTING_MODELS = Registry("forgetting model")


class ForgettingModel(Protocol):
    def predict(self, task: int, step: float, entry_step: float) -> float:
        """The task's excess loss at ``step`` (its training ended at ``entry_step``)."""
        ...

    def observe(self, task: int, step: float, entry_step: float, excess: float) -> None:
        """What a replay of the task at ``step`` showed (its replayed samples' mean excess)."""
        ...


@FORGETTING_MODELS.register("last-excess")
@dataclass
class LastExcess:
    """The task's last observed excess; the mean of all observations for a task not yet seen."""

    last: dict[int, float] = field(default_factory=dict)
    seen: list[float] = field(default_factory=list)

    def predict(self, task: int, step: float, entry_step: float) -> float:
        if task in self.last:
            return self.last[task]
        return float(np.mean(self.seen)) if self.seen else 0.0

    def observe(self, task: int, step: float, entry_step: float, excess: float) -> None:
        self.last[task] = excess
        self.seen.append(excess)


@FORGETTING_MODELS.register("mean-excess")
@dataclass
class MeanExcess:
    """The mean of the task's observed excesses, shrunk towards the mean over every task as if
    that were ``prior_weight`` more observations of it: how much the task tends to be found
    forgotten, robust to single observations (a replayed sample is often either intact or off
    by nats)."""

    prior_weight: float = 2.0
    sums: dict[int, float] = field(default_factory=dict)
    counts: dict[int, int] = field(default_factory=dict)

    def predict(self, task: int, step: float, entry_step: float) -> float:
        n = sum(self.counts.values())
        pooled = sum(self.sums.values()) / n if n else 0.0
        return (self.sums.get(task, 0.0) + self.prior_weight * pooled) / (self.counts.get(task, 0) + self.prior_weight)

    def observe(self, task: int, step: float, entry_step: float, excess: float) -> None:
        self.sums[task] = self.sums.get(task, 0.0) + excess
        self.counts[task] = self.counts.get(task, 0) + 1


@FORGETTING_MODELS.register("task-age")
@dataclass
class TaskAge:
    """Steps since the task ended, times the mean excess per step of age observed so far."""

    per_step: list[float] = field(default_factory=list)

    def predict(self, task: int, step: float, entry_step: float) -> float:
        scale = float(np.mean(self.per_step)) if self.per_step else 1.0
        return scale * max(step - entry_step, 0.0)

    def observe(self, task: int, step: float, entry_step: float, excess: float) -> None:
        age = step - entry_step
        if age > 0:
            self.per_step.append(excess / age)


@FORGETTING_MODELS.register("rehearsal")
@dataclass
class RehearsalModel:
    """``x(t) = keep * x_last + rate_k * (t - t_last) ** power``, fitted online (module docstring).

    ``prior_weight``: observations of a task at which its own rate counts as much as the
    pooled one (shrinkage for tasks seen a few times); ``power``: 1 for forgetting linear in
    steps, below 1 for a power law."""

    power: float = 1.0
    prior_weight: float = 3.0
    state: dict[int, tuple[float, float]] = field(default_factory=dict)  # task -> (t_last, x_last)
    rows: list[tuple[int, float, float, float]] = field(default_factory=list)  # (task, x_prev, dt^p, x)
    fitted: tuple | None = field(default=None, repr=False)  # _fit's answer until the next observation

    def _time(self, dt: float) -> float:
        return max(dt, 0.0) ** self.power

    def _previous(self, task: int, entry_step: float) -> tuple[float, float]:
        return self.state.get(task, (entry_step, 0.0))  # a task ends at its learned level

    def _fit(self) -> tuple[float, dict[int, float], float]:
        """(keep, each task's rate, the pooled rate) by least squares over every consecutive
        pair so far, alternating between ``keep`` given the rates and the rates given ``keep``;
        a task's rate is shrunk towards the pooled one as if the pooled rate were
        ``prior_weight`` more observations of it."""
        if not self.rows:
            return 0.5, {}, 0.0
        rows = np.array(self.rows, dtype=np.float64)
        tasks, at = np.unique(rows[:, 0].astype(np.int64), return_inverse=True)  # at: each row's task index
        prev, time, x = rows[:, 1], rows[:, 2], rows[:, 3]
        weight = self.prior_weight * float(np.mean(time * time))
        time_sq = np.bincount(at, weights=time * time, minlength=tasks.size)  # one sum per task: O(rows)
        keep, rate, pooled = 0.5, np.zeros(tasks.size), 0.0
        for _ in range(10):
            y = x - keep * prev
            pooled = float((time * y).sum() / max((time * time).sum(), 1e-12))
            rate = (np.bincount(at, weights=time * y, minlength=tasks.size) + weight * pooled) / np.maximum(
                time_sq + weight, 1e-12
            )
            if (prev * prev).sum() > 0:
                rest = x - rate[at] * time
                keep = float(np.clip((prev * rest).sum() / (prev * prev).sum(), 0.0, 1.0))
        rates = {int(k): float(r) for k, r in zip(tasks, rate)}
        return keep, rates, pooled

    def predict(self, task: int, step: float, entry_step: float) -> float:
        if self.fitted is None:
            self.fitted = self._fit()
        keep, rates, pooled = self.fitted
        t_last, x_last = self._previous(task, entry_step)
        return keep * x_last + rates.get(task, pooled) * self._time(step - t_last)

    def observe(self, task: int, step: float, entry_step: float, excess: float) -> None:
        t_last, x_last = self._previous(task, entry_step)
        self.rows.append((task, x_last, self._time(step - t_last), excess))
        self.state[task] = (step, excess)
        self.fitted = None


@FORGETTING_MODELS.register("rehearsal-sqrt")
def rehearsal_sqrt() -> RehearsalModel:
    """The rehearsal model with forgetting growing as the square root of the time since."""
    return RehearsalModel(power=0.5)


def forecast(name: str, memory, now: float) -> dict[int, float]:
    """Every pooled task's predicted excess loss at ``now``, by the forgetting model ``name``
    fitted to ``memory``'s excess observations (``MemoryState.history``), oldest first."""
    model = FORGETTING_MODELS.get(name)()
    for step, task, end, excess in memory.history():
        model.observe(task, step, end, excess)
    return {task: model.predict(task, now, memory.task_end(task)) for task in memory.pooled_tasks()}


def replay_observations(log: list[dict]) -> list[dict]:
    """A run's replay log (``ReplayRecord`` dicts) as observations, in step order: per replay
    event and task replayed, its ``step``, ``task``, ``entry`` (when the task ended: its first
    replayed sample's last training), ``excess`` (the mean of loss less reference over its
    replayed samples, each against its own reference loss, or its task's learned level where
    the run measured none) and ``forgotten`` (the mean 1 - R the strength model predicted)."""
    entry: dict[int, float] = {}
    groups: dict[tuple, list[dict]] = {}
    for r in log:
        entry[r["task"]] = min(entry.get(r["task"], np.inf), r["step"] - r["age"])
        groups.setdefault((r["step"], r["task"]), []).append(r)

    def level(r: dict) -> float:
        ref = r.get("reference_loss")
        return ref if ref is not None and np.isfinite(ref) else r["entry_loss"]

    return [
        {
            "step": step,
            "task": task,
            "entry": entry[task],
            "excess": float(np.mean([r["loss"] - level(r) for r in rows])),
            "forgotten": float(np.mean([1 - r["predicted_retention"] for r in rows])),
        }
        for (step, task), rows in sorted(groups.items())
    ]


def prequential(name: str, observations: list[dict]) -> tuple[np.ndarray, ForgettingModel]:
    """The forgetting model ``name``'s prediction of every observation from the earlier ones
    only (predicted, then shown it), and the model after the last."""
    model, predicted = FORGETTING_MODELS.get(name)(), []
    for o in observations:
        predicted.append(model.predict(o["task"], o["step"], o["entry"]))
        model.observe(o["task"], o["step"], o["entry"], o["excess"])
    return np.array(predicted), model
