"""What the Ray pipeline costs over a bare training loop: training tokens/s, side by side.

The pipeline is ``mssr run`` itself (``pipelines.run.run_stream``: Ray Data feeding, Ray
Train workers, the memory actor, MSSR replay, MLflow logging) with 1 worker on all cores
and with 2 workers on one core each; its tokens/s is the tokens trained (new + replayed,
padding aside) over rank 0's wall time in the training loops (evaluation aside). The bare
loop is one process, no Ray: the same model, LoRA, optimizer, gradient clipping, rows in the
same order, batch and steps, on all cores. Then the same pair with one core fewer for training
(a bare loop on cores-1 threads, the pipeline's 1 worker on cores-1 CPUs), which leaves a core
to Ray's own processes: each Ray process (the Train controller, the Data split coordinators,
the memory actor, the raylet, ...) wakes many times a second, and on a machine whose every
core runs a training thread each wake-up stalls the step's parallel kernels. They run in
turn, ``--repeats`` times; the medians and their ratios are printed with where the
pipeline's time went (waiting for batches, waiting for the replay plan), and written as JSON.

    .venv/bin/python benchmarks/pipeline_overhead.py                   # 3 repeats, ~45 min on 2 cores
    .venv/bin/python benchmarks/pipeline_overhead.py --repeats 1 --train-size 32
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from machine import describe

from mssr.config import load_config
from mssr.losses import per_sample_loss
from mssr.models import load_model
from mssr.optim import autocast_context, build_optimizer
from mssr.tasks import load_stream
from mssr.tokenize import PromptEncoder, collate, encoder_options

TARGET = 0.9  # the pipeline's tokens/s over the bare loop's


def bare_loop(cfg, threads: int, after_task=None, before=None) -> dict:
    """One process, no Ray: each task's rows in the pipeline's seeded order, global batches.
    ``before(model, encoder, tasks)`` and ``after_task(k, model, encoder, tasks)``, if given,
    run before training and after each task (not timed)."""
    torch.set_num_threads(threads)
    model, tok = load_model(cfg.model, seed=cfg.seed)
    encoder = PromptEncoder(tok, **encoder_options(cfg.stream))
    tasks = load_stream(cfg.stream)
    steps = sum(-(-len(t.train) // cfg.train.batch_size) for t in tasks)
    opt, sched = build_optimizer(model, cfg.train, steps)
    torch.manual_seed(cfg.seed)
    if before is not None:
        before(model, encoder, tasks)
    tokens, wall = 0, 0.0
    for k, task in enumerate(tasks):
        order = np.random.default_rng([cfg.seed, k]).permutation(len(task.train))  # as pipelines.data
        rows = [task.train[i] for i in order]
        enc = encoder.encode_many([r.prompt for r in rows], [r.answer for r in rows])
        for start in range(0, len(rows), cfg.train.batch_size):
            t = time.perf_counter()
            stop = start + cfg.train.batch_size
            b = collate(enc["input_ids"][start:stop], enc["prompt_len"][start:stop], tok.pad_token_id)
            with autocast_context(cfg.train.autocast, "cpu"):
                logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            per_sample_loss(logits, b["labels"]).mean().backward()
            if cfg.train.grad_clip > 0:  # as the pipeline's step
                torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.train.grad_clip)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            wall += time.perf_counter() - t
            tokens += int(b["attention_mask"].sum())
        if after_task is not None:
            after_task(k, model, encoder, tasks)
    return {"tokens": tokens, "seconds": wall, "tokens_per_s": tokens / wall}


def pipeline(config: str, overrides: list[str], workers: int, cores: int, out: Path, name: str) -> dict:
    from pipelines.run import run_stream

    cfg = load_config(
        config,
        [
            *overrides,
            f"train.num_workers={workers}",
            f"train.cpus_per_worker={cores / workers:g}",
            f"run.output_dir={out}",
            f"run.name={name}",
        ],
    )
    summary = run_stream(cfg, log=lambda *a: None)
    waits = summary["pipeline_seconds"]
    tokens = summary["tokens"]["train_new"] + summary["tokens"]["train_replay"]
    return {
        "tokens": tokens,
        "seconds": waits["train_wall"],
        "tokens_per_s": tokens / waits["train_wall"],
        "data_wait_s": waits["data_wait"],
        "plan_wait_s": waits["plan_wait"],
        "median_step_s": summary["median_step_seconds"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/compare.yaml")
    ap.add_argument("--train-size", type=int, default=64, help="rows per task (5 tasks)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--no-spare-core",
        dest="spare_core",
        action="store_false",
        help="skip the runs that leave one core to Ray's own processes",
    )
    ap.add_argument("--json", default="benchmarks/results/pipeline_overhead.json")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cores = os.cpu_count() or 1
    # evaluation is not measured: the smallest test split and answers keep the runs short
    overrides = [f"stream.train_size={args.train_size}", "stream.test_size=4", "eval.max_new_tokens=2"]
    cfg = load_config(args.config, overrides)
    tmp = Path(tempfile.mkdtemp(prefix="mssr-overhead-"))  # the pipeline runs' output, removed at the end
    # (name, what runs, the bare loop it is compared with)
    plan = [
        ("bare loop", lambda r: bare_loop(cfg, cores), "bare loop"),
        ("pipeline, 1 worker", lambda r: pipeline(args.config, overrides, 1, cores, tmp, f"w1-{r}"), "bare loop"),
        ("pipeline, 2 workers", lambda r: pipeline(args.config, overrides, 2, cores, tmp, f"w2-{r}"), "bare loop"),
    ]
    if args.spare_core and cores > 1:  # one core fewer for training, left to Ray's own processes
        plan += [
            ("bare loop, 1 core fewer", lambda r: bare_loop(cfg, cores - 1), "bare loop, 1 core fewer"),
            (
                "pipeline, 1 worker, 1 core fewer",
                lambda r: pipeline(args.config, overrides, 1, cores - 1, tmp, f"s1-{r}"),
                "bare loop, 1 core fewer",
            ),
        ]
    runs: dict[str, list[dict]] = {name: [] for name, _, _ in plan}
    try:
        for r in range(args.repeats):
            for name, run, _ in plan:
                runs[name].append(run(r))
                print(f"repeat {r + 1}/{args.repeats}: {name} {runs[name][-1]['tokens_per_s']:.0f} tok/s", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    medians = {k: statistics.median(x["tokens_per_s"] for x in v) for k, v in runs.items()}
    ratios = {name: medians[name] / medians[base] for name, _, base in plan}
    print(
        f"\n{cfg.model.name}, LoRA, batch {cfg.train.batch_size}, {args.train_size} rows x 5 tasks, "
        f"{args.repeats} repeats\n{describe()}"
    )
    _print_table(runs, medians, ratios, [(name, base) for name, _, base in plan])
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"machine": describe(), "cores": cores, "config": args.config, "overrides": overrides}
    out.write_text(json.dumps({**record, "medians_tokens_per_s": medians, "ratios": ratios, "runs": runs}, indent=1))
    print(f"written to {out}")


def _print_table(runs: dict, medians: dict, ratios: dict, bases: list[tuple[str, str]]) -> None:
    print(f"{'':<34}{'tok/s (median)':>15}{'x bare':>8}{'data wait':>11}{'plan wait':>11}{'train s':>9}")
    for k, v in runs.items():
        waits = [f"{statistics.median(x.get(w, 0.0) for x in v):10.1f}s" for w in ("data_wait_s", "plan_wait_s")]
        print(
            f"{k:<34}{medians[k]:>15.0f}{ratios[k]:>8.3f} {' '.join(waits)}"
            f"{statistics.median(x['seconds'] for x in v):>9.1f}"
        )
    for name, base in bases:
        if name.startswith("pipeline"):
            verdict = "meets" if ratios[name] >= TARGET else "misses"
            print(f"{name}: {ratios[name]:.3f} x the {base} ({verdict} the {TARGET} target)")


if __name__ == "__main__":
    main()
