"""A stored sample's id: one integer that names its task and its row, unique across the stream.

    sid = sample_id(task_index=2, row=17)    # 2 * 2**32 + 17
    task_and_row(sid)                        # (2, 17)
    task_of(sid)                             # 2

The one place ids are made and read: tokenisation writes them into each task's rows, the
replay plans and the pool carry them, and the diagnostics group replays by ``task_of``.
Ids travel as int64 through Ray Data and the plans, and as float64 when a step's
observations are gathered across ranks (``mssr.step_gather``): 2^32 rows per task leaves room
for 2^21 tasks below 2^53, where float64 stops being exact.
"""

from __future__ import annotations

ROW_BITS = 32  # rows per task: 2^32, far above any task's size
MAX_TASKS = 1 << (53 - ROW_BITS)  # ids stay below 2^53: exact as float64


def sample_id(task_index: int, row: int) -> int:
    if not 0 <= row < 1 << ROW_BITS or not 0 <= task_index < MAX_TASKS:
        raise ValueError(
            f"sample id of task {task_index}, row {row}: expected a task below {MAX_TASKS} and a row below 2^32"
        )
    return (task_index << ROW_BITS) + row


def task_and_row(sid: int) -> tuple[int, int]:
    """The task index and row index of a sample id (``sample_id``'s inverse)."""
    return sid >> ROW_BITS, sid & ((1 << ROW_BITS) - 1)


def task_of(sid: int) -> int:
    return sid >> ROW_BITS
