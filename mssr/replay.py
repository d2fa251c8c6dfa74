"""The replay planner: memory state + strategy + clock + budget -> one plan per step.

It is the single source of replay decisions. The planner consumes each step's
observations from all ranks at once, in rank order, so the same seed gives the same plan
sequence whatever the timing of the workers. It also runs the storage policy that picks which
samples of the current task join the pool at the task's end: a reservoir (a uniform sample),
or SuRe's highest-loss samples (``replay.storage``). Time is the replay clock's
(``mssr.clock``): optimizer steps by default.

    planner = ReplayPlanner(cfg.replay, seed=0)
    planner.start_task(0)
    plan = planner.plan()        # ReplayPlan(replay=[], probe=[]): nothing to replay yet
    planner.observe_step([StepObservation(new_ids=..., new_losses=...)])  # one per rank
    pool_ids = planner.end_task(0)   # reservoir sample of task 0 joins the pool
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from mssr.clock import build_clock
from mssr.diagnostics import ReplayRecord
from mssr.memory import MemoryState
from mssr.strategies import build_strategy


def resolve_budget(budget: int | float | None, total_new_samples: int | None) -> int | None:
    """Replayed-sample cap: an int as is, a float < 1 as a ratio of new samples, None for no cap."""
    if budget is None:
        return None
    if isinstance(budget, float) and budget < 1:
        if total_new_samples is None:
            raise ValueError("a budget ratio needs the number of new samples")
        return int(budget * total_new_samples)
    return int(budget)


def reference_subset(pool_ids: Sequence[int], n: int, seed: int, task: int) -> list[int]:
    """The ``n`` of a task's pool samples that get their own reference loss: a random choice
    seeded by the run's seed and the task (its own generator, so the plans do not depend on
    whether the reference pass runs), in id order."""
    ids = np.sort(np.asarray(pool_ids, dtype=np.int64))
    if ids.size <= n:
        return ids.tolist()
    return np.sort(np.random.default_rng([seed, task]).choice(ids, size=n, replace=False)).tolist()


def derived_fixed_interval(budget: int | None, samples_per_event: int, replay_steps: int | None) -> float | None:
    """The fixed-interval schedule that spends ``budget`` replayed samples evenly over the
    ``replay_steps`` steps that have a pool to replay from (every step after the first task):
    E = ceil(budget / samples_per_event) events at intervals of replay_steps / (E + 1), so the
    grid's E points all fall inside those steps; never below one step. None when there is no
    budget or no step count to derive it from."""
    if budget is None or not replay_steps:
        return None
    events = math.ceil(budget / samples_per_event)
    return max(1.0, replay_steps / (events + 1))


def with_fixed_interval(replay_cfg, budget: int | None, replay_steps: int | None):
    """``replay_cfg`` with ``fixed.interval`` resolved: as configured, or derived from the
    budget (``derived_fixed_interval``), or the scheduler's default when neither is known."""
    if replay_cfg.fixed.interval is not None:
        return replay_cfg
    interval = derived_fixed_interval(budget, replay_cfg.samples_per_event, replay_steps)
    if interval is None:
        return replay_cfg
    return replay_cfg.model_copy(update={"fixed": replay_cfg.fixed.model_copy(update={"interval": interval})})


class Reservoir:
    """Algorithm R over a stream of (id, loss): a uniform sample of fixed size, vectorised
    over each offered batch (one random draw per sample past the first ``size``, no Python
    loop over the samples)."""

    def __init__(self, size: int, rng: np.random.Generator):
        self.size = size
        self.rng = rng
        self.ids = np.zeros(0, dtype=np.int64)
        self.losses = np.zeros(0, dtype=np.float64)
        self.seen = 0

    @property
    def last_loss(self) -> dict[int, float]:
        return dict(zip(self.ids.tolist(), self.losses.tolist()))

    def offer(self, ids, losses) -> None:
        """Offer samples in stream order; a kept sample seen again (a later epoch) only
        refreshes its loss."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        losses = np.asarray(losses, dtype=np.float64).reshape(-1)
        again = np.isin(ids, self.ids)
        if again.any():
            order = np.argsort(self.ids)
            self.losses[order[np.searchsorted(self.ids[order], ids[again])]] = losses[again]
            ids, losses = ids[~again], losses[~again]
        room = min(self.size - self.ids.size, ids.size)  # the reservoir fills up first
        self.ids = np.concatenate([self.ids, ids[:room]])
        self.losses = np.concatenate([self.losses, losses[:room]])
        rest = ids.size - room
        if rest:  # the s-th sample of the stream replaces slot j ~ U[0, s) when j < size
            slots = self.rng.integers(self.seen + room + 1 + np.arange(rest))
            for k in np.flatnonzero(slots < self.size).tolist():  # few: a fraction size/s of them
                self.ids[slots[k]], self.losses[slots[k]] = ids[room + k], losses[room + k]
        self.seen += ids.size

    def state_dict(self) -> dict:
        return {"size": self.size, "ids": self.ids.tolist(), "seen": self.seen, "last_loss": self.last_loss}

    def load_state_dict(self, s: dict) -> None:
        self.size, self.seen = s["size"], s["seen"]
        self.ids = np.asarray(s["ids"], dtype=np.int64)
        self.losses = np.asarray(
            [float(s["last_loss"].get(i, s["last_loss"].get(str(i), 0.0))) for i in s["ids"]], dtype=np.float64
        )


class SurpriseStore(Reservoir):
    """SuRe's buffer (arXiv 2511.22367): of a task's samples, keep the ``size`` with the highest
    loss in their training step (the most surprising when seen), not a uniform sample. A kept
    sample seen again (a later epoch) takes its new loss; the rest compete on theirs. Same
    interface as ``Reservoir``; no randomness."""

    def offer(self, ids, losses) -> None:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        losses = np.asarray(losses, dtype=np.float64).reshape(-1)
        merged = dict(zip(self.ids.tolist(), self.losses.tolist()))
        merged.update(zip(ids.tolist(), losses.tolist()))
        keys, values = np.array(list(merged), dtype=np.int64), np.array(list(merged.values()), dtype=np.float64)
        keep = np.lexsort((keys, -values))[: self.size]  # highest loss first, ties by id
        self.ids, self.losses = keys[keep], values[keep]
        self.seen += ids.size


STORAGES = {"reservoir": Reservoir, "surprise": SurpriseStore}


@dataclass(frozen=True)
class ReplayPlan:
    """One step's plan, the same for every rank: pool ids to replay and pool ids to probe.
    Rank r of ``world`` takes ``ids[r::world]`` of each (``share``)."""

    replay: list[int] = field(default_factory=list)
    probe: list[int] = field(default_factory=list)

    def share(self, rank: int, world: int) -> tuple[list[int], list[int]]:
        """This rank's replay ids and probe ids."""
        return self.replay[rank::world], self.probe[rank::world]

    def to_json(self) -> dict[str, list[int]]:
        return {"replay": list(self.replay), "probe": list(self.probe)}


@dataclass
class StepObservation:
    """What one rank saw at one step: losses of its new and replayed samples, its share of
    the step's probe, and (rank 0, when the clock needs it) the norm of the step's update."""

    new_ids: Sequence[int]
    new_losses: Sequence[float]
    replay_ids: Sequence[int] = ()
    replay_losses: Sequence[float] = ()
    probe_ids: Sequence[int] = ()
    probe_losses: Sequence[float] = ()
    probe_correct: Sequence[bool] = ()
    update_norm: float = 0.0


class ReplayPlanner:
    """``total_new_samples`` resolves a budget given as a ratio; ``replay_steps`` (the steps
    after the first task) derives ``fixed.interval`` from the budget when it is null."""

    def __init__(self, replay_cfg, seed: int, total_new_samples: int | None = None, replay_steps: int | None = None):
        self.budget = resolve_budget(replay_cfg.budget, total_new_samples)
        self.cfg = replay_cfg = with_fixed_interval(replay_cfg, self.budget, replay_steps)
        self.strategy = build_strategy(replay_cfg.strategy, replay_cfg)
        self.replay_steps = replay_steps
        self._tell_budget()
        self.memory = MemoryState(replay_cfg.mssr)
        self.clock = build_clock(replay_cfg)
        self.rng = np.random.default_rng(seed)
        self.storage = STORAGES[self.strategy.storage]
        self.reservoir = self.storage(replay_cfg.pool_per_task, self.rng)
        self.replayed = 0
        self.events = 0
        self.probed = 0
        self.task_index = -1
        self.task_losses: list[float] = []  # mean new-sample loss of each step of the current task
        self.replay_log: list[ReplayRecord] = []  # every replayed sample, as the memory model saw it

    def _tell_budget(self) -> None:
        """The scheduler learns this run's budget and steps."""
        self.strategy.scheduler.on_budget(self.budget, self.cfg.samples_per_event, self.replay_steps)

    @property
    def now(self) -> float:
        return self.clock.time

    def start_task(self, task_index: int) -> None:
        self.task_index = task_index
        self.task_losses = []
        self.reservoir = self.storage(self.cfg.pool_per_task, self.rng)
        self.strategy.scheduler.on_task_start(task_index, self.now)

    def plan(self) -> ReplayPlan:
        """This step's plan: pool ids to replay, and pool ids to probe (both may be empty). The
        replay is decided first: a probe chosen at an event's step measures for the next event
        (lagged MIR's first probe can fall on the step of the event before)."""
        if len(self.memory) == 0:
            return ReplayPlan()
        replay = self._replay_ids()
        probe_ids = self.strategy.scheduler.probe(self.now, self.memory, self.rng)
        probe_ids = [] if probe_ids is None else [int(i) for i in probe_ids]
        self.probed += len(probe_ids)
        return ReplayPlan(replay=replay, probe=probe_ids)

    def _replay_ids(self) -> list[int]:
        scheduler = self.strategy.scheduler
        if not scheduler.is_due(self.now, self.memory):
            return []
        n = self.cfg.samples_per_event
        if self.budget is not None:
            n = min(n, self.budget - self.replayed)
        if n <= 0:
            return []
        picked = scheduler.pick(n, self.memory)
        if picked is not None:
            ids = np.asarray(picked, dtype=np.int64)[:n]
        else:
            focus = scheduler.focus_tasks()
            candidates = self.memory if not focus else self.memory.of_tasks(focus)
            if len(candidates) == 0:
                return []
            ids = self.strategy.sampler.sample(candidates, self.now, n, self.rng)
        scheduler.on_replay(self.now)
        self.replayed += len(ids)
        self.events += 1
        return [int(i) for i in ids]

    def observe_step(self, observations: Sequence[StepObservation]) -> None:
        """Every rank's observations of one step, in rank order; then the clock ticks."""
        now = self.now

        def joined(field: str, dtype) -> np.ndarray:  # one array over the ranks, in rank order
            return np.concatenate(
                [np.asarray(getattr(o, field), dtype=dtype).reshape(-1) for o in observations]
                or [np.zeros(0, dtype=dtype)]
            )

        # every rank's rows in one numpy call per step; the new samples are offered to the
        # reservoir in order of their ids, so the pool does not depend on how the step's batch
        # was split over the ranks
        new_ids, new_losses = joined("new_ids", np.int64), joined("new_losses", np.float64)
        order = np.argsort(new_ids, kind="stable")
        self.reservoir.offer(new_ids[order], new_losses[order])
        replay_ids = joined("replay_ids", np.int64)
        if replay_ids.size:
            replay_losses = joined("replay_losses", np.float64)
            self._record_replays(replay_ids, replay_losses, now)
            self.memory.update(replay_ids, replay_losses, now)
            self.strategy.sampler.on_replayed(now, replay_ids, replay_losses, self.memory)
        probe_ids = joined("probe_ids", np.int64)
        probe_losses, probe_correct = joined("probe_losses", np.float64), joined("probe_correct", bool)
        scheduler = self.strategy.scheduler
        if probe_ids.size:
            scheduler.on_probe(now, probe_ids, probe_losses, probe_correct, self.memory)
        if new_losses.size:
            self.task_losses.append(float(np.mean(new_losses)))
            scheduler.on_step(now, self.task_losses[-1])
        self.clock.tick(observations[0].update_norm if observations else 0.0)

    def _record_replays(self, ids: np.ndarray, losses: np.ndarray, now: float) -> None:
        """What the memory model predicted for each replayed sample, beside its observed loss."""
        m = self.memory
        pos = m.positions(ids)
        for p, i, loss, r in zip(pos.tolist(), ids.tolist(), losses.tolist(), m.retention(now, pos).tolist()):
            self.replay_log.append(
                ReplayRecord(
                    step=float(now),
                    sample_id=int(i),
                    task=int(m.task[p]),
                    age=float(now - m.tau[p]),
                    strength=float(m.strength[p]),
                    predicted_retention=float(r),
                    entry_loss=float(m.entry_loss[p]),
                    loss=float(loss),
                    reference_loss=float(m.reference[p]),
                )
            )

    def end_task(self, task_index: int) -> list[int]:
        """The reservoir's samples join the pool, with their entry loss (``mssr.entry_loss``):
        their own step's loss, or the task's learned level (``learned_level``)."""
        order = np.argsort(self.reservoir.ids)
        ids = self.reservoir.ids[order].tolist()
        losses = self.reservoir.losses[order]
        entry = self.learned_level() if self.cfg.mssr.entry_loss == "task_end" and self.task_losses else None
        self.memory.add(ids, task=task_index, losses=losses, now=self.now, entry_losses=entry)
        return ids

    def set_reference(self, ids, losses) -> None:
        """The reference losses of pooled samples (their no-grad loss at their task's end); the
        other samples of their tasks take their task's mean (``replay.reference_samples``)."""
        self.memory.set_reference(ids, losses, fill_tasks=True)

    def learned_level(self) -> float:
        """The current task's mean training loss over its last quarter of steps (at least one)."""
        tail = self.task_losses[-max(1, len(self.task_losses) // 4) :]
        return float(np.mean(tail))

    def state_dict(self) -> dict:
        return {
            "memory": self.memory.state_dict(),
            "scheduler": self.strategy.scheduler.state_dict(),
            **({"sampler": sampler_state} if (sampler_state := self.strategy.sampler.state_dict()) else {}),
            "clock": self.clock.state_dict(),
            "rng": self.rng.bit_generator.state,
            "reservoir": self.reservoir.state_dict(),
            "replayed": self.replayed,
            "events": self.events,
            "probed": self.probed,
            "task_index": self.task_index,
            "task_losses": list(self.task_losses),
            "replay_log": [r.to_json() for r in self.replay_log],
        }

    def load_state_dict(self, s: dict) -> None:
        self.memory.load_state_dict(s["memory"])
        self.strategy.scheduler.load_state_dict(s["scheduler"])
        # the budget and steps are this run's plan, not the checkpoint's: a run continued with
        # more tasks (mssr continue) re-plans them over the extended stream, and a scheduler
        # restored with the old plan would find its budget spent and replay nothing more
        self._tell_budget()
        self.clock.load_state_dict(s["clock"])
        self.rng.bit_generator.state = s["rng"]
        self.reservoir = self.storage(self.cfg.pool_per_task, self.rng)
        self.reservoir.load_state_dict(s["reservoir"])
        if "sampler" in s:
            self.strategy.sampler.load_state_dict(s["sampler"])
        self.replayed, self.events, self.task_index = s["replayed"], s["events"], s["task_index"]
        self.probed = s["probed"]
        self.task_losses = list(s.get("task_losses", []))  # absent from checkpoints of older versions
        self.replay_log = [ReplayRecord(**r) for r in s.get("replay_log", [])]
