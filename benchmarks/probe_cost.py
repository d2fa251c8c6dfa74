"""Cost per row of a probe (a no-grad pass over pool rows: the reference pass and the probing
baselines) against evaluation's forced pass over the same rows, side by side in one process.

    .venv/bin/python benchmarks/probe_cost.py                       # 64 training rows of the long stream
    .venv/bin/python benchmarks/probe_cost.py --rows 128 --repeats 5

Three ways over the same tokenised rows (training rows of every task of the config's stream,
round-robin, as a pool holds them), on the real model (fp32), ``--threads`` threads:

* ``Learner.probe``: batches of ``eval.batch_size`` rows of similar length;
* the same with every row in one batch, padded to the longest (how probes ran before);
* ``mssr.evaluation.forced_pass`` on the rows' prompts and answers (evaluation's cost).

Prints the median seconds per row of ``--repeats`` after a warm-up, and each one's ratio to
the forced pass, and checks that the three give the same losses (to 1e-4 nats).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from machine import describe  # noqa: E402

from mssr.config import load_config  # noqa: E402
from mssr.evaluation import forced_pass  # noqa: E402
from mssr.learner import Learner  # noqa: E402
from mssr.tasks import load_stream  # noqa: E402


def median_seconds(fn, repeats: int) -> tuple[float, object]:
    fn()  # warm-up
    secs, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        secs.append(time.perf_counter() - t)
    return float(np.median(secs)), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/long.yaml")
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, ["train.num_workers=1"])
    tasks = load_stream(cfg.stream)
    examples = []
    for i in range(max(len(t.train) for t in tasks)):
        examples += [t.train[i] for t in tasks if i < len(t.train)]
    examples = examples[: args.rows]
    learner = Learner(cfg, total_steps=1, device=torch.device("cpu"))
    enc = learner.encoder.encode_many([e.prompt for e in examples], [e.answer for e in examples])
    rows = list(zip(enc["input_ids"], enc["prompt_len"]))

    batched, probe = median_seconds(lambda: learner.probe(rows), args.repeats)
    one_batch_cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"batch_size": len(rows)})})
    learner.cfg = one_batch_cfg
    single, old = median_seconds(lambda: learner.probe(rows), args.repeats)
    learner.cfg = cfg
    forced, (_, losses, _) = median_seconds(
        lambda: forced_pass(learner.core, learner.encoder, examples, cfg.eval.batch_size), args.repeats
    )
    worst = max(np.abs(np.array(probe.losses) - losses).max(), np.abs(np.array(old.losses) - losses).max())
    print(
        f"{len(rows)} training rows of {len(tasks)} tasks, eval.batch_size {cfg.eval.batch_size}, "
        f"{args.threads} threads"
    )
    print(f"machine: {describe()}")
    print(f"{'pass':<42} {'s/row':>8} {'x forced':>9}")
    for name, s in (
        (f"probe, batches of {cfg.eval.batch_size} by length", batched),
        ("probe, one batch of every row (before)", single),
        ("evaluation's forced pass", forced),
    ):
        print(f"{name:<42} {s / len(rows):8.4f} {s / forced:9.2f}")
    print(f"largest loss difference from the forced pass: {worst:.2e} nats")
    if worst > 1e-4:
        raise SystemExit("the passes disagree on the losses")


if __name__ == "__main__":
    main()
