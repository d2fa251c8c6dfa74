"""How often the comparison intervals cover the true difference, on simulated comparisons at
the noise of the kept 11-task comparison (the settings of tests/test_intervals.py).

    .venv/bin/python benchmarks/interval_coverage.py            # about 3 minutes on 2 cores
    .venv/bin/python benchmarks/interval_coverage.py --sims 4000

Prints, per noise setting and number of blocks, the coverage of the 95% t interval
(``mssr.intervals.paired_interval``) and, at 3 blocks, of the same centre and spread with the
normal quantile.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scipy.stats import norm  # noqa: E402

from tests.test_intervals import NOISE, coverage  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sims", type=int, default=1000, help="simulated comparisons per cell (default 1000)")
    args = ap.parse_args()
    blocks = (2, 3, 5, 8, 16)
    print(
        "| noise (per-block SD, shared-row SD, within-row share) | "
        + " | ".join(f"{n} blocks" for n in blocks)
        + " | 3 blocks, normal quantile |"
    )
    print("|---|" + "---|" * (len(blocks) + 1))
    for name, noise in NOISE.items():
        cells = [f"{coverage(n, *noise, sims=args.sims, seed=100 + n):.3f}" for n in blocks]
        z = coverage(3, *noise, sims=args.sims, seed=103, quantile=float(norm.ppf(0.975)))
        print(f"| {name} {noise} | " + " | ".join(cells) + f" | {z:.3f} |", flush=True)


if __name__ == "__main__":
    main()
