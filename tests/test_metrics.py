import math

import numpy as np
import pytest

from mssr.metrics import (
    all_metrics,
    average_accuracy,
    average_performance,
    backward_transfer,
    forgetting,
    format_matrix,
    format_metric,
    forward_transfer,
    loss_metrics,
    tasks_to_score,
)

# 3 tasks; row 0 before training. Hand-computed values below.
A = [
    [0.1, 0.2, 0.0],  # before training
    [0.9, 0.3, 0.1],  # after task 1
    [0.6, 0.8, 0.2],  # after task 2
    [0.5, 0.7, 0.9],  # after task 3
]


def test_metrics_match_hand_computation():
    m = all_metrics(A)
    assert m["ap"] == pytest.approx((0.5 + 0.7 + 0.9) / 3)
    # BWT: (a[3][1]-a[1][1] + a[3][2]-a[2][2]) / 2 = (0.5-0.9 + 0.7-0.8)/2
    assert m["bwt"] == pytest.approx(((0.5 - 0.9) + (0.7 - 0.8)) / 2)
    # FWT: (a[1][2]-a[0][2] + a[2][3]-a[0][3]) / 2 = (0.3-0.2 + 0.2-0.0)/2
    assert m["fwt"] == pytest.approx(((0.3 - 0.2) + (0.2 - 0.0)) / 2)
    # forgetting: task1 max(0.9,0.6)-0.5=0.4 ; task2 max(0.8)-0.7=0.1
    assert m["forgetting"] == pytest.approx((0.4 + 0.1) / 2)
    # Avg: (0.9 + (0.6+0.8)/2 + (0.5+0.7+0.9)/3) / 3
    assert m["avg"] == pytest.approx((0.9 + 0.7 + 0.7) / 3)


def test_single_task_has_no_transfer():
    m = all_metrics([[0.0], [0.8]])
    assert m["ap"] == pytest.approx(0.8)
    assert m["bwt"] == m["fwt"] == m["forgetting"] == 0.0


def test_wrong_shape_is_rejected():
    with pytest.raises(ValueError, match="T\\+1"):
        all_metrics(np.zeros((3, 3)))


def test_format_matrix_lists_every_row():
    text = format_matrix(A, ["a", "b", "c"])
    assert len(text.splitlines()) == 5 and "(start)" in text and "0.900" in text


# the loss matrix of the same 3 tasks (mean answer loss; lower is better)
L = [
    [3.0, 2.5, 4.0],  # before training
    [0.4, 2.0, 3.5],  # after task 1
    [0.9, 0.3, 3.0],  # after task 2
    [1.2, 0.5, 0.2],  # after task 3
]


def test_loss_metrics_match_hand_computation():
    m = loss_metrics(L)
    assert m["loss_final"] == pytest.approx((1.2 + 0.5 + 0.2) / 3)
    # loss BWT: (L[3][1]-L[1][1] + L[3][2]-L[2][2]) / 2 = (1.2-0.4 + 0.5-0.3)/2: positive, the losses rose
    assert m["loss_bwt"] == pytest.approx(((1.2 - 0.4) + (0.5 - 0.3)) / 2)
    # loss forgetting: task 1 1.2-min(0.4,0.9)=0.8 ; task 2 0.5-min(0.3)=0.2
    assert m["loss_forgetting"] == pytest.approx((0.8 + 0.2) / 2)


def test_loss_forgetting_takes_the_best_loss_not_the_first():
    # task 1's loss kept falling after its own training (0.4 -> 0.1) before rising to 0.6
    m = loss_metrics([[2.0, 2.0], [0.4, 1.5], [0.6, 0.3]])
    assert m["loss_forgetting"] == pytest.approx(0.6 - 0.4)
    m = loss_metrics([[2.0, 2.0, 2.0], [0.4, 1.5, 2.0], [0.1, 0.3, 2.0], [0.6, 0.5, 0.2]])
    assert m["loss_forgetting"] == pytest.approx(((0.6 - 0.1) + (0.5 - 0.3)) / 2)


def test_unmeasured_cells_of_a_continued_run():
    """A run continued with task 3 has no score for it before the continuation (rows 0, 1):
    AP, BWT and forgetting read only measured cells; FWT leaves task 3 out."""
    nan = float("nan")
    a = [[0.0, 0.1, nan], [0.8, 0.2, nan], [0.5, 0.9, 0.05], [0.4, 0.7, 1.0]]
    full = [[0.0, 0.1, 0.0], [0.8, 0.2, 0.0], [0.5, 0.9, 0.05], [0.4, 0.7, 1.0]]
    for f in (average_performance, backward_transfer, forgetting, average_accuracy):
        assert f(a) == pytest.approx(f(full))
    assert forward_transfer(a) == pytest.approx(0.2 - 0.1)  # task 2 only (a[1][2] - a[0][2], 1-based)
    assert math.isnan(forward_transfer([[nan, nan], [0.5, nan], [0.4, 0.9]]))
    text = format_matrix(a, ["t1", "t2", "t3"])
    assert text.splitlines()[1].split()[-1] == "-" and "nan" not in text


def _cells(T: int, future_tasks: str, seen_tasks: str) -> list[list[int]]:
    return [tasks_to_score(k, T, future_tasks, seen_tasks) for k in range(T + 1)]


def test_cells_scored_for_each_evaluation_setting():
    assert _cells(3, "next", "all") == [[0, 1, 2], [0, 1], [0, 1, 2], [0, 1, 2]]
    assert _cells(3, "all", "latest") == [[0, 1, 2]] * 4
    # latest: the task just trained (BWT's reference), then every task after the last one (AP's)
    assert _cells(3, "next", "latest") == [[0, 1, 2], [0, 1], [1, 2], [0, 1, 2]]
    assert _cells(4, "none", "latest") == [[], [0], [1], [2], [0, 1, 2, 3]]
    assert _cells(4, "none", "all") == [[], [0], [0, 1], [0, 1, 2], [0, 1, 2, 3]]
    # 11 tasks: 21 task scorings instead of 87 (the default) or 66 (none, all)
    assert sum(map(len, _cells(11, "none", "latest"))) == 21
    assert sum(map(len, _cells(11, "next", "all"))) == 87


def test_latest_only_cells_keep_ap_and_bwt_and_measure_forgetting_from_the_diagonal():
    """With eval.seen_tasks=latest the rows between a task's own and the last are unscored: AP
    and BWT are those of the full matrix; forgetting is each task's drop from its score right
    after training (task 1 here peaked later, at 0.95, which the full matrix's forgetting sees);
    Avg, which needs every cell below the diagonal, is NaN."""
    nan = float("nan")
    full = [[0.1, 0.2, 0.0], [0.9, 0.3, 0.1], [0.95, 0.8, 0.2], [0.5, 0.7, 0.9]]
    lean = np.asarray(full)
    lean[0, :] = nan  # future_tasks none
    lean[2, 0] = nan  # task 1 unscored after task 2
    lean[1, 1:] = nan
    lean[2, 2] = nan
    assert average_performance(lean) == pytest.approx(average_performance(full))
    assert backward_transfer(lean) == pytest.approx(backward_transfer(full))
    assert forgetting(lean) == pytest.approx(((0.9 - 0.5) + (0.8 - 0.7)) / 2)
    assert forgetting(full) == pytest.approx(((0.95 - 0.5) + (0.8 - 0.7)) / 2)
    assert math.isnan(average_accuracy(lean)) and math.isnan(forward_transfer(lean))
    losses = np.where(np.isnan(lean), nan, 1.0 - lean)
    assert loss_metrics(losses)["loss_forgetting"] == pytest.approx(((0.5 - 0.1) + (0.3 - 0.2)) / 2)


def test_format_metric_signs_transfers_and_marks_unscored():
    assert (format_metric("fwt", 0.05), format_metric("ap", 0.62), format_metric("avg", float("nan"))) == (
        "+0.050",
        "0.620",
        "-",
    )
