"""The replay pool's rows by reference (pipelines/pool.py): a worker gets exactly the rows of
the ids it asks for, from tables put in a real (local) Ray object store."""

import numpy as np
import pyarrow as pa
import pytest

from mssr.sample_ids import sample_id, task_and_row
from pipelines.pool import PoolRows, rows_by_index


def _task_table(task: int, n: int, rng) -> pa.Table:
    order = rng.permutation(n)  # training order, as pipelines.data makes it
    rows = [list(rng.integers(0, 49152, size=rng.integers(3, 12))) for _ in range(n)]
    return pa.table(
        {
            "sample_id": pa.array([sample_id(task, int(i)) for i in order], type=pa.int64()),
            "input_ids": pa.array([rows[i] for i in order], type=pa.list_(pa.int64())),
            "prompt_len": pa.array([len(rows[i]) // 2 for i in order], type=pa.int64()),
        }
    ), rows


def test_rows_by_index_orders_rows_and_refuses_gaps():
    rng = np.random.default_rng(0)
    table, rows = _task_table(2, 10, rng)
    ordered = rows_by_index(table)
    assert ordered.column_names == ["input_ids", "prompt_len"]
    assert ordered.column("input_ids").to_pylist() == [list(map(int, r)) for r in rows]
    with pytest.raises(ValueError, match="0..n-1"):
        rows_by_index(table.slice(1))  # a row missing


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(num_cpus=1, object_store_memory=80 * 2**20, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_a_worker_gets_the_rows_it_asks_for(local_ray):
    rng = np.random.default_rng(1)
    tables = [_task_table(k, 50, rng) for k in range(3)]
    refs = [local_ray.put(rows_by_index(t)) for t, _ in tables]

    @local_ray.remote(num_cpus=0)
    def fetch(refs, ids):  # another process, as a training worker is
        return PoolRows(refs).get(ids)

    ids = [sample_id(int(k), int(r)) for k, r in zip(rng.integers(0, 3, 40), rng.integers(0, 50, 40))]
    got = local_ray.get(fetch.remote(refs, ids))
    for sid, (input_ids, prompt_len) in zip(ids, got):
        task, row = task_and_row(sid)
        expected = [int(v) for v in tables[task][1][row]]
        assert input_ids == expected and prompt_len == len(expected) // 2
