"""How often the comparison intervals cover the true difference, on simulated comparisons at
the noise of the kept 11-task comparison (the settings of tests/test_intervals.py).

    .venv/bin/python benchmarks/interval_coverage.py            # about 4 minutes on 2 cores
    .venv/bin/python benchmarks/interval_coverage.py --sims 2000

Prints, per noise setting and number of blocks, the coverage of the 95% t interval
(``mssr.intervals.paired_interval``); then, at 3 blocks, of the same centre and spread with
three other quantiles: the normal one (what a percentile bootstrap over the blocks amounts
to), t at n - 1 degrees of freedom, and Satterthwaite's degrees of freedom fed the block
estimate itself (the two variants the interval's rule was chosen against).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from scipy.stats import norm, t  # noqa: E402

from mssr.intervals import _satterthwaite, paired_interval  # noqa: E402
from mssr.metrics import average_performance  # noqa: E402
from tests.test_intervals import NOISE, simulate  # noqa: E402

BLOCKS = (2, 3, 5, 8, 16)
TRUE = 0.1


def variants_at(n: int, noise: tuple, sims: int, seed: int) -> dict[str, float]:
    """Coverage of the interval and of the other quantiles, over ``sims`` comparisons."""
    rng = np.random.default_rng(seed)
    hits = {"t interval": 0, "normal quantile": 0, "t, n-1 df": 0, "Satterthwaite on the estimate": 0}
    for _ in range(sims):
        d = paired_interval(*simulate(rng, n, *noise[:2], TRUE, noise[2]), average_performance)
        sd = math.sqrt(d.block_var / n + d.row_var)
        naive_df = _satterthwaite(d.block_var / n, d.row_var, n, d.row_df)
        quantiles = {
            "t interval": (d.high - d.low) / 2 / sd if sd else 0.0,
            "normal quantile": norm.ppf(0.975),
            "t, n-1 df": t.ppf(0.975, n - 1),
            "Satterthwaite on the estimate": norm.ppf(0.975) if math.isinf(naive_df) else t.ppf(0.975, naive_df),
        }
        for name, q in quantiles.items():
            hits[name] += abs(d.mean - TRUE) <= q * sd
    return {k: v / sims for k, v in hits.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sims", type=int, default=1000, help="simulated comparisons per cell (default 1000)")
    args = ap.parse_args()
    others = ("normal quantile", "t, n-1 df", "Satterthwaite on the estimate")
    print(
        "| noise (per-block SD, shared-row SD, within-row share) | "
        + " | ".join(f"{n} blocks" for n in BLOCKS)
        + " | "
        + " | ".join(f"3 blocks, {o}" for o in others)
        + " |"
    )
    print("|---|" + "---|" * (len(BLOCKS) + len(others)))
    for name, noise in NOISE.items():
        cells = [variants_at(n, noise, args.sims, seed=100 + n) for n in BLOCKS]
        row = [f"{c['t interval']:.3f}" for c in cells] + [f"{cells[1][o]:.3f}" for o in others]
        print(f"| {name} {noise} | " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
