"""The replay planner as the continual loop talks to it: one object per run, whatever the
number of ranks, that answers every rank the same plan for a step and applies the steps'
observations in step order, the ranks' in rank order, so its state never depends on timing.

    memory = LocalMemory(cfg.replay, seed=cfg.seed, total_new_samples=n, replay_steps=steps)
    memory.start_task(0, step=0)
    plan = memory.plan(step)                           # ReplayPlan(replay=[ids], probe=[ids])
    memory.observe(step, [StepObservation(...), ...])  # every rank's, in rank order

``LocalMemory`` runs in the training process (one rank: ``mssr.loop`` without Ray, the GPU
check). ``pipelines.memory_actor`` puts the same object in a Ray actor shared by every
worker and adds the waits that several ranks need: a plan waits until every earlier step
has been applied.
"""

from __future__ import annotations

import time

from mssr.replay import ReplayPlan, ReplayPlanner, StepObservation
from mssr.strategies import reference_pass

PLAN_CACHE = 64  # plans kept per step: ranks never lag this far behind each other


class LocalMemory:
    """The planner, its plan cache, the replay events and the idempotent task boundaries."""

    def __init__(self, replay_cfg, seed: int, total_new_samples: int, replay_steps: int | None = None):
        self.planner = ReplayPlanner(
            replay_cfg, seed=seed, total_new_samples=total_new_samples, replay_steps=replay_steps
        )
        self.needs_reference = reference_pass(replay_cfg, self.planner.strategy)
        self.pending: dict[int, list[StepObservation]] = {}  # step -> every rank's observation
        self.applied_through = -1  # every step <= this has been applied
        self.plans: dict[int, ReplayPlan] = {}
        self.started: set[int] = set()
        self.ended: dict[int, list[int]] = {}
        # reference losses of a finished task's pool samples, per rank, until every rank's are in
        self.references: dict[int, dict[int, tuple[list[int], list[float]]]] = {}
        self.awaiting_reference: set[int] = set()  # tasks whose references are not all in yet
        self.bookkeeping_seconds = 0.0
        self.events: list[list] = []  # [step, replayed ids] of every replay event, in step order

    def ready(self, step: int, references: bool = True) -> bool:
        """Every step up to ``step`` applied and (``references``) every finished task's
        reference losses in: what a plan for ``step + 1`` needs."""
        return self.applied_through >= step and not (references and self.awaiting_reference)

    def start_task(self, task_index: int, step: int) -> None:
        """Idempotent: the first rank to arrive starts the task for all."""
        if task_index not in self.started:
            self.started.add(task_index)
            self.planner.start_task(task_index)

    def plan(self, step: int) -> ReplayPlan:
        if step not in self.plans:
            t = time.perf_counter()
            self.plans[step] = self.planner.plan()
            self.bookkeeping_seconds += time.perf_counter() - t
            if self.plans[step].replay:
                self.events.append([step, self.plans[step].replay])
            self.plans.pop(step - PLAN_CACHE, None)
        return self.plans[step]

    def observe(self, step: int, observations: list[StepObservation]) -> bool:
        """Every rank's observation of ``step``, in rank order; applied once every earlier step
        has been. True when at least one step was applied."""
        self.pending[step] = observations
        advanced = False
        while self.applied_through + 1 in self.pending:
            s = self.applied_through + 1
            t = time.perf_counter()
            self.planner.observe_step(self.pending.pop(s))
            self.bookkeeping_seconds += time.perf_counter() - t
            self.applied_through = s
            advanced = True
        return advanced

    def end_task(self, task_index: int, end_step: int) -> list[int]:
        """After every rank's last step of the task: the reservoir joins the pool (once)."""
        if task_index not in self.ended:
            self.ended[task_index] = self.planner.end_task(task_index)
            if self.needs_reference:
                self.awaiting_reference.add(task_index)
        return self.ended[task_index]

    def set_reference(self, task_index: int, rank: int, world: int, ids: list[int], losses: list[float]) -> bool:
        """One rank's reference losses of its share of ``task_index``'s new pool samples; applied
        in rank order once every rank's share is in (then True). Idempotent."""
        if task_index not in self.awaiting_reference:
            return False
        shares = self.references.setdefault(task_index, {})
        shares[rank] = (ids, losses)
        if len(shares) < world:
            return False
        t = time.perf_counter()
        ids_all = [i for r in sorted(shares) for i in shares[r][0]]
        self.planner.set_reference(ids_all, [x for r in sorted(shares) for x in shares[r][1]])
        self.bookkeeping_seconds += time.perf_counter() - t
        del self.references[task_index]
        self.awaiting_reference.discard(task_index)
        return True

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

    def state_dict(self, step: int) -> dict:
        """The state after every step before ``step`` has been applied."""
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
