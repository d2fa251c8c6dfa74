"""Throughput of the shared memory actor when R ranks train: one message per step with every rank's losses.

Builds one memory actor (``pipelines.memory_actor.MemoryCoordinator``, the memory actor's
code, in a benchmark-only subclass) whose pool holds POOL samples, filled directly with
``MemoryState.add`` in 10 calls (as 10 finished tasks) rather than through the actor's API.
Then, for each R in --ranks, a sender actor plays rank 0 of a run with R ranks: for STEPS
steps it sends, without waiting, the message rank 0 sends after gathering the step
(``mssr.step_gather``): R observations of PER_RANK new-sample losses of the current
task plus REPLAYED losses of pool ids, as numpy arrays like ``step_gather.unpack`` makes them;
then a final ``plan.remote(STEPS)``. Wall time runs from the start signal to the moment the
actor applied the last step; the actor's own ``bookkeeping_seconds`` at that moment is the
numpy/Python bookkeeping, the rest is Ray message handling (and, on a small machine, the
sender competing for the same cores). Updates are the losses applied (new + replayed).
Medians of REPEATS. The gather itself runs on the training group (gloo or NCCL) and is not
part of this figure.

    .venv/bin/python benchmarks/actor_throughput.py                            # pool 10^6, R 8 32 128
    .venv/bin/python benchmarks/actor_throughput.py --pool 10000000
    .venv/bin/python benchmarks/actor_throughput.py --pool 100000 --steps 20 --repeats 1 --json /tmp/at.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import ray
from machine import describe

from mssr.config import ReplayConfig
from mssr.replay import StepObservation
from pipelines.memory_actor import MemoryCoordinator

TARGET = 1e6  # updates/s at a pool of 10^7


@ray.remote(num_cpus=0)
class BenchMemoryActor(MemoryCoordinator):
    """MemoryActor plus benchmark-only methods: fill the pool, reset between runs, record
    when the last step was applied."""

    def fill(self, pool: int, tasks: int = 10) -> float:
        t = time.perf_counter()
        rng = np.random.default_rng(1)
        bounds = np.linspace(0, pool, tasks + 1, dtype=np.int64)
        for k in range(tasks):
            ids = np.arange(bounds[k], bounds[k + 1], dtype=np.int64)
            self.planner.memory.add(ids, task=k, losses=rng.gamma(2.0, 0.3, ids.size), now=k * 100.0)
        return time.perf_counter() - t

    def reset(self, task_index: int, last_step: int) -> None:
        self.applied_through, self.bookkeeping_seconds = -1, 0.0
        self.pending.clear()
        self.plans.clear()
        self.planner.start_task(task_index)  # a fresh reservoir for this run's new ids
        self.started = {task_index}
        self.last_step, self.done = last_step, None

    async def observe(self, step: int, observations: list) -> None:
        await super().observe(step, observations)
        if self.done is None and self.applied_through >= self.last_step:
            self.done = (time.time(), self.bookkeeping_seconds)

    def done_at(self) -> tuple:
        return self.done


@ray.remote(num_cpus=0)
class Rank0:
    """Rank 0 of a simulated run: every step's message is built before the start signal."""

    def prepare(self, actor, ranks: int, steps: int, per_rank: int, replayed: int, pool: int, new_base: int) -> None:
        self.actor, self.steps, self.messages = actor, steps, []
        rng = np.random.default_rng(ranks)
        for s in range(steps):
            step = []
            for rank in range(ranks):
                first = new_base + (s * 1_000_000 + rank) * per_rank  # unique new ids (fewer than 10^6 ranks)
                step.append(
                    StepObservation(
                        np.arange(first, first + per_rank, dtype=np.int64),
                        rng.gamma(2.0, 0.3, per_rank),
                        rng.integers(0, pool, replayed).tolist(),
                        rng.gamma(2.0, 0.3, replayed),
                        update_norm=1.0 if rank == 0 else 0.0,
                    )
                )
            self.messages.append(step)

    def send(self) -> float:
        t = time.perf_counter()
        for s, observations in enumerate(self.messages):
            self.actor.observe.remote(s, observations)
        issue = time.perf_counter() - t
        ray.get(self.actor.plan.remote(self.steps))  # returns once every step is applied
        return issue


def run_once(actor, sender, r: int, args, task_index: int) -> dict:
    ray.get(actor.reset.remote(task_index, args.steps - 1))
    new_base = args.pool + task_index * 10**12  # new ids of the current task, never in the pool
    ray.get(sender.prepare.remote(actor, r, args.steps, args.per_rank, args.replayed, args.pool, new_base))
    t0 = time.time()
    issue = ray.get(sender.send.remote())
    t_plan = time.time() - t0
    t_done, bookkeeping = ray.get(actor.done_at.remote())
    return {"seconds": t_done - t0, "seconds_to_plan": t_plan, "bookkeeping_s": bookkeeping, "sender_issue_s": issue}


def init_ray(tries: int = 5) -> None:
    for attempt in range(tries):  # on a loaded machine the raylet sometimes times out at start
        try:
            return ray.init(num_cpus=2, include_dashboard=False)
        except Exception:
            ray.shutdown()
            if attempt == tries - 1:
                raise


def _measure(actor, sender, ranks: int, args, first_task: int) -> dict:
    """``args.repeats`` runs at ``ranks`` ranks (each a task of its own): their medians."""
    runs = [run_once(actor, sender, ranks, args, first_task + i) for i in range(args.repeats)]
    med = {key: float(np.median([x[key] for x in runs])) for key in runs[0]}
    sec = med["seconds"]
    updates = ranks * args.steps * (args.per_rank + args.replayed)
    return {
        "ranks": ranks,
        **med,
        "updates_per_s": updates / sec,
        "steps_per_s": args.steps / sec,
        "bookkeeping_fraction": med["bookkeeping_s"] / sec,
        "runs": runs,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, nargs="+", default=[8, 32, 128])
    ap.add_argument("--pool", type=int, default=1_000_000)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--per-rank", type=int, default=64, help="new-sample losses per rank per step")
    ap.add_argument("--replayed", type=int, default=4, help="replayed pool ids per rank per step")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default="benchmarks/results/actor_throughput.json")
    args = ap.parse_args()

    init_ray()
    try:
        actor = BenchMemoryActor.remote(ReplayConfig(), 0, max(args.ranks) * args.steps * args.per_rank)
        fill_s = ray.get(actor.fill.remote(args.pool))
        sender = Rank0.remote()
        rows, task_index = [], 10
        for r in args.ranks:
            rows.append(_measure(actor, sender, r, args, task_index))
            task_index += args.repeats
            print(f"{r} ranks: {rows[-1]['updates_per_s']:,.0f} updates/s", flush=True)
        stats = ray.get(actor.stats.remote())
    finally:
        ray.shutdown()

    print(
        f"pool {args.pool:,} (filled in {fill_s:.1f}s, actor reports {stats['pool_size']:,}), "
        f"{args.steps} steps x ({args.per_rank} new + {args.replayed} replayed) per rank, one message per step, "
        f"median of {args.repeats}; target >= {TARGET:,.0f} updates/s at a pool of 10^7"
    )
    print(f"{'ranks':>6} {'updates/s':>12} {'steps/s':>9} {'bookkeeping':>12} {'seconds':>8}")
    for x in rows:
        print(
            f"{x['ranks']:>6} {x['updates_per_s']:>12,.0f} {x['steps_per_s']:>9.1f} "
            f"{x['bookkeeping_fraction']:>11.0%} {x['seconds']:>8.2f}"
        )
    machine = {"machine": describe(), "loadavg": os.getloadavg(), "numpy": np.__version__}
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"args": vars(args), "target_updates_per_s": TARGET, "fill_s": fill_s, "machine": machine, "results": rows},
            indent=1,
        )
    )
    print(f"written to {out}")


if __name__ == "__main__":
    main()
