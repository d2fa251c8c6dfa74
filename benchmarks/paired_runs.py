"""Two sets of runs of the same config and seeds, paired seed by seed: is the difference noise?

Given two run-name prefixes in one output folder (``A-s0, A-s1, ...`` and ``B-s0, B-s1, ...``,
as ``mssr compare --name X`` names its runs ``X-<strategy>-s<seed>``), prints per seed the AP
and final answer loss of both, then the paired differences A - B of AP, BWT, forgetting,
final loss and loss forgetting with 95% t intervals over seeds and test rows
(``mssr.intervals.paired_interval``), and the largest shift of a loss-matrix cell against its
standard error. Use it to check that a change which should not move the results (a
precision, a faster kernel) does not, on runs whose data order and sampling are the same.

    .venv/bin/python benchmarks/paired_runs.py runs/cmp15b-none runs/cmp15-none --seeds 3
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from mssr.intervals import paired_interval
from mssr.metrics import METRIC_SPECS
from pipelines.analysis import per_row_results

METRICS = [METRIC_SPECS[m] for m in ("ap", "bwt", "forgetting", "loss_final", "loss_forgetting")]


def load(prefix: str, seed: int) -> dict:
    run = Path(f"{prefix}-s{seed}")
    if not (run / "summary.json").exists():
        raise SystemExit(f"{run}: no summary.json (not a finished run)")
    return {
        "summary": json.loads((run / "summary.json").read_text()),
        "rows": json.loads((run / "eval_rows.json").read_text()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", help="run-name prefix of the first set (path without -s<seed>)")
    ap.add_argument("b", help="run-name prefix of the second set")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--json", default=None, help="write the figures here too")
    args = ap.parse_args()
    a = [load(args.a, s) for s in range(args.seeds)]
    b = [load(args.b, s) for s in range(args.seeds)]
    out = {"a": args.a, "b": args.b, "seeds": [], "differences": {}, "loss_cells": {}}
    for s, (x, y) in enumerate(zip(a, b)):
        sx, sy = x["summary"], y["summary"]
        out["seeds"].append({"seed": s, "ap": [sx["ap"], sy["ap"]], "loss_final": [sx["loss_final"], sy["loss_final"]]})
        print(
            f"seed {s}: AP {sx['ap']:.3f} vs {sy['ap']:.3f}; "
            f"final loss {sx['loss_final']:.3f} vs {sy['loss_final']:.3f}"
        )
    for spec in METRICS:
        rows_a = [per_row_results(x["rows"], spec.matrix) for x in a]
        diff = paired_interval(rows_a, [per_row_results(y["rows"], spec.matrix) for y in b], spec.fn, name=spec.label)
        out["differences"][spec.label] = {"mean": diff.mean, "low": diff.low, "high": diff.high}
        print(f"{spec.label} A - B: {diff.text()}")
    # every cell both sets scored: its mean loss shift against the cell's standard error
    ratios, shifts = [], []
    for x, y in zip(a, b):
        for ta, tb in zip(per_row_results(x["rows"], "losses"), per_row_results(y["rows"], "losses")):
            for ra, rb in zip(ta, tb):
                if np.isnan(ra).any() or np.isnan(rb).any():
                    continue
                shifts.append(abs(ra.mean() - rb.mean()))
                ratios.append(shifts[-1] / (rb.std(ddof=1) / np.sqrt(len(rb))))
    out["loss_cells"] = {"n": len(shifts), "median_shift": float(np.median(shifts)), "max_ratio": float(max(ratios))}
    print(
        f"loss-matrix cells scored in both ({len(shifts)}): median shift {np.median(shifts):.3f} nats; "
        f"median shift / the cell's standard error {np.median(ratios):.2f}, largest {max(ratios):.2f}"
    )
    out["loss_cells"]["median_ratio"] = float(np.median(ratios))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
        print(f"written to {args.json}")


if __name__ == "__main__":
    main()
