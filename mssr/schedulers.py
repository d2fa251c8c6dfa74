"""Replay schedulers: when to replay. Registered by name in ``SCHEDULERS``.

A scheduler subclasses ``BaseScheduler`` and writes ``__init__(self, replay_cfg)`` and
``is_due(now, memory)``; the base class supplies every other hook of the protocol as a no-op
(or "no opinion"), and the planner calls each of them in step order, so a scheduler may keep
state (its plain attributes, JSON-friendly: ``state_dict``/``load_state_dict`` survive
restarts). Override what you need.

    sched = SCHEDULERS.get("adaptive")(cfg.replay)
    sched.on_task_start(task_index=1, now=48)
    if sched.is_due(now, memory): ...; sched.on_replay(now)

Signals a scheduler can use besides time and the memory state:

* ``on_step(now, train_loss)``: mean training loss of the step's new samples (free).
* ``probe(now, memory, rng)``: pool ids the workers should probe at this step, or None.
  A probe is one no-grad forward pass over those samples; it is the scheduler's own
  evaluation cost and is counted as such. ``on_probe(now, ids, losses, correct, memory)``
  receives, per probed sample, the loss and whether greedy decoding reproduces the answer
  (every answer token is the argmax given the answer's prefix, which is exactly when greedy
  generation would output it).
* ``focus_tasks()``: restrict the next replay draw to these tasks (None: the whole pool).
* ``pick(n, memory)``: the samples the due event replays, chosen by the scheduler itself from
  what it probed (MIR), or None to leave the choice to the sampler.
* ``on_budget(budget, samples_per_event, replay_steps)``: told once, before the first step,
  the replay budget (None: no cap), the samples per event and the number of steps after the
  first task (None when unknown), for a scheduler that paces its events.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from mssr.forgetting import forecast
from mssr.memory import MemoryState
from mssr.registry import Registry

SCHEDULERS = Registry("scheduler")
DEFAULT_FIXED_INTERVAL = 4.0  # replay.fixed.interval without a budget to derive it from


class BaseScheduler:
    """The scheduler protocol; every hook but ``is_due`` is a no-op here, and the state is the
    instance's plain (JSON-friendly) attributes."""

    reads_reference = False  # True: each finished task's pooled samples get a reference loss

    def is_due(self, now: float, memory: MemoryState) -> bool:
        raise NotImplementedError(f"{type(self).__name__}.is_due")

    def on_task_start(self, task_index: int, now: float) -> None:
        pass

    def on_replay(self, now: float) -> None:
        pass

    def pick(self, n: int, memory: MemoryState) -> Optional[np.ndarray]:
        return None

    def on_step(self, now: float, train_loss: float) -> None:
        pass

    def probe(self, now: float, memory: MemoryState, rng: np.random.Generator) -> Optional[np.ndarray]:
        return None

    def on_probe(
        self, now: float, ids: np.ndarray, losses: np.ndarray, correct: np.ndarray, memory: MemoryState
    ) -> None:
        pass

    def focus_tasks(self) -> Optional[list[int]]:
        return None

    def on_budget(self, budget: Optional[int], samples_per_event: int, replay_steps: Optional[int]) -> None:
        pass

    def state_dict(self) -> dict:
        return dict(vars(self))

    def load_state_dict(self, state: dict) -> None:
        vars(self).update(state)


@SCHEDULERS.register("never")
class NeverScheduler(BaseScheduler):
    """No replay: sequential fine-tuning, the lower bound."""

    def __init__(self, replay_cfg=None):
        pass

    def on_task_start(self, task_index: int, now: float) -> None:
        pass

    def is_due(self, now: float, memory: MemoryState) -> bool:
        return False

    def on_replay(self, now: float) -> None:
        pass


@SCHEDULERS.register("fixed")
class FixedIntervalScheduler(BaseScheduler):
    """Replay every ``replay.fixed.interval`` units of time, on one grid that starts at the
    first step with a non-empty pool and runs on across task boundaries. A fractional interval
    replays at the steps where the grid crosses them, so that on average it is exact (an
    interval derived from a budget spends that budget evenly, see ``mssr.replay``). If the
    clock jumps past several grid points at once (model time), it replays once and the grid
    restarts there, without a burst of catch-up events."""

    def __init__(self, replay_cfg):
        self.interval = float(replay_cfg.fixed.interval or DEFAULT_FIXED_INTERVAL)
        self.next_due: Optional[float] = None  # set at the first step with a non-empty pool

    def on_task_start(self, task_index: int, now: float) -> None:
        pass

    def is_due(self, now: float, memory: MemoryState) -> bool:
        if self.next_due is None:
            self.next_due = now + self.interval
        return now >= self.next_due

    def on_replay(self, now: float) -> None:
        self.next_due += self.interval
        if self.next_due <= now:
            self.next_due = now + self.interval


@SCHEDULERS.register("mir")
class LaggedMIRScheduler(FixedIntervalScheduler):
    """Maximally interfered retrieval (Aljundi et al. 2019, arXiv 1908.04742) in a lagged form,
    on the fixed schedule: an event replays the candidates whose loss the last update raised
    the most.

    MIR scores a random candidate set by the loss rise a virtual update on the incoming batch
    would cause, which costs an extra forward and backward pass per event. Here the rise is
    measured on a real update instead: two steps before each event of the grid a random set of
    ``replay.mir.candidates`` pool samples is probed (a no-grad pass), the step before the
    event the same set again; the difference is what that step's update did to each
    candidate. The event replays the ``samples_per_event`` candidates with the largest rise
    (``pick``); where the grid leaves no room for both probes (events one step apart, at an
    interval under two steps), the sampler draws instead. The planner asks for probes after the
    step's replay, so that the first probe may fall on the step of the event before (events two
    steps apart). The probes are this baseline's cost."""

    def __init__(self, replay_cfg):
        super().__init__(replay_cfg)
        self.candidates = replay_cfg.mir.candidates
        self.candidate_ids: list[int] = []
        self.before: list[float] = []  # the candidates' losses at the first probe
        self.rise: list[float] = []  # their rise at the second
        self.events_total: Optional[int] = None  # no probes once the budget is spent (None: no budget)
        self.events_done = 0

    def on_budget(self, budget: Optional[int], samples_per_event: int, replay_steps: Optional[int]) -> None:
        self.events_total = None if budget is None else -(-budget // samples_per_event)

    def on_replay(self, now: float) -> None:
        super().on_replay(now)
        self.events_done += 1

    def probe(self, now: float, memory: MemoryState, rng: np.random.Generator) -> Optional[np.ndarray]:
        spent = self.events_total is not None and self.events_done >= self.events_total
        if self.next_due is None or len(memory) == 0 or spent:
            return None
        until = self.next_due - now
        if 1.0 < until <= 2.0:  # two steps before the event: a new candidate set
            n = min(self.candidates, len(memory))
            self.candidate_ids = [int(i) for i in np.sort(rng.choice(memory.ids, size=n, replace=False))]
            self.before, self.rise = [], []
            return np.asarray(self.candidate_ids, dtype=np.int64)
        if 0.0 < until <= 1.0 and self.before:  # the step before: the same set after one update
            return np.asarray(self.candidate_ids, dtype=np.int64)
        return None

    def on_probe(self, now, ids, losses, correct, memory) -> None:
        by_id = dict(zip(np.asarray(ids).tolist(), np.asarray(losses, dtype=float).tolist()))
        losses_now = [by_id[i] for i in self.candidate_ids]
        if not self.before:
            self.before = losses_now
        else:
            self.rise = [after - before for after, before in zip(losses_now, self.before)]

    def pick(self, n: int, memory: MemoryState) -> Optional[np.ndarray]:
        """The ``n`` candidates whose loss the measured update raised most (None: not measured)."""
        if not self.rise:
            return None
        order = np.argsort(-np.asarray(self.rise), kind="stable")[:n]
        picked = np.sort(np.asarray(self.candidate_ids, dtype=np.int64)[order])
        self.candidate_ids, self.before, self.rise = [], [], []
        return picked


@SCHEDULERS.register("adaptive")
class AdaptiveScheduler(BaseScheduler):
    """MSSR's expanding schedule: interval I0 after a task switch, I <- min(I_max, g*I) after
    each replay; replay early when the pool's mean retention falls below rho, but never
    sooner than I0 steps after the last replay (else a weak pool would replay every step)."""

    def __init__(self, replay_cfg):
        p = replay_cfg.mssr
        self.i0, self.growth, self.i_max, self.rho = p.initial_interval, p.growth, p.max_interval, p.retention_threshold
        self.interval = float(self.i0)
        self.next_due = float(self.i0)
        self.last_replay = float("-inf")

    def on_task_start(self, task_index: int, now: float) -> None:
        self.interval = float(self.i0)
        self.next_due = now + self.interval

    def is_due(self, now: float, memory: MemoryState) -> bool:
        if now >= self.next_due:
            return True
        return now - self.last_replay >= self.i0 and memory.mean_retention(now) < self.rho

    def on_replay(self, now: float) -> None:
        self.interval = min(float(self.i_max), self.growth * self.interval)
        self.next_due = now + self.interval
        self.last_replay = float(now)


PACE_LEAD = 1  # events the paced schedule may run ahead of an even spend: room to follow forgetting, not to drain it


@SCHEDULERS.register("paced")
class PacedScheduler(BaseScheduler):
    """MSSR's schedule paced over the stream: the replay rate follows the memory model's
    predicted forgetting, and the budget is spent by the end of the stream.

    At each step with a pool, the pool's predicted forgotten fraction p = 1 - mean R is
    compared with its mean so far, p_bar; the step earns ``rate = (events left / steps left)
    * p / p_bar`` (at most one) of an event, and an event is due once a whole one is earned.
    Replay therefore comes when forgetting runs above its usual level (late in a task, as
    interference from the new task accumulates) and less when the pool is fresh, while the
    events left are always spread over the steps left: the budget is neither exhausted early
    nor left unspent. Events total ``ceil(budget / samples_per_event)``; without a budget, about
    one every ``DEFAULT_FIXED_INTERVAL`` steps (never more than ``PACE_LEAD`` ahead of that
    rate). Steps are counted, not clock time, so the pacing holds with any replay clock.

    Over a stream the pool ages, so p trends upwards and p / p_bar sits above one for most of
    it: unchecked, the rate runs ahead early and the last task, whose replay decides the final
    scores, is left with little. So the events done never run more than ``PACE_LEAD`` ahead of
    an even spend (``events_total * steps_seen / replay_steps``): forgetting decides when
    within that allowance replay comes, and can defer events, which the base rate then spreads
    over the steps left.

    Nor does the rate fall below ``replay.mssr.pace_floor`` times the base rate: a signal that
    only replays can measure (the excess loss of ``paced-excess``) would otherwise stop the
    schedule for good once it predicted no forgetting, and with it the replays that would show
    the forgetting coming back. And once the events left are as many as the steps left, every
    step replays: events deferred late in the stream would otherwise be lost (a step earns at
    most one), and a comparison at equal budget would not be one."""

    def __init__(self, replay_cfg):
        self.pace_floor = replay_cfg.mssr.pace_floor
        self.events_total: Optional[int] = None
        self.replay_steps: Optional[int] = None
        self.steps_seen = 0  # steps with a pool so far
        self.events_done = 0
        self.credit = 0.0
        self.p_sum = 0.0  # the signal summed over the steps that had one
        self.p_steps = 0

    def on_budget(self, budget: Optional[int], samples_per_event: int, replay_steps: Optional[int]) -> None:
        self.events_total = None if budget is None else -(-budget // samples_per_event)
        self.replay_steps = replay_steps

    def on_task_start(self, task_index: int, now: float) -> None:
        pass

    def _left(self) -> Optional[tuple[int, int]]:
        """(events left, steps left, this one included); None without a budget."""
        if self.events_total is None or self.replay_steps is None:
            return None
        return self.events_total - self.events_done, self.replay_steps - self.steps_seen + 1

    def _base_rate(self) -> float:
        """Events per step if forgetting ran at its usual level for the rest of the stream."""
        if (left := self._left()) is None:
            return 1.0 / DEFAULT_FIXED_INTERVAL
        events, steps = left
        return events / max(1, steps)

    def signal(self, now: float, memory: MemoryState) -> Optional[float]:
        """The pool's predicted forgetting now: 1 - mean retention (None: no prediction yet)."""
        return 1.0 - memory.mean_retention(now)

    def is_due(self, now: float, memory: MemoryState) -> bool:
        self.steps_seen += 1
        p = self.signal(now, memory)
        ratio = 1.0  # no signal yet, or none so far: the base rate
        if p is not None:
            self.p_sum += p
            self.p_steps += 1
            p_bar = self.p_sum / self.p_steps
            ratio = max(self.pace_floor, p / p_bar) if p_bar > 0 else 1.0
        self.credit += min(1.0, self._base_rate() * ratio)
        if self._must_replay_every_step():
            return True
        if self.credit < 1.0 - 1e-9:
            return False
        if self.events_done + 1 > self._allowance():  # would run ahead of an even spend: wait, without banking more
            self.credit = 1.0
            return False
        return True

    def _must_replay_every_step(self) -> bool:
        """Whether only an event at this step and every one after spends the budget."""
        if (left := self._left()) is None:
            return False
        events, steps = left
        return events > 0 and events >= steps

    def _allowance(self) -> float:
        """The events an even spend would have done by this step (of the budget, or at the default
        rate without one), plus ``PACE_LEAD``."""
        if self.events_total is None or self.replay_steps is None:
            return self.steps_seen / DEFAULT_FIXED_INTERVAL + PACE_LEAD
        return self.events_total * self.steps_seen / max(1, self.replay_steps) + PACE_LEAD

    def on_replay(self, now: float) -> None:
        self.credit = max(0.0, self.credit - 1.0)
        self.events_done += 1

    def load_state_dict(self, state: dict) -> None:
        # saved before steps without a signal existed: every step seen had one
        vars(self).update({"p_steps": state.get("steps_seen", 0), **state})


@SCHEDULERS.register("paced-excess")
class ExcessPacedScheduler(PacedScheduler):
    """The paced schedule following the forgetting model's predicted excess loss, the mean over
    the pool's tasks (``mssr.forgetting.forecast``; ``replay.mssr.forgetting_model``), instead
    of the memory model's 1 - R. Replay comes when predicted forgetting runs above its mean so
    far, within ``PACE_LEAD`` events of an even spend of the budget."""

    reads_reference = True

    def __init__(self, replay_cfg):
        super().__init__(replay_cfg)
        self.model = replay_cfg.mssr.forgetting_model

    def signal(self, now: float, memory: MemoryState) -> Optional[float]:
        """The mean predicted excess over the pool's tasks, each clipped at zero; None before any
        replay observed one (a model fitted to nothing predicts nothing, and zeros would drag the
        mean so far down that the first observation looked like a burst of forgetting)."""
        if memory.obs_step.size == 0:
            return None
        predicted = forecast(self.model, memory, now)
        # a task predicted below its reference (later tasks helped it) has forgotten nothing; it
        # must not cancel another task's forgetting (the sampler clips the same way)
        return float(np.mean(np.maximum(list(predicted.values()), 0.0))) if predicted else None

    def state_dict(self) -> dict:
        return {k: v for k, v in vars(self).items() if k != "model"}


@SCHEDULERS.register("loss")
class LossTriggerScheduler(BaseScheduler):
    """Replay when a loss exceeds its running mean + z * std over the last ``window`` values.

    ``replay.loss.signal``: ``train`` watches the training loss of the new samples (free, and
    noisy by design: a hard batch looks like forgetting); ``probe`` watches the mean loss of a
    fixed probe of ``probe_size`` pool samples, measured every ``probe_every`` steps (drawn
    again at each task start), which costs one forward pass per probe.
    """

    def __init__(self, replay_cfg):
        p = replay_cfg.loss
        self.signal, self.z, self.window, self.min_history = p.signal, p.z, p.window, p.min_history
        self.probe_every, self.probe_size = p.probe_every, p.probe_size
        self.history: list[float] = []
        self.triggered = False
        self.probe_ids: list[int] = []
        self.next_probe = 0.0

    def _push(self, value: float) -> None:
        if len(self.history) >= self.min_history:
            h = np.asarray(self.history)
            if value > h.mean() + self.z * h.std():
                self.triggered = True
        self.history = (self.history + [float(value)])[-self.window :]

    def on_task_start(self, task_index: int, now: float) -> None:
        if self.signal == "probe":  # a new probe set: its loss level is not comparable with the old one
            self.history, self.probe_ids, self.next_probe = [], [], float(now)

    def on_step(self, now: float, train_loss: float) -> None:
        if self.signal == "train":
            self._push(train_loss)

    def probe(self, now: float, memory: MemoryState, rng: np.random.Generator) -> Optional[np.ndarray]:
        if self.signal != "probe" or now < self.next_probe or len(memory) == 0:
            return None
        self.next_probe = now + self.probe_every
        if not self.probe_ids:
            n = min(self.probe_size, len(memory))
            self.probe_ids = [int(i) for i in np.sort(rng.choice(memory.ids, size=n, replace=False))]
        return np.asarray(self.probe_ids, dtype=np.int64)

    def on_probe(self, now, ids, losses, correct, memory) -> None:
        self._push(float(np.mean(losses)))

    def is_due(self, now: float, memory: MemoryState) -> bool:
        return self.triggered

    def on_replay(self, now: float) -> None:
        self.triggered = False


@SCHEDULERS.register("accuracy")
class AccuracyTriggerScheduler(BaseScheduler):
    """Every ``replay.accuracy.every`` steps, probe the accuracy of each past task on a fixed
    slice of ``probe_per_task`` of its pool samples; a task whose accuracy fell more than
    ``delta`` below its accuracy right after it was learned (the first probe after its task
    ended) is replayed, ``events`` replay events drawn from the dropped tasks only. The probes
    are this baseline's cost: one forward pass over every past task's slice each time.
    """

    def __init__(self, replay_cfg):
        p = replay_cfg.accuracy
        self.every, self.per_task, self.delta, self.events = p.every, p.probe_per_task, p.delta, p.events
        self.probe_sets: list[list[int]] = []  # [task, id, id, ...] per probed task (JSON-friendly)
        self.baseline: list[list[float]] = []  # [task, accuracy right after the task]
        self.focus: list[int] = []
        self.pending = 0
        self.next_probe = 0.0

    def on_task_start(self, task_index: int, now: float) -> None:
        self.next_probe = float(now)  # probe at once: the baseline of the task just learned

    def probe(self, now: float, memory: MemoryState, rng: np.random.Generator) -> Optional[np.ndarray]:
        if now < self.next_probe or len(memory) == 0:
            return None
        self.next_probe = now + self.every
        known = {s[0] for s in self.probe_sets}
        for task in np.unique(memory.task):
            if int(task) not in known:
                ids = memory.ids[memory.task == task]
                pick = np.sort(rng.choice(ids, size=min(self.per_task, ids.size), replace=False))
                self.probe_sets.append([int(task)] + [int(i) for i in pick])
        return np.asarray([i for s in self.probe_sets for i in s[1:]], dtype=np.int64)

    def on_probe(self, now, ids, losses, correct, memory) -> None:
        tasks = memory.task[memory.positions(ids)]
        correct = np.asarray(correct, dtype=float)
        baseline = {int(t): a for t, a in self.baseline}
        dropped = []
        for t in np.unique(tasks):
            acc = float(correct[tasks == t].mean())
            if int(t) not in baseline:
                baseline[int(t)] = acc
                self.baseline.append([int(t), acc])
            elif baseline[int(t)] - acc > self.delta:
                dropped.append(int(t))
        self.focus = dropped
        self.pending = self.events if dropped else 0

    def is_due(self, now: float, memory: MemoryState) -> bool:
        return self.pending > 0

    def on_replay(self, now: float) -> None:
        self.pending -= 1

    def focus_tasks(self) -> Optional[list[int]]:
        return self.focus or None
