"""Replay schedulers: when to replay. Registered by name in ``SCHEDULERS``.

A scheduler is any class with ``__init__(self, replay_cfg)`` and the three hooks below; the
planner calls them in step order, so a scheduler may keep state (and must expose it through
``state_dict``/``load_state_dict`` to survive restarts).

    sched = SCHEDULERS.get("adaptive")(cfg.replay)
    sched.on_task_start(task_index=1, now=48)
    if sched.is_due(now, memory): ...; sched.on_replay(now)
"""

from __future__ import annotations

from typing import Protocol

from mssr.memory import MemoryState
from mssr.registry import Registry

SCHEDULERS = Registry("scheduler")


class ReplayScheduler(Protocol):
    def on_task_start(self, task_index: int, now: float) -> None: ...
    def is_due(self, now: float, memory: MemoryState) -> bool: ...
    def on_replay(self, now: float) -> None: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


class _AttributeState:
    """State is the instance's plain attributes."""

    def state_dict(self) -> dict:
        return dict(vars(self))

    def load_state_dict(self, state: dict) -> None:
        vars(self).update(state)


@SCHEDULERS.register("never")
class NeverScheduler(_AttributeState):
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
class FixedIntervalScheduler(_AttributeState):
    """Replay every ``replay.fixed.interval`` steps."""

    def __init__(self, replay_cfg):
        self.interval = replay_cfg.fixed.interval
        self.next_due = float(self.interval)

    def on_task_start(self, task_index: int, now: float) -> None:
        self.next_due = now + self.interval

    def is_due(self, now: float, memory: MemoryState) -> bool:
        return now >= self.next_due

    def on_replay(self, now: float) -> None:
        self.next_due = now + self.interval


@SCHEDULERS.register("adaptive")
class AdaptiveScheduler(_AttributeState):
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
