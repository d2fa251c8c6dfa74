"""Drive a ReplayPlanner through a synthetic stream, as the memory actor would.

New-sample losses are noisy (seeded); replayed samples are recalled; probed samples get a
loss that grows with the time since their task ended and count as correct while that loss
stays low, so the loss and accuracy triggers have something to react to. Where the planner's
strategy reads reference losses, each task's pool samples get one when it ends, and a replayed
sample's loss is its reference plus an excess growing with its task's age, at a rate that
differs by task (``EXCESS_RATES``), so the forgetting model has something to fit.
"""

import numpy as np

from mssr.replay import ReplayPlanner, StepObservation
from mssr.strategies import reference_pass

EXCESS_RATES = (0.002, 0.02, 0.005)  # excess per step of age, by task index modulo 3


def reference_loss(sample_id: int) -> float:
    return 0.2 + 0.1 * (sample_id % 3)


def simulate(planner: ReplayPlanner, tasks=3, steps=40, batch=4, first_task=0, ranks=1):
    noise = np.random.default_rng(first_task + 17)
    references = reference_pass(planner.cfg, planner.strategy)
    ended: dict[int, float] = {}
    plans = []
    for k in range(first_task, first_task + tasks):
        planner.start_task(k)
        for i in range(steps):
            plan = planner.plan()
            plans.append(plan)
            new = [k * 1000 + i * batch + j for j in range(batch)]
            new_losses = (1.0 / (1 + i) + noise.gamma(2.0, 0.2, size=batch)).tolist()
            replay_losses = [0.3] * len(plan.replay)
            if references:
                replay_losses = [
                    reference_loss(j)
                    + EXCESS_RATES[(j // 1000) % 3] * (planner.now - planner.memory.task_end(j // 1000))
                    for j in plan.replay
                ]
            probe = plan.probe
            age = np.array([planner.now - ended.get(i // 1000, 0.0) for i in probe], dtype=float)
            probe_losses = (0.2 + 0.02 * age + 0.1 * (np.asarray(probe) % 3)).tolist()
            observations = [
                StepObservation(
                    new[r::ranks],
                    new_losses[r::ranks],
                    plan.replay[r::ranks],
                    replay_losses[r::ranks],
                    probe[r::ranks],
                    probe_losses[r::ranks],
                    [x < 0.8 for x in probe_losses[r::ranks]],
                    update_norm=0.01 * (1 + i % 3) if r == 0 else 0.0,
                )
                for r in range(ranks)
            ]
            planner.observe_step(observations)
        pooled = planner.end_task(k)
        ended[k] = planner.now
        if references:
            planner.set_reference(pooled, [reference_loss(j) for j in pooled])
    return plans


def replayed(plans) -> int:
    return sum(len(p.replay) for p in plans)
