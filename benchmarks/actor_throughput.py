"""Throughput of the shared memory actor when R simulated ranks send their observations at once.

Builds one memory actor (``pipelines.memory_actor.MemoryCoordinator``, the memory actor's
code, in a benchmark-only subclass) whose pool holds POOL samples, filled directly with ``MemoryState.add`` in 10 calls
(as 10 finished tasks) rather than through the actor's API. Then, for each R in --ranks, R
simulated ranks (actors with num_cpus=0, one process each; --ranks-per-process N hosts N per
process to save memory on a small machine, each rank still sending its own messages) each
send STEPS observations without waiting: PER_RANK new-sample losses of the current task plus
REPLAYED losses of pool ids, as lists like the training loop sends them; then a final
``plan.remote(STEPS)``. Wall time runs from the start signal to the moment the actor applied
the last step; the actor's own ``bookkeeping_seconds`` at that moment is the numpy/Python
bookkeeping, the rest is Ray message handling (and, on a small machine, the senders
competing for the same cores). Medians of REPEATS.

VARIANT (not the project's protocol): with --steps-per-message K > 1 each rank packs K steps'
``observe`` calls into one remote call of the benchmark-only method ``observe_many``, which
runs the actor's unchanged ``observe`` for each in turn.

    .venv/bin/python benchmarks/actor_throughput.py                            # pool 10^6, R 8 32 128
    .venv/bin/python benchmarks/actor_throughput.py --pool 10000000 --steps-per-message 1 8
    .venv/bin/python benchmarks/actor_throughput.py --pool 100000 --steps 20 --repeats 1 --ranks-per-process 8 \
        --steps-per-message 1 8 --json /tmp/at.json                          # a quick check on a small machine
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
    when the last step was applied, and the batched-message variant."""

    def fill(self, pool: int, tasks: int = 10) -> float:
        t = time.perf_counter()
        rng = np.random.default_rng(1)
        bounds = np.linspace(0, pool, tasks + 1, dtype=np.int64)
        for k in range(tasks):
            ids = np.arange(bounds[k], bounds[k + 1], dtype=np.int64)
            self.planner.memory.add(ids, task=k, losses=rng.gamma(2.0, 0.3, ids.size), now=k * 100.0)
        return time.perf_counter() - t

    def reset(self, world_size: int, task_index: int, last_step: int) -> None:
        self.world_size, self.applied_through, self.bookkeeping_seconds = world_size, -1, 0.0
        self.pending.clear()
        self.plans.clear()
        self.planner.start_task(task_index)  # a fresh reservoir for this run's new ids
        self.started = {task_index}
        self.last_step, self.done = last_step, None

    async def observe(self, step: int, rank: int, observation: StepObservation) -> None:
        await super().observe(step, rank, observation)
        if self.done is None and self.applied_through >= self.last_step:
            self.done = (time.time(), self.bookkeeping_seconds)

    async def observe_many(self, items: list) -> None:  # VARIANT: K steps of one rank in one message
        for step, rank, observation in items:
            await self.observe(step, rank, observation)

    def done_at(self) -> tuple:
        return self.done


@ray.remote(num_cpus=0)
class Ranks:
    """Simulated training ranks (one per process by default); observations are built before
    the start signal. A process hosting several ranks sends each step for all of them in turn."""

    def prepare(self, actor, ranks: list, steps: int, per_rank: int, replayed: int, pool: int,
                new_base: int, k: int) -> None:
        self.actor, self.steps, self.ranks, self.k, self.msgs = actor, steps, ranks, k, []
        for rank in ranks:
            rng = np.random.default_rng(rank)
            mine = []
            for s in range(steps):
                first = new_base + (s * 1_000_000 + rank) * per_rank  # unique new ids (fewer than 10^6 ranks)
                mine.append((s, rank, StepObservation(
                    list(range(first, first + per_rank)), rng.gamma(2.0, 0.3, per_rank).tolist(),
                    rng.integers(0, pool, replayed).tolist(), rng.gamma(2.0, 0.3, replayed).tolist(),
                    update_norm=1.0 if rank == 0 else 0.0)))
            self.msgs.append(mine if k == 1 else [mine[i:i + k] for i in range(0, steps, k)])

    def send(self) -> float:
        t = time.perf_counter()
        for i in range(len(self.msgs[0])):
            for mine in self.msgs:
                if self.k == 1:
                    self.actor.observe.remote(*mine[i])
                else:
                    self.actor.observe_many.remote(mine[i])
        issue = time.perf_counter() - t
        ray.get([self.actor.plan.remote(self.steps) for _ in self.ranks])  # returns once every step is applied
        return issue


def run_once(actor, procs, r: int, args, k: int, task_index: int) -> dict:
    ray.get(actor.reset.remote(r, task_index, args.steps - 1))
    new_base = args.pool + task_index * 10**12  # new ids of the current task, never in the pool
    groups = [list(range(i, min(r, i + args.ranks_per_process))) for i in range(0, r, args.ranks_per_process)]
    ray.get([p.prepare.remote(actor, g, args.steps, args.per_rank, args.replayed, args.pool, new_base, k)
             for p, g in zip(procs, groups)])
    t0 = time.time()
    issue = ray.get([p.send.remote() for p in procs[:len(groups)]])
    t_plan = time.time() - t0
    t_done, bookkeeping = ray.get(actor.done_at.remote())
    return {"seconds": t_done - t0, "seconds_to_plan": t_plan, "bookkeeping_s": bookkeeping,
            "sender_issue_s_median": float(np.median(issue))}


def init_ray(tries: int = 5) -> None:
    for attempt in range(tries):  # on a loaded machine the raylet sometimes times out at start
        try:
            return ray.init(num_cpus=2, include_dashboard=False)
        except Exception:
            ray.shutdown()
            if attempt == tries - 1:
                raise


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, nargs="+", default=[8, 32, 128])
    ap.add_argument("--pool", type=int, default=1_000_000)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--per-rank", type=int, default=64, help="new-sample losses per rank per step")
    ap.add_argument("--replayed", type=int, default=4, help="replayed pool ids per rank per step")
    ap.add_argument("--steps-per-message", type=int, nargs="+", default=[1], help="K > 1: the batched VARIANT")
    ap.add_argument("--ranks-per-process", type=int, default=1,
                    help="simulated ranks per sender process (>1 saves memory on a small machine)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default="benchmarks/results/actor_throughput.json")
    args = ap.parse_args()

    init_ray()
    try:
        actor = BenchMemoryActor.remote(ReplayConfig(), 0, 1, max(args.ranks) * args.steps * args.per_rank)
        fill_s = ray.get(actor.fill.remote(args.pool))
        procs = [Ranks.remote() for _ in range(-(-max(args.ranks) // args.ranks_per_process))]
        ray.get([p.__ray_ready__.remote() for p in procs])
        rows, task_index = [], 10
        for k in args.steps_per_message:
            for r in args.ranks:
                runs = []
                for _ in range(args.repeats):
                    runs.append(run_once(actor, procs, r, args, k, task_index))
                    task_index += 1
                med = {key: float(np.median([x[key] for x in runs])) for key in runs[0]}
                sec = med["seconds"]
                rows.append({"ranks": r, "steps_per_message": k, "variant": k > 1, **med,
                             "updates_per_s": r * args.steps * args.per_rank / sec, "steps_per_s": args.steps / sec,
                             "messages_per_s": r * -(-args.steps // k) / sec,
                             "bookkeeping_fraction": med["bookkeeping_s"] / sec, "runs": runs})
        stats = ray.get(actor.stats.remote())
    finally:
        ray.shutdown()

    print(f"pool {args.pool:,} (filled in {fill_s:.1f}s, actor reports {stats['pool_size']:,}), "
          f"{args.steps} steps x {args.per_rank} new + {args.replayed} replayed per rank, "
          f"{args.ranks_per_process} rank(s) per sender process, "
          f"median of {args.repeats}; target >= {TARGET:,.0f} updates/s at a pool of 10^7")
    print(f"{'ranks':>6} {'K':>3} {'updates/s':>12} {'steps/s':>9} {'messages/s':>11} "
          f"{'bookkeeping':>12} {'seconds':>8}")
    for x in rows:
        print(f"{x['ranks']:>6} {x['steps_per_message']:>3} {x['updates_per_s']:>12,.0f} {x['steps_per_s']:>9.1f} "
              f"{x['messages_per_s']:>11,.0f} {x['bookkeeping_fraction']:>11.0%} {x['seconds']:>8.2f}"
              + ("   VARIANT: K steps per message" if x["variant"] else ""))
    machine = {"machine": describe(), "loadavg": os.getloadavg(), "numpy": np.__version__}
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "target_updates_per_s": TARGET, "fill_s": fill_s,
                               "machine": machine, "results": rows}, indent=1))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
