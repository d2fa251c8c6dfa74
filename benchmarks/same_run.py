"""Whether two runs of one config are the same run: their accuracy and loss matrices cell for
cell, their replay counts, their replay events (``diagnostics.json``) and, where both folders
have them, every rank's replay plans (``plans/rank_*.jsonl``).

    .venv/bin/python benchmarks/same_run.py runs/xs16f-fixed-b0.1-s0-o0 \
        docs/results/xs16-runs/xs16-fixed-b0.1-s0-o0

A comparison run again at a newer commit may reuse an arm's runs from an older one only when
that arm's code did not change what it does; one of its runs made again at the new commit and
found the same by this check is the evidence. The seed fixes data order, sampling and
initialisation, so on one machine the same code gives the same matrices to the last bit: any
difference, however small, fails the check (the largest is printed). Exit 0 when the same,
1 when not, 2 when a folder lacks a run's files.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def _largest_difference(a, b) -> float:
    """The largest absolute difference of two matrices' scored cells; inf when their shapes or
    their unscored (NaN) cells differ."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or not np.array_equal(np.isnan(a), np.isnan(b)):
        return float("inf")
    scored = ~np.isnan(a)
    return float(np.max(np.abs(a[scored] - b[scored]), initial=0.0))


def _plans(run: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((run / "plans").glob("rank_*.jsonl"))}


def differences(run_a: Path, run_b: Path) -> list[str]:
    """What differs between the two runs, a line each; empty when they are the same run."""
    sa, sb = (json.loads((r / "summary.json").read_text()) for r in (run_a, run_b))
    found = []
    for matrix in ("accuracy_matrix", "loss_matrix"):
        if (largest := _largest_difference(sa[matrix], sb[matrix])) != 0.0:
            found.append(f"{matrix}: cells differ by up to {largest:.3g}")
    for count in ("replay_samples", "replay_events"):
        if sa.get(count) != sb.get(count):
            found.append(f"{count}: {sa.get(count)} against {sb.get(count)}")
    da, db = (r / "diagnostics.json" for r in (run_a, run_b))
    if da.exists() and db.exists():
        ea, eb = (json.loads(d.read_text()).get("events") for d in (da, db))
        if ea != eb:
            found.append("diagnostics.json: the replay events differ")
    pa, pb = _plans(run_a), _plans(run_b)
    if pa and pb and pa != pb:
        ranks = sorted(k for k in set(pa) | set(pb) if pa.get(k) != pb.get(k))
        found.append(f"plans differ: {', '.join(ranks)}")
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_a", type=Path)
    ap.add_argument("run_b", type=Path)
    args = ap.parse_args()
    for run in (args.run_a, args.run_b):
        if not (run / "summary.json").exists():
            print(f"error: {run}: no summary.json (not a finished run's folder)", file=sys.stderr)
            sys.exit(2)
    found = differences(args.run_a, args.run_b)
    both_plans = bool(_plans(args.run_a)) and bool(_plans(args.run_b))
    checked = "matrices, replay counts, replay events" + (", plans" if both_plans else "")
    if found:
        print(f"not the same run ({checked} compared):")
        print("\n".join(f"  {line}" for line in found))
        sys.exit(1)
    print(f"the same run ({checked} compared)")


if __name__ == "__main__":
    main()
