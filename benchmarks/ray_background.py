"""What Ray's resident processes cost a training loop that uses every core: the bare loop alone
against the same loop beside a local Ray holding N idle actors.

A run of ``mssr run`` keeps about a dozen Ray processes alive besides its training workers
(the Train controller, placement-group cleaner, synchronisation actor and preemption
watcher, the Data split coordinators and stats actors, the memory actor, the raylet, GCS
and dashboard agent). Each idles at about 1% of a core but wakes many times a second; when
every core runs one of the step's threads, each wake-up stalls a parallel kernel. This
script measures that cost with no pipeline at all: ``pipeline_overhead.bare_loop`` (one
process, no Ray) alone, then with Ray started as ``mssr run`` starts it and ``--actors``
idle actors (num_cpus=0), in turn, ``--repeats`` times; medians and their ratio, as JSON.

    .venv/bin/python benchmarks/ray_background.py                       # 12 actors, 3 repeats, ~8 min
    .venv/bin/python benchmarks/ray_background.py --actors 4 --repeats 2 --train-size 16
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
from pathlib import Path

import ray
from machine import describe
from pipeline_overhead import bare_loop

from mssr.config import load_config


@ray.remote(num_cpus=0)
class Idle:
    def ready(self) -> int:
        return os.getpid()


def beside_idle_actors(cfg, threads: int, actors: int) -> dict:
    ray.init(
        num_cpus=os.cpu_count() or 1,
        include_dashboard=False,
        logging_level=logging.WARNING,
        logging_config=ray.LoggingConfig(encoding="TEXT", log_level="ERROR"),
    )  # as pipelines.run
    try:
        idle = [Idle.remote() for _ in range(actors)]
        ray.get([a.ready.remote() for a in idle])
        time.sleep(3)  # let their start-up settle
        return bare_loop(cfg, threads)
    finally:
        ray.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/compare.yaml")
    ap.add_argument("--train-size", type=int, default=32, help="rows per task (5 tasks)")
    ap.add_argument("--actors", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default="benchmarks/results/ray_background.json")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cores = os.cpu_count() or 1
    cfg = load_config(args.config, [f"stream.train_size={args.train_size}", "stream.test_size=4"])
    alone_key, beside_key = "bare loop alone", f"bare loop beside Ray + {args.actors} idle actors"
    runs: dict[str, list[dict]] = {alone_key: [], beside_key: []}
    for r in range(args.repeats):
        runs[alone_key].append(bare_loop(cfg, cores))
        runs[beside_key].append(beside_idle_actors(cfg, cores, args.actors))
        print(
            f"repeat {r + 1}/{args.repeats}: "
            + ", ".join(f"{k} {v[-1]['tokens_per_s']:.0f} tok/s" for k, v in runs.items()),
            flush=True,
        )
    medians = {k: statistics.median(x["tokens_per_s"] for x in v) for k, v in runs.items()}
    ratio = medians[beside_key] / medians[alone_key]
    print(f"\n{describe()}; {cores} training threads, {args.train_size} rows x 5 tasks, {args.repeats} repeats")
    for k in runs:
        print(f"{k:<44}{medians[k]:>8.0f} tok/s")
    print(f"beside Ray's idle actors: {ratio:.3f} x alone")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "machine": describe(),
                "cores": cores,
                "actors": args.actors,
                "medians_tokens_per_s": medians,
                "ratio": ratio,
                "runs": runs,
            },
            indent=1,
        )
    )
    print(f"written to {out}")


if __name__ == "__main__":
    main()
