import math

import numpy as np
import pytest
from scipy.stats import norm

from mssr.intervals import (
    PairedDifference,
    noise_components,
    paired_bootstrap,
    projected_half_width,
    rows_scale_needed,
    seeds_needed,
)
from mssr.metrics import all_metrics, average_performance, backward_transfer, forgetting

Z95 = norm.ppf(0.975)


def random_run(rng, T, n_rows, p=0.5):
    """One run's per-row 0/1 results: T arrays (T+1, n_rows)."""
    return [(rng.random((T + 1, n_rows)) < p).astype(float) for _ in range(T)]


def matrix(run):
    return np.array([[task[k].mean() for task in run] for k in range(len(run) + 1)])


# --- 1. known answers -------------------------------------------------------------------


def test_point_estimate_is_exact_difference_and_interval_contains_it():
    rng = np.random.default_rng(1)
    T, n_rows, n_extra = 3, 40, 4  # A solves 4 more of 40 rows of every task at the end
    b_runs = [random_run(rng, T, n_rows, p=0.4) for _ in range(3)]
    a_runs = []
    for b in b_runs:
        a = [task.copy() for task in b]
        for task in a:
            wrong = np.flatnonzero(task[T] == 0)[:n_extra]
            task[T, wrong] = 1.0
        a_runs.append(a)

    diff = paired_bootstrap(a_runs, b_runs, average_performance, n_boot=1000, name="ap")
    assert diff.mean == pytest.approx(n_extra / n_rows)
    assert diff.low <= n_extra / n_rows <= diff.high
    assert diff.low < diff.high  # the test rows are noisy even though every seed agrees
    assert diff.excludes_zero  # A is never worse on any row
    assert (diff.metric, diff.n_seeds, diff.n_boot, diff.level) == ("ap", 3, 1000, 0.95)


def test_identical_strategies_give_zero_width_interval_at_zero():
    rng = np.random.default_rng(2)
    runs = [random_run(rng, T=2, n_rows=30) for _ in range(4)]
    diff = paired_bootstrap(runs, [[t.copy() for t in r] for r in runs], backward_transfer, n_boot=300)
    assert diff.mean == 0 and diff.low == 0 and diff.high == 0
    assert not diff.excludes_zero
    assert diff.text() == "+0.000 [+0.000, +0.000] (contains 0)"


@pytest.mark.parametrize("metric_name", ["ap", "bwt", "fwt", "forgetting", "avg"])
def test_point_estimate_matches_metrics_on_the_accuracy_matrices(metric_name):
    rng = np.random.default_rng(3)
    T = 3
    a_runs = [random_run(rng, T, n_rows=25, p=0.6) for _ in range(3)]
    b_runs = [random_run(rng, T, n_rows=25, p=0.5) for _ in range(3)]

    def metric(m):
        return all_metrics(m)[metric_name]

    expected = np.mean([metric(matrix(a)) - metric(matrix(b)) for a, b in zip(a_runs, b_runs)])
    diff = paired_bootstrap(a_runs, b_runs, metric, n_boot=50)
    assert diff.mean == pytest.approx(expected)


def test_text_formats_interval_and_flags_zero():
    inside = PairedDifference("ap", 0.041, -0.012, 0.093, 0.95, 5, 2000)
    above = PairedDifference("ap", 0.041, 0.012, 0.093, 0.95, 5, 2000)
    below = PairedDifference("ap", -0.041, -0.093, -0.012, 0.95, 5, 2000)
    assert inside.text() == "+0.041 [-0.012, +0.093] (contains 0)"
    assert above.text() == "+0.041 [+0.012, +0.093]"
    assert below.text(fmt=".2f") == "-0.04 [-0.09, -0.01]"
    assert (inside.excludes_zero, above.excludes_zero, below.excludes_zero) == (False, True, True)


# --- 2. coverage against a known model -------------------------------------------------------


def simulate_comparison(rng, n_seeds, n_rows, T, p_a, p_b, seed_sd):
    """Row r of task j has a latent difficulty u ~ U(0, 1) shared by every run; a run solves
    it when u < p + (the run's offset, normal with sd ``seed_sd``). So the expected AP of a
    strategy is p and the true difference is p_a - p_b; the rows are one shared sample."""
    difficulty = [rng.random(n_rows) for _ in range(T)]

    def runs(p):
        out = []
        for _ in range(n_seeds):
            threshold = p + rng.normal(0, seed_sd, size=(T + 1, T))
            out.append([(difficulty[j][None, :] < threshold[:, j, None]).astype(float) for j in range(T)])
        return out

    return runs(p_a), runs(p_b)


def test_interval_covers_true_difference_at_about_the_nominal_rate():
    rng = np.random.default_rng(11)
    p_a, p_b, n_sims = 0.55, 0.50, 200
    covered = 0
    for i in range(n_sims):
        a_runs, b_runs = simulate_comparison(rng, n_seeds=10, n_rows=150, T=2, p_a=p_a, p_b=p_b, seed_sd=0.03)
        diff = paired_bootstrap(a_runs, b_runs, average_performance, n_boot=400, seed=i)
        covered += diff.low <= p_a - p_b <= diff.high
    assert 0.90 <= covered / n_sims <= 0.99


# --- 3. one seed: the row noise of a paired difference of proportions --------------------


def one_seed_pair(rng, n_rows=400):
    b = (rng.random(n_rows) < 0.6).astype(float)
    a = b.copy()
    flips = rng.choice(n_rows, size=40, replace=False)  # A and B agree on 90% of rows
    a[flips] = 1 - a[flips]

    def to_run(final):
        return [np.vstack([np.zeros_like(final), final])]  # T=1: (2, N)

    return a, b, [to_run(a)], [to_run(b)]


def test_one_seed_width_matches_paired_standard_error_and_beats_unpaired():
    a, b, a_runs, b_runs = one_seed_pair(np.random.default_rng(5))
    n_rows = len(a)
    paired_se = np.std(a - b) / math.sqrt(n_rows)
    unpaired_se = math.sqrt((a.mean() * (1 - a.mean()) + b.mean() * (1 - b.mean())) / n_rows)

    diff = paired_bootstrap(a_runs, b_runs, average_performance, n_boot=4000)
    width = diff.high - diff.low
    assert diff.n_seeds == 1
    assert diff.mean == pytest.approx(a.mean() - b.mean())
    assert width == pytest.approx(2 * Z95 * paired_se, rel=0.10)
    assert width < 2 * Z95 * unpaired_se
    assert paired_se < 0.6 * unpaired_se  # the pairing matters a lot here


# --- 4. noise components and planning ------------------------------------------------------


def constant_row_runs(a_shifts, T=2, n_rows=16):
    """Every row of a task scores the same, so resampling rows changes nothing. B scores 0.5
    everywhere; A scores 0.5 + shift_s at the end, so the AP difference of seed s is shift_s."""
    b_runs, a_runs = [], []
    for shift in a_shifts:
        b = [np.full((T + 1, n_rows), 0.5) for _ in range(T)]
        a = [task.copy() for task in b]
        for task in a:
            task[T] += shift
        a_runs.append(a)
        b_runs.append(b)
    return a_runs, b_runs


def test_without_row_noise_seeds_needed_is_the_analytic_count():
    shifts = [0.125, 0.25, 0.0, 0.375, 0.25, 0.5]
    a_runs, b_runs = constant_row_runs(shifts)
    parts = noise_components(a_runs, b_runs, average_performance, n_boot=200)
    assert parts["row_var"] == pytest.approx(0, abs=1e-24)
    assert parts["seed_var"] == pytest.approx(np.var(shifts, ddof=1))
    assert parts["n_seeds"] == 6 and parts["rows_per_task"] == 16

    sd = math.sqrt(parts["seed_var"])
    for half_width in (0.2, 0.05, 0.01):
        n = seeds_needed(parts, half_width)
        assert n == math.ceil((Z95 * sd / half_width) ** 2)
        assert projected_half_width(parts, n) <= half_width
        assert n == 1 or projected_half_width(parts, n - 1) > half_width
    assert rows_scale_needed(parts, 0.05, n_seeds=1000) == 0.0  # rows are not the limit


def test_with_one_seed_only_row_noise_remains():
    a, b, a_runs, b_runs = one_seed_pair(np.random.default_rng(6))
    parts = noise_components(a_runs, b_runs, average_performance, n_boot=3000)
    assert parts["seed_var"] == 0
    assert parts["n_seeds"] == 1 and parts["rows_per_task"] == len(a)
    assert parts["row_var"] == pytest.approx(np.var(a - b) / len(a), rel=0.15)
    # More seeds cannot help: the row noise is shared by all seeds.
    assert projected_half_width(parts, 1) == pytest.approx(projected_half_width(parts, 100))
    assert seeds_needed(parts, projected_half_width(parts, 1) / 2) is None
    assert seeds_needed(parts, projected_half_width(parts, 1) * 1.01) == 1
    # Four times the rows halve the width.
    scale = rows_scale_needed(parts, projected_half_width(parts, 1) / 2, n_seeds=1)
    assert scale == pytest.approx(4.0)


def test_projection_formulas_by_hand():
    parts = {"seed_var": 0.01, "row_var": 0.0004, "n_seeds": 5, "rows_per_task": 100.0}
    z90 = norm.ppf(0.95)
    assert projected_half_width(parts, 10, rows_scale=2.0, level=0.90) == pytest.approx(
        z90 * math.sqrt(0.01 / 10 + 0.0004 / 2)
    )
    # Row part alone: z * 0.02 = 0.039; below that no number of seeds suffices.
    assert seeds_needed(parts, 0.035) is None
    assert seeds_needed(parts, 0.035, rows_scale=4.0) == math.ceil(0.01 / ((0.035 / Z95) ** 2 - 0.0001))
    # Seed part with 10 seeds: z * sqrt(0.001) = 0.062; no number of rows helps below it.
    assert rows_scale_needed(parts, 0.06, n_seeds=10) is None
    assert rows_scale_needed(parts, 0.08, n_seeds=10) == pytest.approx(0.0004 / ((0.08 / Z95) ** 2 - 0.001))


def test_components_predict_the_bootstrap_width():
    rng = np.random.default_rng(8)
    a_runs, b_runs = simulate_comparison(rng, n_seeds=8, n_rows=200, T=2, p_a=0.55, p_b=0.5, seed_sd=0.03)
    parts = noise_components(a_runs, b_runs, average_performance, n_boot=1000)
    assert parts["seed_var"] > 0 and parts["row_var"] > 0
    diff = paired_bootstrap(a_runs, b_runs, average_performance, n_boot=1000)
    projected = projected_half_width(parts, parts["n_seeds"])
    assert (diff.high - diff.low) / 2 == pytest.approx(projected, rel=0.25)


# --- 5. input validation -----------------------------------------------------------------------


def test_invalid_inputs_are_rejected_with_clear_messages():
    rng = np.random.default_rng(9)

    def run(n_rows=10, T=2):
        return random_run(rng, T, n_rows)

    ap = average_performance
    with pytest.raises(ValueError, match="same seeds: got 2 runs of A and 1 runs of B"):
        paired_bootstrap([run(), run()], [run()], ap)
    with pytest.raises(ValueError, match="at least one seed"):
        paired_bootstrap([], [], ap)
    with pytest.raises(ValueError, match="same test rows: B, seed index 1"):
        paired_bootstrap([run(), run()], [run(), run(n_rows=11)], ap)
    with pytest.raises(ValueError, match="same test rows"):
        paired_bootstrap([run(T=2)], [run(T=3)], ap)
    with pytest.raises(ValueError, match=r"shape \(T\+1, N\) = \(3, N>=1\)"):
        paired_bootstrap([[np.zeros((2, 5)), np.zeros((3, 5))]], [run()], ap)
    with pytest.raises(ValueError, match="at least one task"):
        paired_bootstrap([[]], [[]], ap)
    with pytest.raises(ValueError, match="after 1 tasks: some test rows are NaN, not all"):
        paired_bootstrap([[np.array([[0.0, 1.0], [np.nan, 1.0]])]], [[np.zeros((2, 2))]], ap)
    with pytest.raises(ValueError, match="infinity"):
        paired_bootstrap([[np.array([[0.0], [np.inf]])]], [[np.zeros((2, 1))]], ap)
    with pytest.raises(ValueError, match="level"):
        paired_bootstrap([run()], [run()], ap, level=95)
    with pytest.raises(ValueError, match="n_boot"):
        paired_bootstrap([run()], [run()], ap, n_boot=1)
    with pytest.raises(ValueError, match="same seeds"):
        noise_components([run()], [], ap)
    parts = {"seed_var": 0.01, "row_var": 0.0}
    with pytest.raises(ValueError, match="n_seeds"):
        projected_half_width(parts, 0)
    with pytest.raises(ValueError, match="half_width"):
        seeds_needed(parts, 0.0)
    with pytest.raises(ValueError, match="rows_scale"):
        seeds_needed(parts, 0.1, rows_scale=0)


# --- 6. determinism ------------------------------------------------------------------------------


def test_same_seed_gives_the_same_interval():
    rng = np.random.default_rng(10)
    a_runs = [random_run(rng, T=3, n_rows=30, p=0.6) for _ in range(4)]
    b_runs = [random_run(rng, T=3, n_rows=30) for _ in range(4)]
    first = paired_bootstrap(a_runs, b_runs, forgetting, n_boot=300, seed=7)
    again = paired_bootstrap(a_runs, b_runs, forgetting, n_boot=300, seed=7)
    other = paired_bootstrap(a_runs, b_runs, forgetting, n_boot=300, seed=8)
    assert first == again
    assert (first.low, first.high) != (other.low, other.high)
    assert first.mean == other.mean  # the point estimate does not depend on the seed
    assert noise_components(a_runs, b_runs, forgetting, n_boot=200, seed=3) == noise_components(
        a_runs, b_runs, forgetting, n_boot=200, seed=3
    )


# --- 7. unscored cells ------------------------------------------------------------------------------


def test_cells_no_metric_reads_may_be_unscored():
    """Runs score only the cells the metrics read (mssr.metrics.tasks_to_score): the others are
    NaN, and the intervals equal those of the same runs with those cells filled in."""
    from mssr.metrics import METRICS, tasks_to_score

    rng = np.random.default_rng(11)
    T = 4
    full_a = [random_run(rng, T, 20) for _ in range(3)]
    full_b = [random_run(rng, T, 20) for _ in range(3)]

    def unscored(run):
        out = [task.copy() for task in run]
        for k in range(T + 1):
            for j in set(range(T)) - set(tasks_to_score(k, T, "next")):
                out[j][k] = np.nan
        return out

    part_a, part_b = [unscored(r) for r in full_a], [unscored(r) for r in full_b]
    assert sum(np.isnan(t).all(axis=1).sum() for t in part_a[0]) == 3  # rows 1 and 2 leave 3 cells out
    for name in METRICS:
        fn = lambda m, name=name: all_metrics(m)[name]  # noqa: E731
        whole = paired_bootstrap(full_a, full_b, fn, n_boot=200)
        part = paired_bootstrap(part_a, part_b, fn, n_boot=200)
        assert (part.mean, part.low, part.high) == pytest.approx((whole.mean, whole.low, whole.high)), name
