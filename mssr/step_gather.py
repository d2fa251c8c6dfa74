"""One step's observations of every rank, gathered on rank 0 through the training process group.

The memory actor then gets one message per step, whatever the number of ranks: with one
message per rank, a run of 128 ranks sent the actor 128 small messages a step, and Ray's
per-message cost (not the bookkeeping) bounded its throughput. Every rank packs its
observation into one float64 vector whose length all ranks compute alike (from the per-rank
batch size and the step's plan), and rank 0 gathers them with one ``dist.gather`` on the
group DDP already synchronises every step. The replay and probe ids are not sent: rank 0
reads every rank's share from the plan (rank r gets ``ids[r::world]``).

    observations = gather_step(mine, plan, rank, world, capacity=per_rank_batch)
    if observations is not None:          # rank 0: every rank's observation, in rank order
        actor.observe.remote(step, observations)
"""

from __future__ import annotations

import numpy as np

from mssr.distributed import gather_to_first
from mssr.replay import ReplayPlan, StepObservation

MAX_EXACT_ID = 2**53  # sample ids travel as float64, exact below this


def _sizes(plan: ReplayPlan, world: int, capacity: int) -> dict[str, int]:
    """Field lengths of the packed vector: the largest share any rank can have."""
    replay, probe = -(-len(plan.replay) // world), -(-len(plan.probe) // world)
    return {
        "n_new": 1,
        "new_ids": capacity,
        "new_losses": capacity,
        "replay_losses": replay,
        "probe_losses": probe,
        "probe_correct": probe,
    }


def pack(obs: StepObservation, plan: ReplayPlan, world: int, capacity: int) -> np.ndarray:
    """One rank's observation as a vector of the length every rank computes for this plan."""
    n_new = len(obs.new_ids)
    if n_new > capacity:
        raise ValueError(f"{n_new} new rows in a step, more than the per-rank batch of {capacity}")
    new_ids = np.asarray(obs.new_ids, dtype=np.int64)
    if n_new and int(np.abs(new_ids).max()) >= MAX_EXACT_ID:
        raise ValueError(f"sample id {int(np.abs(new_ids).max())} is too large to gather exactly (< 2^53)")
    values = {
        "n_new": [n_new],
        "new_ids": new_ids,
        "new_losses": obs.new_losses,
        "replay_losses": obs.replay_losses,
        "probe_losses": obs.probe_losses,
        "probe_correct": obs.probe_correct,
    }
    sizes = _sizes(plan, world, capacity)
    out = np.zeros(sum(sizes.values()), dtype=np.float64)
    start = 0
    for name, size in sizes.items():
        v = np.asarray(values[name], dtype=np.float64).reshape(-1)
        out[start : start + v.size] = v
        start += size
    return out


def unpack(rows: np.ndarray, plan: ReplayPlan, world: int, capacity: int, update_norm: float) -> list[StepObservation]:
    """Every rank's observation from the gathered vectors (one row per rank); ``update_norm``
    is rank 0's (the only rank that measures it)."""
    sizes = _sizes(plan, world, capacity)
    observations = []
    for r in range(world):
        fields, start = {}, 0
        for name, size in sizes.items():
            fields[name] = rows[r, start : start + size]
            start += size
        n_new = int(fields["n_new"][0])
        replay_ids, probe_ids = plan.share(r, world)
        observations.append(
            StepObservation(
                new_ids=fields["new_ids"][:n_new].astype(np.int64),
                new_losses=fields["new_losses"][:n_new],
                replay_ids=list(replay_ids),
                replay_losses=fields["replay_losses"][: len(replay_ids)],
                probe_ids=list(probe_ids),
                probe_losses=fields["probe_losses"][: len(probe_ids)],
                probe_correct=fields["probe_correct"][: len(probe_ids)].astype(bool),
                update_norm=update_norm if r == 0 else 0.0,
            )
        )
    return observations


def gather_step(
    obs: StepObservation, plan: ReplayPlan, rank: int, world: int, capacity: int
) -> list[StepObservation] | None:
    """Rank 0: every rank's observation of this step, in rank order; other ranks: None.
    Every rank must call it at the same step (a collective, ``mssr.distributed.gather_to_first``)."""
    rows = gather_to_first(pack(obs, plan, world, capacity), rank, world)
    if rows is None:
        return None
    return unpack(rows, plan, world, capacity, obs.update_norm)
