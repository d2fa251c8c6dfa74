"""Paired differences of continual-learning metrics, with intervals that know how few blocks
there are.

A comparison trains strategy A (e.g. ``"mssr"``) and a reference B (e.g. ``"fixed"``) in
``n`` **blocks**: a block is one (seed, task order), and both strategies run in every block,
so a block that is hard for one is often hard for the other (the pairing). For one run the
per-row results are a list of T arrays ``rows[j]`` of shape ``(T+1, N_j)``: ``rows[j][k, r]``
is the score (0/1 exact match, or a per-row loss) of test row r of the task at position j
after training k tasks (k=0: before training), NaN throughout a cell the run did not score.
The matrix of the run is ``m[k][j] = rows[j][k].mean()`` and a metric from
:mod:`mssr.metrics` maps it to one number.

Two sources of noise enter the mean difference ``D = mean_b metric(A_b) - metric(B_b)``:

* the **blocks** (independent training runs): estimated by the spread of the n per-block
  differences D_b, ``s^2 / n``;
* the **test rows**, one sample of each task's prompts shared by every block and strategy, so
  their noise does not average out over blocks. Its variance ``c`` is estimated from each
  row's contribution to D (the metric's gradient with respect to the matrix cells times the
  row's values: exact for every metric that is linear in the cells, as AP, BWT, FWT, Avg and
  the final, anytime and BWT losses are), as the between-row variance of the block-mean
  contribution minus its within-row part (a one-way random-effects moment estimator), so that
  the row noise already inside ``s^2`` is not counted twice.

The interval is ``D ± t_{df} * sqrt(s^2/n + c)``. Its degrees of freedom are
Welch-Satterthwaite's for the two parts, ``(b + c)^2 / (b^2/(n-1) + c^2/df_c)``, where
``df_c`` is that of c's own estimate (a difference of two mean squares, so often only a few
even over hundreds of rows) and b is s^2/n at its upper 75% confidence bound (see
``_degrees_of_freedom``): with few blocks the quantile is Student's t at about n-1 degrees of
freedom, not the normal one, which is what makes it cover. tests/test_intervals.py simulates
comparisons at the noise of the 11-task comparison and requires 93-97% coverage at 3, 5, 8
and 16 blocks; benchmarks/interval_coverage.py prints it beside the normal quantile (81-84%
at 3 blocks), t at n-1 degrees of freedom (over-covers where the row part is large: it sets
a floor under the width that t_{n-1} does not know) and Satterthwaite fed the block estimate
itself (under-covers where the rows' noise inside each block is small).

With one block there is no estimate of the run-to-run noise: the interval is the test rows'
alone (normal quantile) and says so.

Usage::

    from mssr.intervals import paired_interval, blocks_needed
    from mssr.metrics import average_performance

    # a_runs[b][j]: array (T+1, N_j) of strategy A in block b; b_runs likewise for B
    diff = paired_interval(a_runs, b_runs, average_performance, name="ap")
    print(diff.text())                      # +0.041 [-0.012, +0.093] (no difference resolved)
    print(diff.detectable())                # smallest difference these blocks detect at 80% power
    print(blocks_needed(diff, 0.02))        # blocks that would detect 0.02 (None: more test rows)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
from scipy.stats import chi2, norm, t

Metric = Callable[[np.ndarray], float]
Run = Sequence[np.ndarray]  # one run's per-row results: T arrays of shape (T+1, N_j)

POWER = 0.8  # the power at which detectable differences and block counts are quoted
_STEP = 1e-4  # finite-difference step of the metric's gradient (exact for linear metrics)


@dataclass(frozen=True)
class PairedDifference:
    """``mean_b metric(A_b) - metric(B_b)`` with its interval and the parts of its variance."""

    metric: str
    mean: float
    low: float
    high: float
    level: float
    n_blocks: int
    block_var: float  # s^2: sample variance of the per-block differences (NaN with one block)
    row_var: float  # c: variance the shared test rows add to the mean difference
    df: float  # degrees of freedom of the t quantile (inf: normal)
    row_df: float  # degrees of freedom of the estimate of row_var (inf: exact or absent)

    @property
    def excludes_zero(self) -> bool:
        """True when the interval lies strictly above or strictly below 0."""
        return self.low > 0 or self.high < 0

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    @property
    def rows_only(self) -> bool:
        """One block: the interval holds the test rows' noise only."""
        return self.n_blocks < 2

    def text(self, fmt: str = "+.3f") -> str:
        """E.g. ``"+0.041 [-0.012, +0.093] (no difference resolved)"``."""
        out = f"{self.mean:{fmt}} [{self.low:{fmt}}, {self.high:{fmt}}]"
        if self.rows_only:
            out += " (test rows only)"
        return out if self.excludes_zero else out + " (no difference resolved)"

    def detectable(self, power: float = POWER) -> float:
        """The smallest true difference these blocks detect with probability ``power`` (a
        two-sided test at this interval's level), at the estimated noise."""
        return _detectable(self.block_var, self.row_var, self.n_blocks, self.level, power, self.row_df)


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


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}")


def _blocks(
    a_runs: Sequence[Run], b_runs: Sequence[Run], task_names: Optional[Sequence[Sequence[str]]]
) -> tuple[list[list[np.ndarray]], list[list[np.ndarray]], list[list[str]]]:
    if len(a_runs) != len(b_runs):
        raise ValueError(
            f"A and B must be run in the same blocks: got {len(a_runs)} runs of A and {len(b_runs)} runs of B"
        )
    if len(a_runs) == 0:
        raise ValueError("no runs: a paired comparison needs at least one block")
    a = [_as_run(r, f"A, block {b}") for b, r in enumerate(a_runs)]
    b = [_as_run(r, f"B, block {i}") for i, r in enumerate(b_runs)]
    if task_names is None:  # every block in the same order
        task_names = [[str(j) for j in range(len(a[0]))]] * len(a)
    if len(task_names) != len(a):
        raise ValueError(f"task_names: one list per block expected, got {len(task_names)} for {len(a)} blocks")
    rows_of: dict[str, int] = {}
    for i, (ra, rb, names) in enumerate(zip(a, b, task_names)):
        if [x.shape for x in ra] != [x.shape for x in rb]:
            raise ValueError(
                f"block {i}: A and B must score the same test rows: A has per-task shapes "
                f"{[x.shape for x in ra]}, B has {[x.shape for x in rb]}"
            )
        if len(names) != len(ra) or len(set(names)) != len(names):
            raise ValueError(f"block {i}: task_names must name each of its {len(ra)} tasks once, got {list(names)}")
        for name, x in zip(names, ra):
            if rows_of.setdefault(name, x.shape[1]) != x.shape[1]:
                raise ValueError(
                    f"all blocks must score the same test rows: task {name!r} has {x.shape[1]} rows in "
                    f"block {i} and {rows_of[name]} in an earlier block"
                )
    if any(set(n) != set(task_names[0]) for n in task_names):
        raise ValueError("all blocks must train the same tasks (in any order)")
    return a, b, [list(n) for n in task_names]


# ---------------------------------------------------------------------------------------
# Core computation


def _matrix(run: list[np.ndarray]) -> np.ndarray:
    return np.stack([x.mean(axis=1) for x in run], axis=1)  # (T+1, T); NaN where unscored


def _gradient(metric: Metric, m: np.ndarray) -> np.ndarray:
    """d metric / d m[k, j] by central differences over the scored cells (0 elsewhere)."""
    grad = np.zeros_like(m)
    for k, j in zip(*np.nonzero(~np.isnan(m))):
        up, down = m.copy(), m.copy()
        up[k, j] += _STEP
        down[k, j] -= _STEP
        grad[k, j] = (metric(up) - metric(down)) / (2 * _STEP)
    return np.nan_to_num(grad)


def _row_contributions(run: list[np.ndarray], metric: Metric) -> tuple[float, list[np.ndarray]]:
    """The run's metric, and per task position j each row's contribution ``sum_k g[k,j] x[k,j,r]``
    (the metric moves by the mean of these over a task's rows)."""
    m = _matrix(run)
    g = _gradient(metric, m)
    return float(metric(m)), [np.nan_to_num(x).T @ g[:, j] for j, x in enumerate(run)]


def _variance_parts(
    a: list[list[np.ndarray]], b: list[list[np.ndarray]], names: list[list[str]], metric: Metric
) -> tuple[np.ndarray, float, float]:
    """Per-block differences D_b, the shared row variance c, and the degrees of freedom of c's
    estimate."""
    n = len(a)
    diffs = np.empty(n)
    per_task: dict[str, list[np.ndarray]] = {}  # task name -> per-block row contributions of D_b
    for i in range(n):
        va, ua = _row_contributions(a[i], metric)
        vb, ub = _row_contributions(b[i], metric)
        diffs[i] = va - vb
        for name, x, y in zip(names[i], ua, ub):
            per_task.setdefault(name, []).append(x - y)
    c, c_var = 0.0, 0.0  # the estimate and its sampling variance (each mean square ~ chi^2 / df)
    for contributions in per_task.values():
        u = np.stack(contributions)  # (n, N_j)
        N = u.shape[1]
        if N < 2:
            continue
        if n == 1:  # no way to tell shared from block-specific row noise: count all of it
            square = u[0].var(ddof=1)
            c += square / N
            c_var += 2 * (square / N) ** 2 / (N - 1)
            continue
        between = n * u.mean(axis=0).var(ddof=1)  # mean square between rows, df N-1
        within = u.var(axis=1, ddof=1).mean()  # mean square within rows, df n(N-1)
        scale = (n - 1) * N
        c += (between - within) / scale
        c_var += 2 * (between**2 / (N - 1) + within**2 / (n * (N - 1))) / scale**2
    c = max(c, 0.0)
    return diffs, c, (2 * c**2 / c_var if c > 0 and c_var > 0 else math.inf)


BLOCK_BOUND = 0.25  # the degrees of freedom take the block part at its upper 75% confidence bound


def _degrees_of_freedom(block_part: float, row_part: float, n: int, row_df: float) -> float:
    """Satterthwaite's degrees of freedom of ``block_part + row_part``, with the block part at
    its upper 75% confidence bound. Fed the estimate itself, the formula gives many degrees of
    freedom exactly when the estimate is by chance small (the row part then looks dominant),
    which is when the interval is already too narrow (benchmarks/interval_coverage.py shows
    that variant below the bound's coverage at 3 blocks)."""
    bound = block_part * (n - 1) / float(chi2.ppf(BLOCK_BOUND, n - 1))
    return _satterthwaite(bound, row_part, n, row_df)


def _satterthwaite(block_part: float, row_part: float, n: int, row_df: float) -> float:
    if block_part + row_part == 0:
        return math.inf
    denominator = block_part**2 / (n - 1) + row_part**2 / row_df
    return (block_part + row_part) ** 2 / denominator if denominator > 0 else math.inf


def _quantile(p: float, df: float) -> float:
    return float(norm.ppf(p)) if math.isinf(df) else float(t.ppf(p, df))


def paired_interval(
    a_runs: Sequence[Run],
    b_runs: Sequence[Run],
    metric: Metric,
    level: float = 0.95,
    name: str = "",
    task_names: Optional[Sequence[Sequence[str]]] = None,
) -> PairedDifference:
    """Paired difference ``mean_b metric(A_b) - metric(B_b)`` with a t interval.

    ``a_runs[b]`` and ``b_runs[b]`` are the per-row results of block b (same order in both).
    ``task_names[b]``: the tasks of block b in its training order, when blocks train the tasks
    in different orders (the rows of a task are matched by name across blocks; None: every
    block in the same order). Deterministic: no resampling.
    """
    _check_level(level)
    a, b, names = _blocks(a_runs, b_runs, task_names)
    n = len(a)
    diffs, row_var, row_df = _variance_parts(a, b, names, metric)
    mean = float(diffs.mean())
    if n == 1:
        block_var, variance, df = float("nan"), row_var, math.inf
    else:
        block_var = float(diffs.var(ddof=1))
        variance = block_var / n + row_var
        df = _degrees_of_freedom(block_var / n, row_var, n, row_df)
    half = _quantile(0.5 + level / 2, df) * math.sqrt(variance)
    return PairedDifference(
        metric=name,
        mean=mean,
        low=mean - half,
        high=mean + half,
        level=level,
        n_blocks=n,
        block_var=block_var,
        row_var=row_var,
        df=df,
        row_df=row_df,
    )


def block_interval(diffs: Sequence[float], level: float = 0.95, name: str = "") -> PairedDifference:
    """The t interval of per-block differences alone, for comparisons that kept only each
    run's metrics (no per-row results): it leaves out the test rows' shared noise, so it is
    narrower than ``paired_interval`` would be on the same runs."""
    _check_level(level)
    d = np.asarray(diffs, dtype=float)
    if d.size < 2:
        raise ValueError(f"a t interval needs at least 2 blocks, got {d.size}")
    mean, var = float(d.mean()), float(d.var(ddof=1))
    half = _quantile(0.5 + level / 2, d.size - 1) * math.sqrt(var / d.size)
    return PairedDifference(name, mean, mean - half, mean + half, level, int(d.size), var, 0.0, d.size - 1, math.inf)


def mean_interval(
    runs: Sequence[Run],
    metric: Metric,
    level: float = 0.95,
    name: str = "",
    task_names: Optional[Sequence[Sequence[str]]] = None,
) -> PairedDifference:
    """``mean_b metric(run_b)`` itself, with the same interval: the difference against an
    all-zero reference, which every metric of :mod:`mssr.metrics` maps to 0."""
    zeros = [[np.zeros_like(np.asarray(x, dtype=float)) for x in run] for run in runs]
    return paired_interval(runs, zeros, metric, level=level, name=name, task_names=task_names)


# ---------------------------------------------------------------------------------------
# Planning: what a number of blocks can detect, and how many blocks a difference needs


def _detectable(block_var: float, row_var: float, n: int, level: float, power: float, row_df: float) -> float:
    if n < 2 or math.isnan(block_var):
        return float("nan")
    df = _degrees_of_freedom(block_var / n, row_var, n, row_df)
    multiplier = _quantile(0.5 + level / 2, df) + _quantile(power, df)
    return multiplier * math.sqrt(block_var / n + row_var)


def blocks_needed(diff: PairedDifference, detect: float, power: float = POWER, limit: int = 10_000) -> Optional[int]:
    """The fewest blocks (2 or more) that detect a true difference of ``detect`` with
    probability ``power`` at the noise ``diff`` measured (the rows' shared variance taken as
    known: more blocks also estimate it better). None when the test rows' shared noise alone
    is too large (more blocks cannot help: more test rows can), when it would take more than
    ``limit`` blocks, or when ``diff`` has one block (no block noise known)."""
    if detect <= 0:
        raise ValueError(f"the difference to detect must be positive, got {detect}")
    if diff.n_blocks < 2 or math.isnan(diff.block_var):
        return None
    if (_quantile(0.5 + diff.level / 2, math.inf) + _quantile(power, math.inf)) * math.sqrt(diff.row_var) >= detect:
        return None  # the rows' part alone is too wide, whatever the blocks
    for n in range(2, limit + 1):
        if _detectable(diff.block_var, diff.row_var, n, diff.level, power, math.inf) <= detect:
            return n
    return None
