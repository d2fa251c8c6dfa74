"""MSSR's bookkeeping cost on a large replay pool: update latency and replay-draw latency.

Builds a memory state of POOL samples (10 tasks, varied strengths and ages), then times,
REPEATS times each, the spacing-effect update of a batch of UPDATE losses and a draw of
DRAW ids with every sampler. Prints medians and 90th percentiles in milliseconds and
writes them as JSON.

    .venv/bin/python benchmarks/bookkeeping.py                       # pool 10^6, update 4096, draw 64
    .venv/bin/python benchmarks/bookkeeping.py --pool 10000000 --json /tmp/bk.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from mssr.config import ReplayConfig
from mssr.memory import MemoryState
from mssr.samplers import StrengthSampler, TaskBalancedSampler, UniformSampler


def build_pool(n: int, rng: np.random.Generator) -> MemoryState:
    cfg = ReplayConfig().mssr
    mem = MemoryState(cfg)
    per_task = n // 10
    for k in range(10):
        ids = np.arange(k * per_task, (k + 1) * per_task, dtype=np.int64)
        mem.add(ids, task=k, losses=rng.gamma(2.0, 0.3, size=ids.size), now=k * 100.0)
    return mem


def timed(fn, repeats: int) -> dict:
    fn()  # warm-up
    ms = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ms.append((time.perf_counter() - t) * 1e3)
    return {"median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)), "repeats": repeats}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", type=int, default=1_000_000)
    ap.add_argument("--update", type=int, default=4096)
    ap.add_argument("--draw", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--json", default="benchmarks/results/bookkeeping.json")
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    t = time.perf_counter()
    mem = build_pool(args.pool, rng)
    build_s = time.perf_counter() - t
    now = 1500.0
    cfg = ReplayConfig().mssr
    update_ids = [np.sort(rng.choice(len(mem), size=args.update, replace=False)) for _ in range(8)]
    losses = rng.gamma(2.0, 0.3, size=args.update)
    i = iter(range(10**9))

    results = {
        f"update {args.update} losses": timed(lambda: mem.update(update_ids[next(i) % 8], losses, now), args.repeats),
        f"draw {args.draw}, uniform": timed(lambda: UniformSampler().sample(mem, now, args.draw, rng), args.repeats),
        f"draw {args.draw}, strength": timed(lambda: StrengthSampler(cfg).sample(mem, now, args.draw, rng),
                                             args.repeats),
        f"draw {args.draw}, task-balanced strength": timed(
            lambda: TaskBalancedSampler(StrengthSampler(cfg)).sample(mem, now, args.draw, rng), args.repeats),
        "mean retention": timed(lambda: mem.mean_retention(now), args.repeats),
    }
    print(f"pool {args.pool:,} samples (built in {build_s:.1f}s), {platform.processor() or platform.machine()}")
    for name, r in results.items():
        print(f"  {name:<36} median {r['median_ms']:8.2f} ms   p90 {r['p90_ms']:8.2f} ms")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"pool": args.pool, "machine": platform.machine(), "results": results}, indent=1))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
