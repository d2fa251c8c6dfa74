"""The replay planner: memory state + strategy + budget -> one replay plan per step.

It is the single source of replay decisions. The planner consumes per-sample losses in a
fixed order (step, then rank), so the same seed gives the same plan sequence whatever the
timing of the workers. It also runs the reservoir that picks which samples of the current
task join the pool at the task's end (the storage policy, separate from the strategy).

    planner = ReplayPlanner(cfg.replay, seed=0)
    planner.start_task(0, now=0)
    ids = planner.plan(now=0)                 # [] : nothing to replay yet
    planner.observe(now=0, new_ids=..., new_losses=..., replay_ids=ids, replay_losses=...)
    pool_ids = planner.end_task(0, now=36)    # reservoir sample of task 0 joins the pool
"""

from __future__ import annotations

import numpy as np

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


class Reservoir:
    """Algorithm R over a stream of (id, loss): a uniform sample of fixed size."""

    def __init__(self, size: int, rng: np.random.Generator):
        self.size = size
        self.rng = rng
        self.ids: list[int] = []
        self.seen = 0
        self.last_loss: dict[int, float] = {}

    def offer(self, ids, losses) -> None:
        """Offer samples in stream order; a kept sample seen again (a later epoch) only
        refreshes its loss."""
        for i, loss in zip(ids, losses):
            i = int(i)
            if i in self.last_loss:
                self.last_loss[i] = float(loss)
                continue
            self.seen += 1
            if len(self.ids) < self.size:
                self.ids.append(i)
                self.last_loss[i] = float(loss)
                continue
            j = int(self.rng.integers(self.seen))
            if j < self.size:
                del self.last_loss[self.ids[j]]
                self.ids[j] = i
                self.last_loss[i] = float(loss)

    def state_dict(self) -> dict:
        return {"size": self.size, "ids": list(self.ids), "seen": self.seen, "last_loss": dict(self.last_loss)}

    def load_state_dict(self, s: dict) -> None:
        self.size, self.ids, self.seen = s["size"], list(s["ids"]), s["seen"]
        self.last_loss = {int(k): float(v) for k, v in s["last_loss"].items()}


class ReplayPlanner:
    def __init__(self, replay_cfg, seed: int, total_new_samples: int | None = None):
        self.cfg = replay_cfg
        self.strategy = build_strategy(replay_cfg.strategy, replay_cfg)
        self.memory = MemoryState(replay_cfg.mssr)
        self.rng = np.random.default_rng(seed)
        self.reservoir = Reservoir(replay_cfg.pool_per_task, self.rng)
        self.budget = resolve_budget(replay_cfg.budget, total_new_samples)
        self.replayed = 0
        self.events = 0
        self.task_index = -1

    def start_task(self, task_index: int, now: float) -> None:
        self.task_index = task_index
        self.reservoir = Reservoir(self.cfg.pool_per_task, self.rng)
        self.strategy.scheduler.on_task_start(task_index, now)

    def plan(self, now: float) -> list[int]:
        """Sample ids to replay at step ``now`` (empty: no replay)."""
        if len(self.memory) == 0 or not self.strategy.scheduler.is_due(now, self.memory):
            return []
        n = self.cfg.samples_per_event
        if self.budget is not None:
            n = min(n, self.budget - self.replayed)
        if n <= 0:
            return []
        ids = self.strategy.sampler.sample(self.memory, now, n, self.rng)
        self.strategy.scheduler.on_replay(now)
        self.replayed += len(ids)
        self.events += 1
        return [int(i) for i in ids]

    def observe(self, now: float, new_ids, new_losses, replay_ids, replay_losses) -> None:
        """Losses seen at step ``now``: new samples feed the reservoir, replayed ones the memory."""
        self.reservoir.offer(new_ids, new_losses)
        if len(replay_ids):
            self.memory.update(replay_ids, replay_losses, now)

    def end_task(self, task_index: int, now: float) -> list[int]:
        """The reservoir's samples join the pool with strength from their last loss."""
        ids = sorted(self.reservoir.ids)
        losses = [self.reservoir.last_loss.get(i, self.cfg.mssr.loss_ref) for i in ids]
        self.memory.add(ids, task=task_index, losses=losses, now=now)
        return ids

    def state_dict(self) -> dict:
        return {
            "memory": self.memory.state_dict(),
            "scheduler": self.strategy.scheduler.state_dict(),
            "rng": self.rng.bit_generator.state,
            "reservoir": self.reservoir.state_dict(),
            "replayed": self.replayed,
            "events": self.events,
            "task_index": self.task_index,
        }

    def load_state_dict(self, s: dict) -> None:
        self.memory.load_state_dict(s["memory"])
        self.strategy.scheduler.load_state_dict(s["scheduler"])
        self.rng.bit_generator.state = s["rng"]
        self.reservoir = Reservoir(self.cfg.pool_per_task, self.rng)
        self.reservoir.load_state_dict(s["reservoir"])
        self.replayed, self.events, self.task_index = s["replayed"], s["events"], s["task_index"]
