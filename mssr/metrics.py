"""Continual-learning metrics over the accuracy matrix.

``a`` has T+1 rows and T columns: ``a[k][j]`` is the score on task j (0-based column) after
training tasks 1..k, row 0 being the model before any training. With 1-based task j at
column j-1:

* AP  = mean_j a[T][j]
* BWT = mean_{j<T} (a[T][j] - a[j][j])
* FWT = mean_{j>1} (a[j-1][j] - a[0][j])
* Forgetting = mean_{j<T} (max_{j<=k<T} a[k][j] - a[T][j])
* Avg = mean_{k>=1} mean_{j<=k} a[k][j]

The loss matrix ``L[k][j]`` (mean answer loss of task j's test rows after training tasks
1..k) gets the same formulas, with the sign of "better" reversed where it matters:

* final loss      = mean_j L[T][j]                                 (the AP of losses)
* loss BWT        = mean_{j<T} (L[T][j] - L[j][j])                  (positive: the loss rose, forgetting)
* loss forgetting = mean_{j<T} (L[T][j] - min_{j<=k<T} L[k][j])     (rise above each task's best loss)
* anytime loss    = mean_j mean_{k>=j} L[k][j]                      (each task's loss over every
                                                                     evaluation after it was learned)

The anytime loss is the yardstick a schedule cannot game: the final loss reads the last row
only, so replay crowded in just before the last evaluation can lower it while the stream's
tasks were forgotten for most of its length; the anytime loss weighs every evaluation after a
task was learned alike.

Forgetting shows in the loss long before it flips an exact match, and a mean over every
test row's loss is far less noisy than a mean of 0/1 scores.

A cell can be unmeasured (NaN). Runs score only the cells these formulas read
(``tasks_to_score``; ``eval.future_tasks``): row 0 whole, and after task k the tasks up to
k + 1, the next task being FWT's. A run continued with new tasks (``mssr continue``) has no
score for them in the rows before the continuation. AP, BWT and the loss matrix's final
loss and BWT read only the diagonal and the last row, which are always measured; forgetting
takes each task's best over the rows that scored it (all rows from its own on, or with
``eval.seen_tasks: latest`` its diagonal cell alone, when forgetting is the drop from the
score right after training); Avg needs every cell below the diagonal (NaN without them);
FWT leaves out the tasks whose ``a[0][j]`` is unmeasured (NaN if that is all of them); the
anytime loss, like Avg, needs every cell on and below the diagonal (``eval.seen_tasks: all``).
``METRIC_SPECS`` says which cells each metric reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import numpy as np

from mssr.errors import ConfigError, did_you_mean


def _check(a: Sequence[Sequence[float]]) -> np.ndarray:
    m = np.asarray(a, dtype=float)
    if m.ndim != 2 or m.shape[0] != m.shape[1] + 1:
        raise ValueError(f"accuracy matrix must be (T+1) x T, got shape {m.shape}")
    return m


def average_performance(a) -> float:
    m = _check(a)
    return float(m[-1].mean())


def backward_transfer(a) -> float:
    m = _check(a)
    T = m.shape[1]
    if T < 2:
        return 0.0
    return float(np.mean([m[T, j - 1] - m[j, j - 1] for j in range(1, T)]))


def forward_transfer(a) -> float:
    m = _check(a)
    T = m.shape[1]
    if T < 2:
        return 0.0
    gains = [m[j - 1, j - 1] - m[0, j - 1] for j in range(2, T + 1) if not np.isnan(m[0, j - 1])]
    return float(np.mean(gains)) if gains else float("nan")


def forgetting(a, higher_is_better: bool = True) -> float:
    """Mean drop of each earlier task from its best value to its final one (for a loss
    matrix, ``higher_is_better=False``: the mean rise above each task's lowest loss)."""
    m = _check(a)
    T = m.shape[1]
    if T < 2:
        return 0.0
    sign = 1.0 if higher_is_better else -1.0  # a loss: the same on the negated matrix
    # the best of the rows that scored the task (its diagonal cell always did)
    return float(np.mean([np.nanmax(sign * m[j:T, j - 1]) - sign * m[T, j - 1] for j in range(1, T)]))


def average_accuracy(a) -> float:
    m = _check(a)
    T = m.shape[1]
    return float(np.mean([m[k, :k].mean() for k in range(1, T + 1)]))


def anytime(a) -> float:
    """Mean over tasks of each task's value averaged over every row from its own on (the row
    after it was trained, to the last); NaN when one of those cells was not scored."""
    m = _check(a)
    T = m.shape[1]
    return float(np.mean([m[j:, j - 1].mean() for j in range(1, T + 1)]))


def tasks_to_score(row: int, n_tasks: int, future_tasks: str, seen_tasks: str = "all") -> list[int]:
    """The tasks (0-based) scored for row ``row`` of the matrices (0: before training, k: after
    task k).

    ``eval.seen_tasks``: ``"all"``, row k scores the k tasks trained (every cell forgetting's
    maximum, Avg and the per-task curves read); ``"latest"``, row k scores only task k, the
    task just trained (BWT's reference), and the last row every task (AP's): a stream of T
    tasks is scored about 2T times instead of T^2/2. ``eval.future_tasks``: ``"next"``, row 0
    every task (FWT's baseline, the first row of the heatmap) and row k also the next task;
    ``"none"``, neither (no FWT); ``"all"``, every task in every row (a full heatmap)."""
    if future_tasks == "all":
        return list(range(n_tasks))
    if row == 0:
        return list(range(n_tasks)) if future_tasks == "next" else []
    seen = list(range(min(row, n_tasks))) if seen_tasks == "all" or row >= n_tasks else [row - 1]
    upcoming = [row] if future_tasks == "next" and row < n_tasks else []
    return seen + upcoming


# every metric of a run's matrices: True where higher is better
METRICS = {"ap": True, "bwt": True, "fwt": True, "forgetting": False, "avg": True}
LOSS_METRICS = {"loss_final": False, "loss_bwt": False, "loss_forgetting": False, "loss_anytime": False}
SIGNED = frozenset({"bwt", "fwt", "loss_bwt"})  # transfers: printed with their sign


def format_metric(name: str, value: float) -> str:
    """``+0.050`` for a transfer, ``0.620`` for the others, ``-`` when its cells were not scored."""
    if np.isnan(value):
        return "-"
    return f"{value:+.3f}" if name in SIGNED else f"{value:.3f}"


def all_metrics(a) -> dict[str, float]:
    return {
        "ap": average_performance(a),
        "bwt": backward_transfer(a),
        "fwt": forward_transfer(a),
        "forgetting": forgetting(a),
        "avg": average_accuracy(a),
    }


def loss_metrics(loss_matrix) -> dict[str, float]:
    """Final loss, loss BWT and loss forgetting of a (T+1) x T loss matrix (see above)."""
    return {
        "loss_final": average_performance(loss_matrix),
        "loss_bwt": backward_transfer(loss_matrix),
        "loss_forgetting": forgetting(loss_matrix, higher_is_better=False),
        "loss_anytime": anytime(loss_matrix),
    }


@dataclass(frozen=True)
class MetricSpec:
    """One metric of a run's matrices, as comparisons use it."""

    name: str  # its key in summary.json and MLflow
    label: str  # its column in tables
    matrix: Literal["scores", "losses"]  # the accuracy matrix (scores) or the loss matrix
    fn: Callable[[np.ndarray], float]
    higher_is_better: bool
    cells: str  # which cells it reads: what a run must have scored


METRIC_SPECS: dict[str, MetricSpec] = {
    s.name: s
    for s in (
        MetricSpec("loss_final", "final loss", "losses", average_performance, False, "the last row"),
        MetricSpec("loss_anytime", "anytime loss", "losses", anytime, False, "every cell on and below the diagonal"),
        MetricSpec("ap", "AP", "scores", average_performance, True, "the last row"),
        MetricSpec("bwt", "BWT", "scores", backward_transfer, True, "the diagonal and the last row"),
        MetricSpec("fwt", "FWT", "scores", forward_transfer, True, "row 0 and the cells just above the diagonal"),
        MetricSpec("forgetting", "forgetting", "scores", forgetting, False, "each column from the diagonal down"),
        MetricSpec("avg", "Avg", "scores", average_accuracy, True, "every cell on and below the diagonal"),
        MetricSpec("loss_bwt", "loss BWT", "losses", backward_transfer, False, "the diagonal and the last row"),
        MetricSpec(
            "loss_forgetting",
            "loss forgetting",
            "losses",
            lambda m: forgetting(m, higher_is_better=False),
            False,
            "each column from the diagonal down",
        ),
    )
}


def metric_spec(name: str) -> MetricSpec:
    """The metric called ``name``; an unknown name raises ConfigError naming the nearest."""
    if name not in METRIC_SPECS:
        known = f" (known: {', '.join(METRIC_SPECS)})"
        raise ConfigError(f"unknown metric {name!r}{did_you_mean(name, list(METRIC_SPECS), otherwise=known)}")
    return METRIC_SPECS[name]


def format_matrix(a, task_names: list[str]) -> str:
    """The matrix as a fixed-width text table (rows: after which task; columns: tasks)."""
    m = np.asarray(a, dtype=float)
    width = max(8, *(len(n) for n in task_names))
    head = f"{'after':<{width}}" + "".join(f" {n[:width]:>{width}}" for n in task_names)
    lines = [head]
    for k, row in enumerate(m):
        label = "(start)" if k == 0 else task_names[k - 1]
        cells = ("-" if np.isnan(v) else f"{v:.3f}" for v in row)  # "-": not measured
        lines.append(f"{label[:width]:<{width}}" + "".join(f" {c:>{width}}" for c in cells))
    return "\n".join(lines)
