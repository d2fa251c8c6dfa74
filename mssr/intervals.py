"""Paired differences of continual-learning metrics with two-level bootstrap intervals.

A comparison trains strategy A (e.g. ``"mssr"``) and a reference B (e.g. ``"fixed"``) on the
same seeds ``0..n-1``. For one run the per-row results are a list of T arrays
``rows[j]`` of shape ``(T+1, N_j)``: ``rows[j][k, r]`` is the score (0/1 exact match, or a
per-row loss) of test row r of task j after training k tasks (k=0: before training), NaN
throughout a cell the run did not score (no metric reads it, so it stays out of them). The
accuracy matrix of the run is ``a[k][j] = rows[j][k].mean()`` and a metric from
:mod:`mssr.metrics` maps it to one number.

Two sources of noise enter the difference ``mean_s metric(A_s) - metric(B_s)``: the seeds
(independent training runs), and the test rows, which are one fixed sample shared by every
seed and strategy, so their noise does not average out over seeds. Each bootstrap replicate
therefore resamples the seeds with replacement (the same seed indices for A and B: pairing)
and, per task, the test rows with replacement once, shared by every run of the replicate.
``scipy.stats.bootstrap`` resamples one level of independent observations only, which is why
this two-level scheme is written by hand here.

Usage::

    from mssr.intervals import paired_bootstrap, noise_components, seeds_needed
    from mssr.metrics import average_performance

    # a_runs[s][j]: array (T+1, N_j) of strategy A, seed s; b_runs likewise for B
    diff = paired_bootstrap(a_runs, b_runs, average_performance, name="ap")
    print(diff.metric, diff.text())          # ap +0.041 [-0.012, +0.093] (contains 0)
    parts = noise_components(a_runs, b_runs, average_performance)
    print(seeds_needed(parts, half_width=0.02))  # None if the test rows alone are too noisy
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy.stats import norm

Metric = Callable[[np.ndarray], float]
Run = Sequence[np.ndarray]  # one run's per-row results: T arrays of shape (T+1, N_j)

# Upper bound on the number of multinomial counts held in memory at once.
_COUNTS_PER_CHUNK = 2_000_000


@dataclass(frozen=True)
class PairedDifference:
    """``mean_s metric(A_s) - metric(B_s)`` with a bootstrap percentile interval."""

    metric: str
    mean: float
    low: float
    high: float
    level: float
    n_seeds: int
    n_boot: int

    @property
    def excludes_zero(self) -> bool:
        """True when the interval lies strictly above or strictly below 0."""
        return self.low > 0 or self.high < 0

    def text(self, fmt: str = "+.3f") -> str:
        """E.g. ``"+0.041 [-0.012, +0.093] (contains 0)"``."""
        out = f"{self.mean:{fmt}} [{self.low:{fmt}}, {self.high:{fmt}}]"
        return out if self.excludes_zero else out + " (contains 0)"


# ---------------------------------------------------------------------------------------
# Input checks


def _as_run(run: Run, label: str) -> list[np.ndarray]:
    tasks = [np.asarray(r, dtype=float) for r in run]
    T = len(tasks)
    if T == 0:
        raise ValueError(f"{label}: a run needs per-row results for at least one task")
    for j, r in enumerate(tasks):
        if r.ndim != 2 or r.shape[0] != T + 1 or r.shape[1] == 0:
            raise ValueError(
                f"{label}, task {j}: per-row results must have shape (T+1, N) = ({T + 1}, N>=1) "
                f"for T={T} tasks, got {r.shape}"
            )
        if np.isinf(r).any():
            raise ValueError(f"{label}, task {j}: per-row results contain infinity")
        partial = np.isnan(r).any(axis=1) & ~np.isnan(r).all(axis=1)
        if partial.any():  # a whole cell may be unscored (NaN); a scored one has every row
            k = int(np.flatnonzero(partial)[0])
            raise ValueError(f"{label}, task {j}, after {k} tasks: some test rows are NaN, not all")
    return tasks


def _stack_runs(a_runs: Sequence[Run], b_runs: Sequence[Run]) -> list[np.ndarray]:
    """Validate and stack per task: array (2, n_seeds, T+1, N_j), index 0 = A, 1 = B."""
    if len(a_runs) != len(b_runs):
        raise ValueError(
            f"A and B must be run on the same seeds: got {len(a_runs)} runs of A and {len(b_runs)} runs of B"
        )
    if len(a_runs) == 0:
        raise ValueError("no runs: a paired comparison needs at least one seed")
    runs = [_as_run(r, f"A, seed index {s}") for s, r in enumerate(a_runs)]
    runs += [_as_run(r, f"B, seed index {s}") for s, r in enumerate(b_runs)]
    shapes = [tuple(t.shape for t in run) for run in runs]
    for i, shape in enumerate(shapes):
        if shape != shapes[0]:
            strategy, seed = ("A", i) if i < len(a_runs) else ("B", i - len(a_runs))
            raise ValueError(
                f"all runs must score the same test rows: {strategy}, seed index {seed} has "
                f"per-task shapes {list(shape)}, A, seed index 0 has {list(shapes[0])}"
            )
    n_seeds = len(a_runs)
    T = len(runs[0])
    return [np.stack([run[j] for run in runs]).reshape(2, n_seeds, T + 1, -1) for j in range(T)]


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}")


def _check_n_boot(n_boot: int) -> None:
    if n_boot < 2:
        raise ValueError(f"n_boot must be at least 2, got {n_boot}")


def _z(level: float) -> float:
    _check_level(level)
    return float(norm.ppf(0.5 + level / 2))


# ---------------------------------------------------------------------------------------
# Core computation


def _seed_differences(tasks: list[np.ndarray], metric: Metric, weights=None) -> np.ndarray:
    """Per-seed ``metric(A_s) - metric(B_s)``; shape (n_boot, n_seeds), or (n_seeds,).

    ``weights[j]``: (n_boot, N_j) multinomial row counts of task j; None = original rows.
    """
    if weights is None:
        columns = [t.mean(axis=-1) for t in tasks]  # each (2, n_seeds, T+1)
    else:
        columns = [np.moveaxis(t @ w.T, -1, 0) / t.shape[-1] for w, t in zip(weights, tasks)]
    matrices = np.stack(columns, axis=-1)  # (..., 2, n_seeds, T+1, T)
    flat = matrices.reshape(-1, *matrices.shape[-2:])
    scores = np.array([metric(m) for m in flat], dtype=float).reshape(matrices.shape[:-2])
    return scores[..., 0, :] - scores[..., 1, :]


def _row_resampled_differences(
    tasks: list[np.ndarray], metric: Metric, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """Per-seed differences (n_boot, n_seeds), each replicate on resampled test rows."""
    widest = max(t.shape[-1] for t in tasks)
    chunk = max(1, _COUNTS_PER_CHUNK // widest)
    parts = []
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        weights = [_row_counts(t.shape[-1], size, rng) for t in tasks]
        parts.append(_seed_differences(tasks, metric, weights))
    return np.concatenate(parts)


def _row_counts(n_rows: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """How often each row is drawn when resampling n_rows rows with replacement."""
    return rng.multinomial(n_rows, np.full(n_rows, 1.0 / n_rows), size=size).astype(float)


def paired_bootstrap(
    a_runs: Sequence[Run],
    b_runs: Sequence[Run],
    metric: Metric,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    name: str = "",
) -> PairedDifference:
    """Paired difference ``mean_s metric(A_s) - metric(B_s)`` with a percentile interval.

    ``a_runs[s]`` and ``b_runs[s]`` are the per-row results of seed s (same order in both).
    Each replicate resamples the seeds with replacement (the same indices for A and B) and,
    per task, the test rows once, shared by all runs of the replicate. With one seed only
    the rows are resampled, so the interval reflects test-row noise alone. Deterministic for
    a given ``seed``.
    """
    _check_level(level)
    _check_n_boot(n_boot)
    tasks = _stack_runs(a_runs, b_runs)
    n_seeds = tasks[0].shape[1]
    rng = np.random.default_rng(seed)

    point = float(_seed_differences(tasks, metric).mean())
    seed_draws = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    per_seed = _row_resampled_differences(tasks, metric, n_boot, rng)
    replicates = np.take_along_axis(per_seed, seed_draws, axis=1).mean(axis=1)

    alpha = 1 - level
    low, high = np.quantile(replicates, [alpha / 2, 1 - alpha / 2])
    return PairedDifference(
        metric=name, mean=point, low=float(low), high=float(high), level=level, n_seeds=n_seeds, n_boot=n_boot
    )


def mean_interval(
    runs: Sequence[Run], metric: Metric, n_boot: int = 2000, level: float = 0.95, seed: int = 0, name: str = ""
) -> PairedDifference:
    """``mean_s metric(run_s)`` itself, with the same two-level bootstrap: the difference
    against an all-zero reference, which every metric of :mod:`mssr.metrics` maps to 0."""
    zeros = [[np.zeros_like(np.asarray(t, dtype=float)) for t in run] for run in runs]
    return paired_bootstrap(runs, zeros, metric, n_boot=n_boot, level=level, seed=seed, name=name)


# ---------------------------------------------------------------------------------------
# Planning: how many seeds / test rows for a target precision


def noise_components(
    a_runs: Sequence[Run], b_runs: Sequence[Run], metric: Metric, n_boot: int = 2000, seed: int = 0
) -> dict:
    """The two variance parts of the paired difference.

    Returns ``seed_var`` (sample variance, ddof=1, of the per-seed differences on the
    original rows; 0 with one seed), ``row_var`` (variance of the seed-mean difference over
    the actual seeds when only the test rows are resampled), ``n_seeds`` and
    ``rows_per_task`` (mean N_j).
    """
    _check_n_boot(n_boot)
    tasks = _stack_runs(a_runs, b_runs)
    n_seeds = tasks[0].shape[1]
    rng = np.random.default_rng(seed)

    per_seed = _seed_differences(tasks, metric)
    seed_var = float(per_seed.var(ddof=1)) if n_seeds > 1 else 0.0
    row_replicates = _row_resampled_differences(tasks, metric, n_boot, rng).mean(axis=1)
    return {
        "seed_var": seed_var,
        "row_var": float(row_replicates.var(ddof=1)),
        "n_seeds": n_seeds,
        "rows_per_task": float(np.mean([t.shape[-1] for t in tasks])),
    }


def projected_half_width(components: dict, n_seeds: int, rows_scale: float = 1.0, level: float = 0.95) -> float:
    """``z * sqrt(seed_var / n_seeds + row_var / rows_scale)``.

    The test rows are shared by all seeds, so the row part does not shrink with more seeds;
    ``rows_scale`` = new rows per task / current rows per task.
    """
    if n_seeds < 1:
        raise ValueError(f"n_seeds must be at least 1, got {n_seeds}")
    if rows_scale <= 0:
        raise ValueError(f"rows_scale must be positive, got {rows_scale}")
    variance = components["seed_var"] / n_seeds + components["row_var"] / rows_scale
    return _z(level) * math.sqrt(variance)


def seeds_needed(components: dict, half_width: float, rows_scale: float = 1.0, level: float = 0.95) -> int | None:
    """Smallest number of seeds whose projected half width is <= ``half_width``.

    None when the row part alone reaches ``half_width``: then more test rows are needed.
    """
    if half_width <= 0:
        raise ValueError(f"half_width must be positive, got {half_width}")
    if rows_scale <= 0:
        raise ValueError(f"rows_scale must be positive, got {rows_scale}")
    seed_budget = (half_width / _z(level)) ** 2 - components["row_var"] / rows_scale
    if seed_budget < 0:
        return None
    if components["seed_var"] == 0:
        return 1
    if seed_budget == 0:
        return None
    n = max(1, math.ceil(components["seed_var"] / seed_budget))

    def fits(k: int) -> bool:
        return projected_half_width(components, k, rows_scale, level) <= half_width

    # Guard the closed form against rounding at exact boundaries.
    while not fits(n):
        n += 1
    while n > 1 and fits(n - 1):
        n -= 1
    return n


def rows_scale_needed(components: dict, half_width: float, n_seeds: int, level: float = 0.95) -> float | None:
    """Smallest rows_scale whose projected half width with ``n_seeds`` is <= ``half_width``.

    A value <= 1 means the current test rows suffice (0 when there is no row noise). None
    when the seed part alone reaches ``half_width``: then more seeds are needed.
    """
    if half_width <= 0:
        raise ValueError(f"half_width must be positive, got {half_width}")
    if n_seeds < 1:
        raise ValueError(f"n_seeds must be at least 1, got {n_seeds}")
    row_budget = (half_width / _z(level)) ** 2 - components["seed_var"] / n_seeds
    if row_budget < 0:
        return None
    if components["row_var"] == 0:
        return 0.0
    if row_budget == 0:
        return None
    return components["row_var"] / row_budget
