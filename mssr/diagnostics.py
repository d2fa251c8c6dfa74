"""What the memory model believed, against what the run showed: diagnostics of replay.

The planner records every replayed sample (``ReplayRecord``): when, its task, its age (time
since it was last trained), the strength and the retention the memory model predicted for
it just before the replay, its loss when it entered the pool and its loss when replayed. From
these and the run's plan:

* ``calibration``: is the predicted retention R informative? Replayed samples are binned by
  predicted R; each bin's mean observed loss rise (loss at replay minus loss at entry) should
  fall as R rises, and Spearman's rank correlation between 1 - R and the loss rise should be
  positive. A model whose R says nothing about forgetting has a correlation near zero.
* ``events_by_task_phase``: where replay events fall within each task (first, middle or last
  third of its steps), and how many fall in the last stretch before each evaluation.
* ``spend_by_task``: replayed samples during each task, and the budget left when it ends.
* ``picks_by_task``: which tasks' samples were replayed during each task (the starvation of
  the task learned last shows here).

    records = planner.replay_log                           # list[ReplayRecord]
    calibration(records)                                   # {"spearman": ..., "bins": [...]}
    summarise(replay_log, events, task_steps, budget)     # every diagnostic, from the planner's record
                                                           # (LocalMemory.diagnostics(): its replay log and events)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from scipy.stats import spearmanr

from mssr.sample_ids import task_of


@dataclass(frozen=True)
class ReplayRecord:
    step: float  # the replay clock's time of the replay
    sample_id: int
    task: int  # the task the sample belongs to
    age: float  # time since the sample was last trained (entered the pool or was replayed)
    strength: float  # S just before the replay
    predicted_retention: float  # R = exp(-age / S) just before the replay
    entry_loss: float  # its loss when it entered the pool (the end of its task)
    loss: float  # its loss in the replay step's forward pass
    # its own loss in a no-grad pass at its task's end (NaN: not measured, as in older runs)
    reference_loss: float = float("nan")

    def to_json(self) -> dict:
        return asdict(self)


def calibration(records: Sequence[ReplayRecord], bins: int = 4) -> dict:
    """Predicted retention against the observed loss rise of the replayed samples.

    Returns ``spearman`` (rank correlation of 1 - R with the loss rise; NaN with fewer than 3
    records or no spread), ``n``, and ``bins``: equal-count bins of R, each with its R range,
    the mean loss rise and the number of samples, from the least to the most retained.
    """
    if not records:
        return {"n": 0, "spearman": float("nan"), "bins": []}
    r = np.array([x.predicted_retention for x in records])
    rise = np.array([x.loss - x.entry_loss for x in records])
    rho = float("nan")
    if len(records) >= 3 and np.ptp(r) > 0 and np.ptp(rise) > 0:
        rho = float(spearmanr(1.0 - r, rise).statistic)
    order = np.argsort(r, kind="stable")
    out = []
    for part in np.array_split(order, min(bins, len(records))):
        out.append(
            {
                "r_low": float(r[part].min()),
                "r_high": float(r[part].max()),
                "mean_loss_rise": float(rise[part].mean()),
                "n": int(part.size),
            }
        )
    return {"n": len(records), "spearman": rho, "bins": out}


def task_of_step(step: int, task_steps: Sequence[int]) -> tuple[int, int]:
    """(task index, step within the task) of a global step, given every task's number of steps."""
    start = 0
    for k, n in enumerate(task_steps):
        if step < start + n:
            return k, step - start
        start += n
    raise ValueError(f"step {step} is past the stream's {start} steps")


def events_by_task_phase(plan_replays: Sequence[Sequence[int]], task_steps: Sequence[int]) -> dict:
    """Replay events by third of their task (``first``, ``middle``, ``last``), and per task.

    ``plan_replays[s]``: the ids replayed at global step s (empty when none)."""
    phases = {"first": 0, "middle": 0, "last": 0}
    per_task = [0] * len(task_steps)
    for step, ids in enumerate(plan_replays):
        if not ids:
            continue
        k, i = task_of_step(step, task_steps)
        per_task[k] += 1
        phases[("first", "middle", "last")[min(2, 3 * i // max(1, task_steps[k]))]] += 1
    return {"phases": phases, "events_per_task": per_task}


def spend_by_task(plan_replays: Sequence[Sequence[int]], task_steps: Sequence[int], budget: int | None) -> list[dict]:
    """Per task: samples replayed during it, and the budget left when it ended."""
    spent = [0] * len(task_steps)
    for step, ids in enumerate(plan_replays):
        if ids:
            spent[task_of_step(step, task_steps)[0]] += len(ids)
    out, total = [], 0
    for k, n in enumerate(spent):
        total += n
        out.append({"task": k, "replayed": n, "budget_left": None if budget is None else budget - total})
    return out


def picks_by_task(plan_replays: Sequence[Sequence[int]], task_steps: Sequence[int], task_of_id) -> list[dict]:
    """Per training task: how many replayed samples came from each earlier task.
    ``task_of_id(sample_id)`` gives a sample's task."""
    out = [{"task": k, "replayed_from": {}} for k in range(len(task_steps))]
    for step, ids in enumerate(plan_replays):
        if not ids:
            continue
        during = out[task_of_step(step, task_steps)[0]]["replayed_from"]
        for i in ids:
            t = int(task_of_id(int(i)))
            during[t] = during.get(t, 0) + 1
    return out


def forgetting_fit(replay_log: Sequence[dict], model: str) -> dict:
    """How well the forgetting model ``model`` (mssr.forgetting) predicted this run's excess
    observations, each from the earlier ones only: Spearman's rank correlation of prediction and
    observation, and their number. Only where the run measured reference losses (else n = 0)."""
    from mssr.forgetting import prequential, replay_observations

    referenced = [r for r in replay_log if np.isfinite(r.get("reference_loss", float("nan")))]
    obs = replay_observations(referenced)
    if len(obs) < 3:
        return {"model": model, "n": len(obs), "spearman": float("nan")}
    predicted, _ = prequential(model, obs)
    actual = np.array([o["excess"] for o in obs])
    rho = (
        float(spearmanr(predicted, actual).statistic) if np.ptp(predicted) > 0 and np.ptp(actual) > 0 else float("nan")
    )
    return {"model": model, "n": len(obs), "spearman": rho}


def summarise(
    replay_log: Sequence[dict],
    events: Sequence[Sequence],
    task_steps: Sequence[int],
    budget: int | None,
    forgetting_model: str = "rehearsal",
) -> dict:
    """Every diagnostic of a run from the memory's record (``LocalMemory.diagnostics()``, in
    the memory actor on Ray): ``replay_log`` (ReplayRecord dicts) and ``events`` ([step, ids]
    of each replay event)."""
    replays = [[] for _ in range(sum(task_steps))]
    for step, ids in events:
        replays[int(step)] = list(ids)
    records = [ReplayRecord(**r) for r in replay_log]
    return {
        "calibration": calibration(records),
        "forgetting": forgetting_fit(replay_log, forgetting_model),
        **events_by_task_phase(replays, task_steps),
        "spend_by_task": spend_by_task(replays, task_steps, budget),
        "picks_by_task": picks_by_task(replays, task_steps, task_of),
    }


def format_summary(d: dict) -> str:
    """One line for the console."""
    rho = d["calibration"]["spearman"]
    spend = "/".join(str(t["replayed"]) for t in d["spend_by_task"])
    fit = d.get("forgetting") or {"n": 0}
    model = (
        f"; the {fit['model']} forgetting model predicted the excess loss replays observed at Spearman "
        f"{fit['spearman']:+.2f} over {fit['n']} observations (each from the earlier ones)"
        if fit["n"]
        else ""
    )
    return (
        f"replay diagnostics: events by third of their task {d['phases']['first']}/{d['phases']['middle']}/"
        f"{d['phases']['last']} (first/middle/last); replayed per task {spend}; calibration of predicted "
        f"retention against the loss rise at replay: Spearman {rho:+.2f} over {d['calibration']['n']} samples" + model
    )


def last_task_share(picks: Sequence[dict]) -> tuple[float, float]:
    """(observed, even) share of the replayed samples drawn from the task learned last, over the
    tasks from the third on (the first with a choice): observed, what the run drew; even, what
    draws split evenly over the tasks learned so far would give (1/k during task k+1)."""
    drawn = last = 0
    even = 0.0
    for during in picks[2:]:
        counts = {int(t): n for t, n in during["replayed_from"].items()}
        n = sum(counts.values())
        drawn += n
        last += counts.get(during["task"] - 1, 0)
        even += n / during["task"]
    return (last / drawn, even / drawn) if drawn else (float("nan"), float("nan"))


def table_row(d: dict) -> list[str]:
    """A run's diagnostics (``summarise``'s dict) as the cells of ``mssr diagnostics``'s table:
    replayed samples, calibration, events by third of their task, samples replayed during the
    last task, and the share drawn from the task learned last (with an even split's share)."""
    spend = [t["replayed"] for t in d["spend_by_task"]]
    share, even = last_task_share(d["picks_by_task"])
    phases = d["phases"]
    return [
        str(sum(spend)),
        f"{d['calibration']['spearman']:+.2f}",
        f"{phases['first']} / {phases['middle']} / {phases['last']}",
        str(spend[-1]),
        f"{share:.2f} ({even:.2f})",
    ]


TABLE_HEAD = (
    "replayed",
    "Spearman (1 - R, loss rise)",
    "events by third",
    "during the last task",
    "from the task learned last (even split)",
)
