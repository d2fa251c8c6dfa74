"""The resolved plan of a run: each task's rows and steps, the workers, the replay budget, the
fixed interval. Made once by the driver from the tokenised tasks, printed before training,
and handed as it is to every process of the run (the workers, the memory planner).

    plan = build_plan(cfg, tasks, stats, strategy)   # stats: per task {"rows", "tokens", ...}
    print(format_plan(plan))
    plan.replay        # the replay config resolved: budget a count of samples, fixed.interval set
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mssr.config import Config, ReplayConfig
from mssr.errors import ConfigError
from mssr.loop import TaskToTrain
from mssr.replay import resolve_budget, with_fixed_interval
from mssr.schedulers import FixedIntervalScheduler
from mssr.strategies import Strategy
from mssr.tasks import Task


@dataclass(frozen=True)
class TaskPlan:
    name: str
    train: int  # rows loaded
    train_of: int  # rows in the file when max_train_rows capped them, else 0
    used: int  # rows trained: the streaming split gives every rank the same number
    test: int
    test_of: int
    scorer: str
    steps: int
    mean_tokens: float
    max_tokens: int
    truncated: int  # rows cut to stream.max_length


@dataclass(frozen=True)
class RunPlan:
    tasks: tuple[TaskPlan, ...]
    total_steps: int
    new_samples: int
    replays: bool  # the strategy ever replays: its spend is measured against the budget
    mixes_tasks: bool
    workers: int
    batch_per_worker: int
    use_gpu: bool
    replay_steps: int  # steps that can replay: the pool is empty during the first task
    fixed_interval: float | None  # the fixed schedule's interval, where the strategy uses it
    model: str
    finetune: str
    replay: ReplayConfig  # resolved: budget a count of samples, fixed.interval derived from it

    @property
    def strategy(self) -> str:
        return self.replay.strategy

    @property
    def replay_budget(self) -> int | None:
        """Replayed samples allowed, resolved from ``replay.budget``."""
        return self.replay.budget

    @property
    def pool_per_task(self) -> int:
        return self.replay.pool_per_task

    @property
    def samples_per_event(self) -> int:
        return self.replay.samples_per_event


def build_plan(cfg: Config, tasks: list[Task], stats: list[dict], strategy: Strategy) -> RunPlan:
    """The resolved plan: tasks and sizes, steps, strategy, workers, replay budget."""
    world, per_rank = cfg.train.num_workers, cfg.train.batch_size // cfg.train.num_workers
    rows = []
    for t, s in zip(tasks, stats):
        usable = (s["rows"] // world) * world  # the streaming split gives every rank the same rows
        rows.append(
            TaskPlan(
                name=t.name,
                train=len(t.train),
                train_of=t.train_total,
                used=usable,
                test=len(t.test),
                test_of=t.test_total,
                scorer=t.scorer,
                steps=cfg.train.epochs_per_task * math.ceil((usable // world) / per_rank),
                mean_tokens=round(s["tokens"] / max(1, s["rows"]), 1),
                max_tokens=s["max_length"],
                truncated=s["truncated"],
            )
        )
    new_samples = sum(r.used for r in rows) * cfg.train.epochs_per_task
    budget = resolve_budget(cfg.replay.budget, new_samples)
    replay_steps = sum(r.steps for r in rows[1:])
    if budget is not None and budget < cfg.replay.samples_per_event and strategy.replays:
        raise ConfigError(
            f"replay.budget={cfg.replay.budget} allows {budget} replayed samples, fewer than one replay "
            f"event (replay.samples_per_event={cfg.replay.samples_per_event})"
        )
    replay = with_fixed_interval(cfg.replay.model_copy(update={"budget": budget}), budget, replay_steps)
    uses_fixed = isinstance(strategy.scheduler, FixedIntervalScheduler)
    return RunPlan(
        tasks=tuple(rows),
        total_steps=sum(r.steps for r in rows),
        new_samples=new_samples,
        replays=strategy.replays,
        mixes_tasks=strategy.mixes_tasks,
        workers=world,
        batch_per_worker=per_rank,
        use_gpu=cfg.train.use_gpu,
        replay_steps=replay_steps,
        fixed_interval=replay.fixed.interval if uses_fixed else None,
        model=cfg.model.name,
        finetune=cfg.model.finetune,
        replay=replay,
    )


def tasks_to_train(tasks: list[Task], plan: RunPlan) -> list[TaskToTrain]:
    """Each task as the continual loop trains it: its steps from the plan, its test rows."""
    pairs = zip(tasks, plan.tasks)
    return [TaskToTrain(t.name, t.scorer, p.steps, [(e.prompt, e.answer) for e in t.test]) for t, p in pairs]


def format_plan(plan: RunPlan) -> str:
    lines = [
        f"model {plan.model} ({plan.finetune}), strategy {plan.strategy}, "
        f"{plan.workers} worker(s) x {plan.batch_per_worker} samples/step, "
        f"{'GPU' if plan.use_gpu else 'CPU'}",
        f"replay: pool {plan.pool_per_task}/task, {plan.samples_per_event} samples/event, "
        f"budget {plan.replay_budget if plan.replay_budget is not None else 'unlimited'}"
        + (f", replay every {plan.fixed_interval:.2f} steps" if plan.fixed_interval else ""),
        f"{'task':<22} {'train':>6} {'used':>6} {'test':>5} {'steps':>6} {'tok/row':>8} {'max':>5}  scorer",
    ]
    for r in plan.tasks:
        lines.append(
            f"{r.name[:22]:<22} {r.train:>6} {r.used:>6} {r.test:>5} {r.steps:>6} "
            f"{r.mean_tokens:>8} {r.max_tokens:>5}  {r.scorer}"
        )
    lines.append(f"total: {plan.total_steps} optimizer steps, {plan.new_samples} new samples")
    capped = [
        f"{r.name}: {loaded} of {total} {kind} rows"
        for r in plan.tasks
        for kind, loaded, total in (("train", r.train, r.train_of), ("test", r.test, r.test_of))
        if total
    ]
    if capped:  # max_train_rows / max_test_rows: a seeded sample of the file, said where it is used
        lines.append("capped by max_train_rows / max_test_rows (a seeded random sample): " + "; ".join(capped))
    truncated = [f"{r.name} {r.truncated}" for r in plan.tasks if r.truncated]
    if truncated:
        lines.append(f"rows truncated to stream.max_length (prompt cut from the left): {', '.join(truncated)}")
    if plan.mixes_tasks:
        lines.append(
            "joint: every task's rows are shuffled together and trained in segments of these sizes; "
            "row k of the matrix is after segment k"
        )
    return "\n".join(lines)
