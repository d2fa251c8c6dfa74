"""The replay pool's rows, by reference through Ray's object store: no file, no copy per worker.

The driver tokenises every task (``pipelines.data.tokenise_tasks``) and puts each task's
tokenised rows in the object store once, as one Arrow table ordered by row index
(``share_task_rows``). The references travel to the workers in their ``LoopConfig``; the
driver holds them for the whole run, so the tables live as long as the run does. A worker
(``PoolRows``) maps a table on first use (zero-copy: the table's buffers are the object
store's shared memory, not a copy in the worker's heap) and materialises only the rows a
step replays or probes. Which samples are in the pool is the memory actor's business (the
planner's ids); any sample of a finished task can be fetched by its id.

    refs = share_task_rows(datasets)                 # driver, before training
    rows = PoolRows(refs).get([sample_id(2, 17)])    # worker: [(input_ids, prompt_len)]

A restore after a worker or actor failure needs nothing back: the references are still held
by the driver. ``--resume`` after a driver restart tokenises the same rows again (a seeded
order), so the same ids give the same rows.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa
import ray

from mssr.sample_ids import task_and_row
from pipelines.data import dataset_table

# token ids as int32 (every vocabulary fits): half the object-store memory of int64
POOL_SCHEMA = pa.schema([("input_ids", pa.list_(pa.int32())), ("prompt_len", pa.int32())])


def rows_by_index(table: pa.Table) -> pa.Table:
    """A task's tokenised rows ordered by row index (the position of a row is its id's low bits)."""
    table = table.sort_by("sample_id")
    rows = [task_and_row(i)[1] for i in table.column("sample_id").to_numpy()]
    if not np.array_equal(rows, np.arange(len(rows))):
        raise ValueError("a task's sample ids must number its rows 0..n-1")
    return table.select(POOL_SCHEMA.names).cast(POOL_SCHEMA).combine_chunks()


def share_task_rows(datasets: Sequence) -> list[ray.ObjectRef]:
    """Driver: each task's tokenised rows (``ray.data.Dataset``, materialised) put in the object
    store once, ordered by row index. Keep the returned references for the whole run."""
    refs = []
    for ds in datasets:
        table = dataset_table(ds)
        refs.append(ray.put(rows_by_index(table)))
    return refs


class PoolRows:
    """Worker: the (input_ids, prompt_len) of pool samples, read from the shared task tables."""

    def __init__(self, task_tables: Sequence[ray.ObjectRef]):
        self.refs = list(task_tables)
        # per task, mapped on first use: NumPy views of the table's buffers (token values,
        # row offsets into them, prompt lengths), no copy
        self.views: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def _views(self, task: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if task not in self.views:
            table = ray.get(self.refs[task])
            ids = table.column("input_ids").chunk(0)
            self.views[task] = (
                ids.values.to_numpy(),
                ids.offsets.to_numpy(),
                table.column("prompt_len").chunk(0).to_numpy(),
            )
        return self.views[task]

    def get(self, ids: Sequence[int]) -> list[tuple[list[int], int]]:
        """The rows of ``ids``, in that order: only these rows are copied out of the store."""
        out = []
        for sid in ids:
            task, row = task_and_row(int(sid))
            values, offsets, prompt_len = self._views(task)
            out.append((values[offsets[row] : offsets[row + 1]].tolist(), int(prompt_len[row])))
        return out
