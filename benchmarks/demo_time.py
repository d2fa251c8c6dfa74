"""Where the demo's wall time goes, for one or more checkouts of MSSR, side by side.

Runs ``mssr run CONFIG`` (default ``configs/demo.yaml``) once per ``--tree`` (a checkout of
this repository; its own code is imported through PYTHONPATH, with this virtualenv's
packages), one after the other, and prints each run's wall time split into training (rank
0's training loops), evaluation (rank 0's evaluation passes: the ``(eval Ns)`` progress
lines of checkouts older than the ``eval_wall`` summary field) and start-up and the rest
(Ray, tokenisation, model loading, MLflow), with the ratios to the first tree, its metrics
and whether bf16 autocast was on. Extra ``key=value`` overrides go to every run.

    git worktree add /tmp/mssr-before <commit>        # the checkout to compare with
    .venv/bin/python benchmarks/demo_time.py --tree /tmp/mssr-before --tree .
    .venv/bin/python benchmarks/demo_time.py --tree . train.autocast=none --json /tmp/fp32.json   # fp32 this time
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from machine import describe


def run_tree(tree: Path, config: str, overrides: list[str], out: Path, name: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree), HF_HUB_OFFLINE="1")
    summary = out / f"{name}.json"
    cmd = [
        sys.executable,
        "-m",
        "pipelines.cli",
        "run",
        config,
        *overrides,
        f"run.output_dir={out}",
        f"run.name={name}",
        "--summary-json",
        str(summary),
    ]
    proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{tree}: mssr run failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    s = json.loads(summary.read_text())
    times = s.get("pipeline_seconds", {})
    evaluation = times.get("eval_wall")
    if evaluation is None:  # an older checkout: the per-task evaluation times of its progress lines
        evaluation = sum(float(x) for x in re.findall(r"\(eval (\d+)s", proc.stdout))
    train = times.get("train_wall", s["train_seconds"])
    return {
        "tree": str(tree),
        "console": proc.stdout,
        "wall": s["wall_seconds"],
        "train": train,
        "eval": evaluation,
        "rest": s["wall_seconds"] - train - evaluation,
        "ap": s["ap"],
        "bwt": s["bwt"],
        "loss_final": s.get("loss_final"),
        "autocast": s.get("autocast", "none"),
        "eval_autocast": s.get("eval_autocast", s.get("autocast", "none")),
        "eval_mode": s.get("eval_mode", "generate"),
        "matrix": s["accuracy_matrix"],
        "loss_matrix": s.get("loss_matrix"),
        "tokens": s["tokens"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", action="append", required=True, help="a checkout of MSSR (repeat)")
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("overrides", nargs="*", metavar="key=value")
    ap.add_argument("--json", default="benchmarks/results/demo_time.json")
    args = ap.parse_args()
    out = Path(tempfile.mkdtemp(prefix="mssr-demo-time-"))
    runs = []
    for i, tree in enumerate(args.tree):
        runs.append(run_tree(Path(tree).resolve(), args.config, args.overrides, out, f"demo{i}"))
        r = runs[-1]
        print(
            f"{r['tree']}: wall {r['wall']:.0f}s (training {r['train']:.0f}s, evaluation {r['eval']:.0f}s, "
            f"start-up and the rest {r['rest']:.0f}s), AP {r['ap']:.3f}",
            flush=True,
        )
    first = runs[0]
    print(f"\n{args.config} {' '.join(args.overrides)}\n{describe()}")
    print(
        f"{'tree':<40}{'wall s':>8}{'train s':>9}{'eval s':>8}{'rest s':>8}{'x wall':>8}  autocast (train, eval)"
        f"  eval      AP"
    )
    for r in runs:
        print(
            f"{r['tree'][-40:]:<40}{r['wall']:>8.0f}{r['train']:>9.0f}{r['eval']:>8.0f}{r['rest']:>8.0f}"
            f"{r['wall'] / first['wall']:>8.2f}  {r['autocast'] + ', ' + r['eval_autocast']:<22}  {r['eval_mode']:<8} "
            f"{r['ap']:.3f}"
        )
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps({"machine": describe(), "config": args.config, "overrides": args.overrides, "runs": runs}, indent=1)
    )
    print(f"written to {path}")


if __name__ == "__main__":
    main()
