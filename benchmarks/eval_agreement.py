"""Forced against generated exact match: agreement on every test row, and cost per row.

Trains the real model through the config's stream in one process (no Ray: the bare loop of
``pipeline_overhead.py``, rows in the pipeline's order), and before training and after every
task scores every test row of every task three ways, side by side:

* ``generate fp32``: greedy decoding in fp32, batches of ``eval.batch_size``, up to
  ``eval.max_new_tokens`` tokens: the evaluation every run used before forced scoring;
* ``forced fp32``: one forward pass per batch (``mssr.evaluation.forced_pass``), fp32;
* ``forced`` at the config's ``eval.autocast`` (``auto``: bf16 on a CPU with bf16 matrix
  instructions) on the fp32 model: what runs did before ``model.dtype: auto``;
* ``forced bf16 base``: the same, on a copy of the model whose frozen base weights are bf16
  and adapters fp32: what a LoRA run does where ``model.dtype: auto`` resolves to bf16.

The model trains in fp32 (``model.dtype=float32`` is added to the overrides), so the first
three methods measure what they did before bf16 base weights.

Prints, per point of the run, the rows where forced and generated exact match differ, each
with its kind (the generated text equals the reference only after normalisation; the
generated text is the reference spelled with other tokens; or neither: a near-tie between
two tokens that the two passes' numerics break differently), then the totals, the seconds
per row of each method (medians over the points) and their ratios, and how far the loss
matrix's cells (mean answer loss of a task at a point) move between fp32 and ``eval.autocast``
against their standard errors. JSON to ``--json``.

    .venv/bin/python benchmarks/eval_agreement.py                      # the demo config, ~15 min on 2 cores
    .venv/bin/python benchmarks/eval_agreement.py --config configs/compare.yaml stream.test_size=100
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from machine import describe  # noqa: E402
from pipeline_overhead import bare_loop  # noqa: E402

from mssr.config import load_config  # noqa: E402
from mssr.evaluation import forced_pass, generate_answers  # noqa: E402
from mssr.optim import autocast_context, resolve_autocast  # noqa: E402
from mssr.scoring import exact_match, normalise  # noqa: E402


def kind_of_disagreement(generated: str, reference: str, forced_ok: bool) -> str:
    """Why forced and generated exact match differ on a row."""
    if not forced_ok and normalise(generated) == normalise(reference) and generated != reference:
        return "equal after normalisation only"
    if not forced_ok and generated == reference:  # the decoded text is stripped of whitespace
        return "same text: other tokens, or whitespace before the end"
    return "near-tie between two tokens"


METHODS = ("generate fp32", "forced fp32", "forced", "forced bf16 base")


def with_bf16_base(model):
    """A copy of a LoRA model with its frozen weights in bf16 and its adapters in fp32, as
    ``load_model`` builds it when ``model.dtype`` resolves to bfloat16."""
    twin = copy.deepcopy(model)
    for name, p in twin.named_parameters():
        if "lora_" not in name:
            p.data = p.data.to(torch.bfloat16)
    return twin


def score_point(point: str, model, encoder, tasks, cfg, record: dict) -> None:
    """Score every test row of every task the four ways; add the rows, times and disagreements."""
    autocast = autocast_context(cfg.eval.autocast, "cpu", "eval")
    twin = with_bf16_base(model)
    for task in tasks:
        rows = task.test
        t = time.perf_counter()
        answers, _ = generate_answers(
            model, encoder, [e.prompt for e in rows], cfg.eval.max_new_tokens, cfg.eval.batch_size
        )
        t_gen = time.perf_counter() - t
        t = time.perf_counter()
        forced32, losses32, _ = forced_pass(model, encoder, rows, cfg.eval.batch_size)
        t_f32 = time.perf_counter() - t
        t = time.perf_counter()
        forced, losses, _ = forced_pass(model, encoder, rows, cfg.eval.batch_size, autocast)
        t_forced = time.perf_counter() - t
        t = time.perf_counter()
        forced_b, _, _ = forced_pass(twin, encoder, rows, cfg.eval.batch_size, autocast)
        t_base = time.perf_counter() - t
        record["loss_cells"].append(
            {
                "point": point,
                "task": task.name,
                "fp32": statistics.fmean(losses32),
                "eval_autocast": statistics.fmean(losses),
                "standard_error": statistics.stdev(losses32) / len(rows) ** 0.5,
            }
        )
        generated = [bool(exact_match(a, e.answer)) for a, e in zip(answers, rows)]
        times = (t_gen, t_f32, t_forced, t_base)
        for name, seconds in zip(METHODS, times):
            record["seconds"][name].append(seconds / len(rows))
        record["rows"] += len(rows)
        record["correct"]["generate fp32"] += sum(generated)
        record["correct"]["forced fp32"] += sum(forced32)
        record["correct"]["forced"] += sum(forced)
        record["correct"]["forced bf16 base"] += sum(forced_b)
        for name, verdicts in (("forced fp32", forced32), ("forced", forced), ("forced bf16 base", forced_b)):
            for e, a, g, f in zip(rows, answers, generated, verdicts):
                if g != f:
                    kind = kind_of_disagreement(a, e.answer, f)
                    record["differ"][name].append(
                        {
                            "point": point,
                            "task": task.name,
                            "prompt": e.prompt[:60],
                            "reference": e.answer,
                            "generated": a,
                            "forced": f,
                            "kind": kind,
                        }
                    )


def _print_agreement(record: dict, per_row: dict, precision: str) -> None:
    """Each method's correct rows and speed, the rows where it differs from fp32 generation
    (the first 20 shown), and how far the eval precision moves the loss matrix's cells."""
    for name in METHODS:
        print(
            f"{name:<16} correct {record['correct'][name]:>5}  {1000 * per_row[name]:8.1f} ms per row "
            f"(median over points and tasks)  generate fp32 / this: {per_row['generate fp32'] / per_row[name]:5.1f}x"
        )
    for name in METHODS[1:]:
        d = record["differ"][name]
        kinds = {}
        for row in d:
            kinds[row["kind"]] = kinds.get(row["kind"], 0) + 1
        print(
            f"{name} vs generate fp32: {record['rows'] - len(d)} of {record['rows']} rows agree "
            f"({100 * (1 - len(d) / record['rows']):.2f}%); differ: {kinds or 'none'}"
        )
        for row in d[:20]:
            print(
                f"   {row['point']}, {row['task']}: reference {row['reference']!r}, generated {row['generated']!r}, "
                f"forced {'right' if row['forced'] else 'wrong'} ({row['kind']})"
            )
    shifts = [abs(c["eval_autocast"] - c["fp32"]) for c in record["loss_cells"]]
    ratios = [abs(c["eval_autocast"] - c["fp32"]) / c["standard_error"] for c in record["loss_cells"]]
    print(
        f"loss matrix cells, {precision} against fp32: median shift {statistics.median(shifts):.4f}, "
        f"largest {max(shifts):.4f} nats; largest shift / the cell's standard error {max(ratios):.2f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("overrides", nargs="*", metavar="key=value")
    ap.add_argument("--json", default="benchmarks/results/eval_agreement.json")
    args = ap.parse_args()
    cfg = load_config(args.config, [*args.overrides, "model.dtype=float32"])
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    record = {
        "rows": 0,
        "correct": {k: 0 for k in METHODS},
        "seconds": {k: [] for k in METHODS},
        "differ": {k: [] for k in METHODS[1:]},
        "loss_cells": [],
    }

    def after_task(k, model, encoder, tasks):
        score_point(f"after task {k + 1}", model, encoder, tasks, cfg, record)
        print(f"after task {k + 1}: {record['rows']} rows scored, {len(record['differ']['forced'])} differ", flush=True)

    def before(model, encoder, tasks):
        score_point("before training", model, encoder, tasks, cfg, record)
        print(f"before training: {record['rows']} rows scored", flush=True)

    bare_loop(cfg, threads, after_task=after_task, before=before)
    per_row = {k: statistics.median(v) for k, v in record["seconds"].items()}
    precision = resolve_autocast(cfg.eval.autocast, "cpu", "eval")
    print(f"\n{cfg.model.name}, {args.config} {' '.join(args.overrides)}\n{describe()}")
    print(
        f"{record['rows']} rows scored ({len(cfg.stream.tasks) or 5} tasks x test rows x "
        f"{1 + (len(cfg.stream.tasks) or 5)} points); forced at eval.autocast={cfg.eval.autocast} -> {precision}"
    )
    _print_agreement(record, per_row, precision)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "machine": describe(),
                "threads": threads,
                "config": args.config,
                "overrides": args.overrides,
                "autocast": precision,
                "seconds_per_row": per_row,
                **record,
            },
            indent=1,
        )
    )
    print(f"written to {out}")


if __name__ == "__main__":
    main()
