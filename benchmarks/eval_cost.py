"""Cost of the generation-based evaluation (the accuracy matrix is evaluated T+1 times).

Greedy answers to ``--prompts`` test prompts mixed from every task of the built-in stream of
configs/compare.yaml, by ``mssr.evaluation.generate_answers`` on the real model (fp32, as in
training runs), ``eval.max_new_tokens`` new tokens, at each batch size of ``--batch-sizes``:
tokens/s as generate_answers counts them (prompt + generated, pads excluded) and seconds per
example, median and p90 of ``--repeats`` after a warm-up. Then the same at ``--nocache-batch``
with the KV cache off (``use_cache=False`` in the model's generation config, so the call and
its inputs are exactly those of generate_answers), to show what the cache gives. Greedy
decoding with left padding should not depend on the batch size: the answers of every run are
compared with the batch-size-1 answers and the differing ones counted (not asserted).

    .venv/bin/python benchmarks/eval_cost.py                                  # 48 prompts, batch 1, 8, 24
    .venv/bin/python benchmarks/eval_cost.py --batch-sizes 1,8,24,48 --repeats 5 --json /tmp/ec.json
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from machine import describe  # noqa: E402

from mssr.config import load_config  # noqa: E402
from mssr.evaluation import generate_answers  # noqa: E402
from mssr.models import load_model  # noqa: E402
from mssr.tasks import load_stream  # noqa: E402
from mssr.tokenize import PromptEncoder, encoder_options  # noqa: E402


def mixed_prompts(tasks, n: int) -> list[str]:
    """Round-robin over the tasks' test sets: prompt i of every task, then i+1, ..."""
    out = []
    for i in range(max(len(t.test) for t in tasks)):
        out += [t.test[i].prompt for t in tasks if i < len(t.test)]
    return out[:n]


def measure(model, enc, prompts, max_new: int, batch: int, repeats: int) -> tuple[dict, list[str]]:
    generate_answers(model, enc, prompts[:batch], max_new, batch)  # warm-up
    secs, answers, tokens = [], [], 0
    for _ in range(repeats):
        t = time.perf_counter()
        answers, tokens = generate_answers(model, enc, prompts, max_new, batch)
        secs.append(time.perf_counter() - t)
    s = np.array(secs)
    return {
        "batch_size": batch,
        "tokens": tokens,
        "median_s": float(np.median(s)),
        "p90_s": float(np.percentile(s, 90)),
        "tokens_per_s": tokens / float(np.median(s)),
        "s_per_example": float(np.median(s)) / len(prompts),
        "repeats": repeats,
    }, answers


def _print_runs(runs: list[dict], nocache_batch: int) -> None:
    """One line per batch size and cache setting; the KV cache's gain where both ran."""
    print(f"  {'batch':>5} {'cache':>5} {'median s':>9} {'p90 s':>7} {'tokens/s':>9} {'s/example':>10} {'differ':>7}")
    for r in runs:
        print(
            f"  {r['batch_size']:5d} {'on' if r['kv_cache'] else 'off':>5} {r['median_s']:9.2f} {r['p90_s']:7.2f} "
            f"{r['tokens_per_s']:9.1f} {r['s_per_example']:10.3f} {r['answers_differing_from_batch_1']:7d}"
        )
    if nocache_batch:
        on = next(r for r in runs if r["kv_cache"] and r["batch_size"] == nocache_batch)
        gain = runs[-1]["median_s"] / on["median_s"]
        print(f"KV cache at batch {nocache_batch}: {gain:.2f}x faster than without")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/compare.yaml")
    ap.add_argument("--prompts", type=int, default=48)
    ap.add_argument("--batch-sizes", default="1,8,24")
    ap.add_argument("--nocache-batch", type=int, default=8, help="batch size of the run without KV cache (0: skip)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default="benchmarks/results/eval_cost.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    cfg = load_config(args.config)
    model, tok = load_model(cfg.model, seed=cfg.seed)
    enc = PromptEncoder(tok, **encoder_options(cfg.stream))
    tasks = load_stream(cfg.stream)
    prompts = mixed_prompts(tasks, args.prompts)
    max_new = cfg.eval.max_new_tokens

    runs, answers = [], {}
    sizes = sorted({1, *(int(b) for b in args.batch_sizes.split(","))})  # batch 1 is the reference
    for b in sizes:
        r, answers[b] = measure(model, enc, prompts, max_new, b, args.repeats)
        r["kv_cache"] = True
        runs.append(r)
        print(f"batch {b:3d}, KV cache on:  {r['tokens_per_s']:.1f} tokens/s", flush=True)
    if args.nocache_batch:
        gen_cfg = model.get_base_model().generation_config
        gen_cfg.use_cache = False
        try:
            r, nocache_answers = measure(model, enc, prompts, max_new, args.nocache_batch, args.repeats)
        finally:
            gen_cfg.use_cache = True
        r["kv_cache"] = False
        runs.append(r)
        print(f"batch {args.nocache_batch:3d}, KV cache off: {r['tokens_per_s']:.1f} tokens/s", flush=True)
    for r in runs:
        got = answers[r["batch_size"]] if r["kv_cache"] else nocache_answers
        r["answers_differing_from_batch_1"] = sum(a != b for a, b in zip(got, answers[1]))

    print(
        f"{len(prompts)} prompts from {len(tasks)} tasks, max_new_tokens {max_new}, {args.threads} threads, "
        f"{describe()}"
    )
    _print_runs(runs, args.nocache_batch if args.nocache_batch in answers else 0)

    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"machine": describe(), "threads": args.threads, "prompts": len(prompts), "max_new_tokens": max_new}
    out.write_text(json.dumps({**record, "runs": runs, "answers_batch_1": answers[1]}, indent=1))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
