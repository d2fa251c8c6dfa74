"""The memory-strength actor: one per run, shared by every training worker.

It wraps ``mssr.replay.ReplayPlanner``. Rank 0 gathers every rank's per-sample losses of a
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
import time

import ray

from mssr.replay import ReplayPlan, ReplayPlanner, StepObservation
from mssr.strategies import reference_pass


class MemoryCoordinator:
    """The actor's code as a plain class (``MemoryActor`` is its Ray actor; benchmarks subclass it)."""

    def __init__(self, replay_cfg, seed: int, total_new_samples: int, replay_steps: int | None = None):
        self.planner = ReplayPlanner(
            replay_cfg, seed=seed, total_new_samples=total_new_samples, replay_steps=replay_steps
        )
        self.needs_reference = reference_pass(replay_cfg)
        self.pending: dict[int, list[StepObservation]] = {}  # step -> every rank's observation
        self.applied_through = -1  # every step <= this has been applied
        self.plans: dict[int, ReplayPlan] = {}
        self.started: set[int] = set()
        self.ended: dict[int, list[int]] = {}
        # reference losses of a finished task's pool samples, per rank, until every rank's are in
        self.references: dict[int, dict[int, tuple[list[int], list[float]]]] = {}
        self.awaiting_reference: set[int] = set()  # tasks whose references are not all in yet
        self.changed = asyncio.Condition()
        self.bookkeeping_seconds = 0.0
        self.events: list[list] = []  # [step, replayed ids] of every replay event, in step order

    async def _wait_applied(self, step: int, references: bool = True) -> None:
        """Until every step up to ``step`` has been applied and (``references``) every finished
        task's reference losses are in: plans never depend on which rank's message came first."""
        async with self.changed:
            await self.changed.wait_for(
                lambda: self.applied_through >= step and not (references and self.awaiting_reference)
            )

    async def start_task(self, task_index: int, step: int) -> None:
        """Idempotent: the first rank to arrive starts the task for all."""
        await self._wait_applied(step - 1)
        if task_index not in self.started:
            self.started.add(task_index)
            self.planner.start_task(task_index)

    async def plan(self, step: int) -> ReplayPlan:
        await self._wait_applied(step - 1)
        if step not in self.plans:
            t = time.perf_counter()
            self.plans[step] = self.planner.plan()
            self.bookkeeping_seconds += time.perf_counter() - t
            if self.plans[step].replay:
                self.events.append([step, self.plans[step].replay])
            self.plans.pop(step - 64, None)  # bounded cache; ranks never lag that far
        return self.plans[step]

    async def observe(self, step: int, observations: list[StepObservation]) -> None:
        """Every rank's observation of ``step``, in rank order."""
        self.pending[step] = observations
        advanced = False
        while self.applied_through + 1 in self.pending:
            s = self.applied_through + 1
            t = time.perf_counter()
            self.planner.observe_step(self.pending.pop(s))
            self.bookkeeping_seconds += time.perf_counter() - t
            self.applied_through = s
            advanced = True
        if advanced:
            async with self.changed:
                self.changed.notify_all()

    async def end_task(self, task_index: int, end_step: int) -> list[int]:
        """After every rank's last step of the task: the reservoir joins the pool (once)."""
        # not waiting for references: the ranks arriving after the first send theirs after this
        await self._wait_applied(end_step - 1, references=False)
        if task_index not in self.ended:
            self.ended[task_index] = self.planner.end_task(task_index)
            if self.needs_reference:
                self.awaiting_reference.add(task_index)
        return self.ended[task_index]

    async def set_reference(self, task_index: int, rank: int, world: int, ids: list[int], losses: list[float]) -> None:
        """One rank's reference losses of its share of ``task_index``'s new pool samples; applied
        in rank order once every rank's share is in. Idempotent."""
        if task_index not in self.awaiting_reference:
            return
        shares = self.references.setdefault(task_index, {})
        shares[rank] = (ids, losses)
        if len(shares) < world:
            return
        t = time.perf_counter()
        ids_all = [i for r in sorted(shares) for i in shares[r][0]]
        self.planner.set_reference(ids_all, [x for r in sorted(shares) for x in shares[r][1]])
        self.bookkeeping_seconds += time.perf_counter() - t
        del self.references[task_index]
        self.awaiting_reference.discard(task_index)
        async with self.changed:
            self.changed.notify_all()

    def stats(self) -> dict:
        return {
            "replay_samples": self.planner.replayed,
            "replay_events": self.planner.events,
            "probe_samples": self.planner.probed,
            "pool_size": len(self.planner.memory),
            "bookkeeping_seconds": self.bookkeeping_seconds,
            "clock": self.planner.now,
            "mean_retention": self.planner.memory.mean_retention(self.planner.now),
        }

    def diagnostics(self) -> dict:
        """The replay events (step, ids) and every replayed sample's record (mssr.diagnostics)."""
        return {"events": self.events, "replay_log": [r.to_json() for r in self.planner.replay_log]}

    def pid(self) -> int:
        return os.getpid()

    async def state_dict(self, step: int) -> dict:
        """The state after every step before ``step`` has been applied."""
        await self._wait_applied(step - 1)
        return {
            "planner": self.planner.state_dict(),
            "applied_through": self.applied_through,
            "started": sorted(self.started),
            "ended": self.ended,
            "events": [e for e in self.events if e[0] < step],
        }

    def load_state_dict(self, state: dict) -> None:
        self.planner.load_state_dict(state["planner"])
        self.applied_through = state["applied_through"]
        self.started = set(state["started"])
        self.ended = {int(k): v for k, v in state["ended"].items()}
        self.events = state.get("events", [])
        self.pending.clear()
        self.plans.clear()
        self.references.clear()  # a checkpoint is taken between tasks or within one, never while awaiting
        self.awaiting_reference.clear()


MemoryActor = ray.remote(num_cpus=0)(MemoryCoordinator)
