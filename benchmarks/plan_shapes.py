"""Where a strategy's replays go on the long stream's shape, without a model: the planner
driven by the synthetic stream of ``tests/planner_sim.py`` (11 tasks of 16 steps, 8 new
samples a step, 32 pooled per task, a 10% budget), printing the samples replayed from each
task, the events, and for lagged MIR how many events replayed the candidates its two probes
measured. Also the paced schedule when its signal falls to nothing after step 10 (20 events
over 100 steps, ``replay.mssr.pace_floor`` 0.25): how many events it spends.

    .venv/bin/python benchmarks/plan_shapes.py --strategies mir,leitner,fixed --samples-per-event 2

To see what an older version of the code did, copy this file into a checkout of it and run it
there (it reads that checkout's ``mssr`` and ``tests/planner_sim.py``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mssr.config import ReplayConfig  # noqa: E402
from mssr.replay import ReplayPlanner  # noqa: E402
from mssr.schedulers import PacedScheduler  # noqa: E402
from tests.planner_sim import simulate  # noqa: E402

TASKS, STEPS, BATCH, POOL = 11, 16, 8, 32


def replays_by_task(strategy: str, samples_per_event: int, budget: float) -> dict:
    cfg = ReplayConfig(strategy=strategy, budget=budget, pool_per_task=POOL, samples_per_event=samples_per_event)
    planner = ReplayPlanner(cfg, seed=0, total_new_samples=TASKS * STEPS * BATCH, replay_steps=(TASKS - 1) * STEPS)
    plans = simulate(planner, tasks=TASKS, steps=STEPS, batch=BATCH)
    events = [i for i, p in enumerate(plans) if p.replay]
    measured = sum(1 for e in events if e and set(plans[e].replay) <= set(plans[e - 1].probe))
    per_task = np.bincount(np.concatenate([p.replay for p in plans if p.replay]) // 1000, minlength=TASKS)
    return {"events": len(events), "replayed": int(per_task.sum()), "per_task": per_task.tolist(), "measured": measured}


def paced_spend_when_the_signal_falls() -> int:
    class Pool:
        forgotten = 0.0

        def mean_retention(self, now):
            return 1.0 - self.forgotten

    sched = PacedScheduler(ReplayConfig())
    sched.on_budget(budget=80, samples_per_event=4, replay_steps=100)  # 20 events
    pool, spent = Pool(), 0
    for t in range(100):
        pool.forgotten = 0.3 if t < 10 else 0.0
        if sched.is_due(t, pool):
            sched.on_replay(t)
            spent += 1
    return spent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strategies", default="fixed,mir,leitner,observed-loss,sure,mssr")
    ap.add_argument("--samples-per-event", type=int, default=2)
    ap.add_argument("--budget", type=float, default=0.1)
    args = ap.parse_args()
    for strategy in args.strategies.split(","):
        r = replays_by_task(strategy, args.samples_per_event, args.budget)
        line = f"{strategy:14s} events {r['events']:3d}  replayed {r['replayed']:4d}  by task {r['per_task']}"
        if strategy == "mir":
            line += f"  events replaying measured candidates {r['measured']}"
        print(line)
    print(f"paced schedule, signal nil after step 10: {paced_spend_when_the_signal_falls()} of 20 events spent")


if __name__ == "__main__":
    main()
