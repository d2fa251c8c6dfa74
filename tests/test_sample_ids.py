"""Sample ids (mssr/sample_ids.py): task and row in, task and row out, exact as float64."""

import numpy as np
import pytest

from mssr.sample_ids import MAX_TASKS, sample_id, task_and_row, task_of


def test_ids_name_their_task_and_row_and_back():
    for task, row in [(0, 0), (3, 17), (1, 2**32 - 1), (MAX_TASKS - 1, 2**32 - 1)]:
        sid = sample_id(task, row)
        assert task_and_row(sid) == (task, row) and task_of(sid) == task
    assert sample_id(1, 0) > sample_id(0, 2**32 - 1)  # ordered by task, then row


def test_every_id_is_exact_as_float64():
    """A step's observations are gathered across ranks as float64 (mssr.step_gather)."""
    largest = sample_id(MAX_TASKS - 1, 2**32 - 1)
    assert largest < 2**53 and int(np.float64(largest)) == largest


@pytest.mark.parametrize("task,row", [(-1, 0), (0, -1), (0, 2**32), (MAX_TASKS, 0)])
def test_out_of_range_is_refused(task, row):
    with pytest.raises(ValueError, match="expected a task below"):
        sample_id(task, row)
