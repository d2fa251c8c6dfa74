"""Latency of rank 0 gathering a step's observations (``mssr.step_gather.gather_step``) over gloo.

Every training step, each rank packs its per-sample losses and rank 0 gathers them with one
``dist.gather`` before sending the memory actor one message. This measures that call alone:
``--ranks`` processes on this machine (gloo, as CPU training uses), each contributing
``--per-rank`` new-sample losses and its share of 4 replayed ones, ``--steps`` gathers after
a barrier each (the first 100 as warm-up); rank 0's median and p90, as JSON.

    .venv/bin/python benchmarks/gather_latency.py                    # 2 ranks, 8 rows each
    .venv/bin/python benchmarks/gather_latency.py --ranks 4 --per-rank 64
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from machine import describe

from mssr.replay import ReplayPlan, StepObservation
from mssr.step_gather import gather_step

WARMUP = 100
PLAN = ReplayPlan(replay=[1, 2, 3, 4])


def _rank(rank: int, args, init_file: str, out_file: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=args.ranks)
    try:
        rng = np.random.default_rng(rank)
        replay, _ = PLAN.share(rank, args.ranks)
        obs = StepObservation(
            np.arange(args.per_rank) + rank * args.per_rank, rng.random(args.per_rank), replay, rng.random(len(replay))
        )
        seconds = []
        for _ in range(WARMUP + args.steps):
            dist.barrier()
            t = time.perf_counter()
            gather_step(obs, PLAN, rank, args.ranks, args.per_rank)
            seconds.append(time.perf_counter() - t)
        if rank == 0:
            Path(out_file).write_text(json.dumps(seconds[WARMUP:]))
    finally:
        dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--per-rank", type=int, default=8, help="new rows per rank per step (the per-rank batch)")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--json", default="benchmarks/results/gather_latency.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out_file = f"{tmp}/seconds.json"
        mp.spawn(_rank, args=(args, f"{tmp}/init", out_file), nprocs=args.ranks, join=True)
        seconds = np.asarray(json.loads(Path(out_file).read_text()))
    median_ms, p90_ms = float(np.median(seconds) * 1e3), float(np.percentile(seconds, 90) * 1e3)
    print(
        f"{describe()}\ngather of a step over gloo, {args.ranks} ranks x {args.per_rank} rows: "
        f"median {median_ms:.3f} ms, p90 {p90_ms:.3f} ms ({args.steps} steps)"
    )
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"machine": describe(), "args": vars(args), "median_ms": median_ms, "p90_ms": p90_ms}, indent=1)
    )
    print(f"written to {out}")


if __name__ == "__main__":
    main()
