"""The memory-strength actor: one per run, shared by every training worker.

It is ``mssr.memory_service.LocalMemory`` (the replay planner, its plan cache and the task
boundaries) with waits for several ranks. Rank 0 gathers every rank's per-sample losses of a
step through the training process group (``mssr.step_gather``) and sends them in one
message without waiting (``observe.remote``): one message per step whatever the number of
ranks. The actor applies steps in order, the ranks' observations in rank order, so its state
never depends on timing. ``plan(step)`` waits until every earlier step has been applied,
computes the plan once and answers the same plan to every rank.

If the actor process dies, Ray restarts it (``max_restarts=-1``) with a fresh state; the
workers' next call fails, Ray Train restarts them from the last checkpoint, and rank 0
loads the checkpointed state into the new actor, so the run continues from that snapshot.

    actor = MemoryActor.options(name=f"mssr-memory-{run_id}", get_if_exists=True, max_restarts=-1).remote(...)
    plan = ray.get(actor.plan.remote(step))        # ReplayPlan(replay=[ids], probe=[ids])
    actor.observe.remote(step, [StepObservation(new_ids, new_losses, ...), ...])   # rank 0, one per rank
"""

from __future__ import annotations

import asyncio
import os

import ray

from mssr.memory_service import LocalMemory
from mssr.replay import ReplayPlan, StepObservation


class MemoryCoordinator(LocalMemory):
    """``LocalMemory`` shared by every rank: each call that needs earlier steps applied waits
    for them (``MemoryActor`` is its Ray actor; benchmarks subclass it)."""

    def __init__(self, replay_cfg, seed: int, total_new_samples: int, replay_steps: int | None = None):
        super().__init__(replay_cfg, seed, total_new_samples, replay_steps)
        self.changed = asyncio.Condition()

    async def _wait_applied(self, step: int, references: bool = True) -> None:
        """Until every step up to ``step`` has been applied and (``references``) every finished
        task's reference losses are in: plans never depend on which rank's message came first."""
        async with self.changed:
            await self.changed.wait_for(lambda: self.ready(step, references))

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def start_task(self, task_index: int, step: int) -> None:
        await self._wait_applied(step - 1)
        super().start_task(task_index, step)

    async def plan(self, step: int) -> ReplayPlan:
        await self._wait_applied(step - 1)
        return super().plan(step)

    async def observe(self, step: int, observations: list[StepObservation]) -> None:
        if super().observe(step, observations):
            await self._notify()

    async def end_task(self, task_index: int, end_step: int) -> list[int]:
        # not waiting for references: the ranks arriving after the first send theirs after this
        await self._wait_applied(end_step - 1, references=False)
        return super().end_task(task_index, end_step)

    async def set_reference(self, task_index: int, rank: int, world: int, ids: list[int], losses: list[float]) -> None:
        if super().set_reference(task_index, rank, world, ids, losses):
            await self._notify()

    async def state_dict(self, step: int) -> dict:
        await self._wait_applied(step - 1)
        return super().state_dict(step)

    def pid(self) -> int:
        return os.getpid()


MemoryActor = ray.remote(num_cpus=0)(MemoryCoordinator)
