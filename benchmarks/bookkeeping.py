"""MSSR's bookkeeping cost as the replay pool grows: update latency, replay-draw latency.

For each pool size (10 tasks, varied strengths and ages) times, REPEATS times each, the
spacing-effect update of a batch of UPDATE losses, a draw of DRAW ids with every sampler,
and the pool's mean retention (the MSSR scheduler's early-replay check, made every step).
Prints medians and 90th percentiles in milliseconds, updates per second, and the targets
(a strength draw <= 10 ms and >= 10^6 updates/s at 10^7 samples); writes JSON.

    .venv/bin/python benchmarks/bookkeeping.py                              # pools 10^4 .. 10^7
    .venv/bin/python benchmarks/bookkeeping.py --pools 1000000 --json /tmp/bk.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from machine import describe

from mssr.config import ReplayConfig
from mssr.memory import MemoryState
from mssr.samplers import StrengthSampler, TaskBalancedSampler, UniformSampler

TARGET_DRAW_MS, TARGET_UPDATES_PER_S, TARGET_POOL = 10.0, 1e6, 10_000_000


def build_pool(n: int, rng: np.random.Generator) -> MemoryState:
    """10 tasks of n/10 samples, each task 100 steps older than the next, some replayed since."""
    mem = MemoryState(ReplayConfig().mssr)
    per_task = n // 10
    for k in range(10):
        ids = np.arange(k * per_task, (k + 1) * per_task, dtype=np.int64)
        mem.add(ids, task=k, losses=rng.gamma(2.0, 0.3, size=ids.size), now=k * 100.0)
    replayed = np.sort(rng.choice(len(mem), size=len(mem) // 5, replace=False))
    mem.update(mem.ids[replayed], rng.gamma(2.0, 0.2, size=replayed.size), now=1000.0)
    return mem


def timed(fn, repeats: int) -> dict:
    fn()  # warm-up
    ms = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ms.append((time.perf_counter() - t) * 1e3)
    return {"median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)), "repeats": repeats}


def measure(pool: int, update: int, draw: int, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    mem = build_pool(pool, rng)
    build_s = time.perf_counter() - t
    now, cfg = 1500.0, ReplayConfig().mssr
    batches = [mem.ids[np.sort(rng.choice(len(mem), size=update, replace=False))] for _ in range(8)]
    losses = rng.gamma(2.0, 0.3, size=update)
    i = iter(range(10**9))
    results = {
        f"update {update} losses": timed(lambda: mem.update(batches[next(i) % 8], losses, now), repeats),
        f"draw {draw}, uniform": timed(lambda: UniformSampler().sample(mem, now, draw, rng), repeats),
        f"draw {draw}, strength": timed(lambda: StrengthSampler(cfg).sample(mem, now, draw, rng), repeats),
        f"draw {draw}, task-balanced strength": timed(
            lambda: TaskBalancedSampler(StrengthSampler(cfg)).sample(mem, now, draw, rng), repeats
        ),
        "mean retention": timed(lambda: mem.mean_retention(now), repeats),
    }
    updates_per_s = update / (results[f"update {update} losses"]["median_ms"] / 1e3)
    return {"pool": pool, "build_seconds": round(build_s, 2), "updates_per_s": updates_per_s, "results": results}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pools", default="10000,100000,1000000,10000000", help="comma-separated pool sizes")
    ap.add_argument("--update", type=int, default=4096, help="losses per update (one step of all ranks)")
    ap.add_argument("--draw", type=int, default=64, help="ids per replay draw")
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--json", default="benchmarks/results/bookkeeping.json")
    args = ap.parse_args()

    machine = describe()
    print(machine)
    rows = []
    for pool in (int(float(p)) for p in args.pools.split(",")):
        row = measure(pool, args.update, args.draw, args.repeats)
        rows.append(row)
        print(
            f"pool {pool:>12,} samples (built in {row['build_seconds']}s): {row['updates_per_s'] / 1e6:.1f} M updates/s"
        )
        for name, r in row["results"].items():
            print(f"  {name:<36} median {r['median_ms']:8.3f} ms   p90 {r['p90_ms']:8.3f} ms")
    at_target = next((r for r in rows if r["pool"] == TARGET_POOL), None)
    if at_target:
        draw_ms = at_target["results"][f"draw {args.draw}, strength"]["median_ms"]
        print(
            f"at 10^7 samples: strength draw {draw_ms:.2f} ms (target <= {TARGET_DRAW_MS:g}), "
            f"{at_target['updates_per_s'] / 1e6:.1f} M updates/s (target >= 1)"
        )
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine, "update": args.update, "draw": args.draw, "pools": rows}, indent=1))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
