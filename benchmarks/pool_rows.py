"""The replay pool's rows on a worker: by reference through Ray's object store, against a
dict of token lists (what each worker held when the pool travelled through files).

For each pool size, the driver puts 10 task tables of ``pool/10`` rows (about 100 tokens
each, as ``pipelines.pool.share_task_rows`` does) in the object store; a worker actor then
maps them with ``pipelines.pool.PoolRows`` and fetches ``STEPS`` steps of 64 random pool rows.
It reports the worker's memory before mapping, after mapping and after the fetches (resident
set, and unique set: the pages no other process shares), and the fetch latency (median and
90th percentile). For the dict, the worker builds ``{sample_id: (input_ids, prompt_len)}`` of
the whole pool (as ``read_pool`` did) and is measured the same way. Target: a worker's memory
does not grow with the pool beyond the rows it touches, and a 64-row fetch stays under 10 ms
at 10^6 and 10^7 pooled samples.

    .venv/bin/python benchmarks/pool_rows.py                                # 10^5, 10^6, 10^7; dict to 10^6
    .venv/bin/python benchmarks/pool_rows.py --pools 1000000 --dict-pools 1000000 --json /tmp/pool.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import ray
from machine import describe

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mssr.sample_ids import sample_id  # noqa: E402
from pipelines.pool import PoolRows, rows_by_index  # noqa: E402

TASKS, FETCH, STEPS, TOKENS = 10, 64, 200, 100
TARGET_FETCH_MS = 10.0


def task_table(task: int, rows: int, rng: np.random.Generator) -> pa.Table:
    """``rows`` tokenised rows of about TOKENS tokens (ids below 49152, SmolLM2's vocabulary)."""
    lengths = np.clip(rng.poisson(TOKENS, size=rows), 8, None)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    values = pa.array(rng.integers(0, 49152, size=int(offsets[-1]), dtype=np.int64))
    return pa.table(
        {
            "sample_id": pa.array([sample_id(task, i) for i in range(rows)], type=pa.int64()),
            "input_ids": pa.ListArray.from_arrays(pa.array(offsets), values),
            "prompt_len": pa.array(lengths // 2, type=pa.int64()),
        }
    )


@ray.remote(num_cpus=0)
class PoolWorker:
    """A process like a training worker: it holds the pool one way and fetches steps of rows."""

    def memory(self) -> dict:
        import psutil

        info = psutil.Process().memory_full_info()
        return {"rss_mb": info.rss / 2**20, "uss_mb": info.uss / 2**20}

    def hold(self, refs: list, how: str) -> float:
        """Map the pool (``by_reference``) or copy it into a dict (``dict``); returns seconds."""
        t = time.perf_counter()
        self.pool = PoolRows(refs)
        if how == "by_reference":
            for task in range(len(refs)):
                self.pool._views(task)
        else:
            rows = {}
            for task in range(len(refs)):
                n = len(self.pool._views(task)[2])
                ids = [sample_id(task, i) for i in range(n)]
                rows.update(zip(ids, self.pool.get(ids)))
            self.pool, self.rows = None, rows
        return time.perf_counter() - t

    def fetch(self, steps: list[list[int]]) -> list[float]:
        """Milliseconds per step of FETCH rows."""
        times = []
        for ids in steps:
            t = time.perf_counter()
            got = self.pool.get(ids) if self.pool is not None else [self.rows[i] for i in ids]
            times.append((time.perf_counter() - t) * 1000)
            assert len(got) == len(ids) and all(len(r[0]) >= 8 for r in got)
        return times


def measure(pool: int, how: str, refs: list, rng: np.random.Generator) -> dict:
    worker = PoolWorker.remote()
    before = ray.get(worker.memory.remote())
    hold_s = ray.get(worker.hold.remote(refs, how))
    held = ray.get(worker.memory.remote())
    per_task = pool // TASKS
    steps = [
        [sample_id(int(t), int(r)) for t, r in zip(rng.integers(0, TASKS, FETCH), rng.integers(0, per_task, FETCH))]
        for _ in range(STEPS)
    ]
    times = ray.get(worker.fetch.remote(steps))
    after = ray.get(worker.memory.remote())
    ray.kill(worker)
    return {
        "pool": pool,
        "how": how,
        "hold_seconds": round(hold_s, 2),
        "rss_mb": {k: round(v["rss_mb"], 1) for k, v in (("start", before), ("held", held), ("after_fetch", after))},
        "uss_mb": {k: round(v["uss_mb"], 1) for k, v in (("start", before), ("held", held), ("after_fetch", after))},
        "fetch_ms_median": round(statistics.median(times), 3),
        "fetch_ms_p90": round(float(np.percentile(times, 90)), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pools", default="100000,1000000,10000000", help="pooled samples, comma-separated")
    ap.add_argument("--dict-pools", default="100000,1000000", help="pool sizes also measured as a dict")
    ap.add_argument("--object-store-gb", type=float, default=8.0, help="Ray's object store (10^7 rows: ~4 GB)")
    ap.add_argument("--json", default="benchmarks/results/pool_rows.json")
    args = ap.parse_args()
    pools = [int(p) for p in args.pools.split(",")]
    dict_pools = {int(p) for p in args.dict_pools.split(",") if p}
    machine = describe()
    print(f"machine: {machine}")
    ray.init(num_cpus=2, object_store_memory=int(args.object_store_gb * 2**30), include_dashboard=False)
    rng = np.random.default_rng(0)
    results = []
    for pool in pools:
        t = time.perf_counter()
        refs = [ray.put(rows_by_index(task_table(k, pool // TASKS, rng))) for k in range(TASKS)]
        put_s = time.perf_counter() - t
        for how in ["by_reference"] + (["dict"] if pool in dict_pools else []):
            r = {**measure(pool, how, refs, rng), "driver_put_seconds": round(put_s, 1)}
            results.append(r)
            grown = r["uss_mb"]["after_fetch"] - r["uss_mb"]["start"]
            print(
                f"pool {pool:>9,} {how:>12}: fetch of {FETCH} rows median {r['fetch_ms_median']:.2f} ms "
                f"(p90 {r['fetch_ms_p90']:.2f}); worker memory: unique {r['uss_mb']['start']:.0f} -> "
                f"{r['uss_mb']['after_fetch']:.0f} MB (+{grown:.0f}), resident {r['rss_mb']['start']:.0f} -> "
                f"{r['rss_mb']['after_fetch']:.0f} MB; held in {r['hold_seconds']:.1f} s",
                flush=True,
            )
        del refs
    ray.shutdown()
    ok = all(r["fetch_ms_median"] < TARGET_FETCH_MS for r in results if r["how"] == "by_reference")
    verdict = "met" if ok else "missed"
    print(f"target: a {FETCH}-row fetch under {TARGET_FETCH_MS:.0f} ms by reference at every size: {verdict}")
    out = {"machine": machine, "fetch_rows": FETCH, "steps": STEPS, "tokens_per_row": TOKENS, "results": results}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
