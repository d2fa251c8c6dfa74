"""Ray Data side of a run: tokenise each task's train split, check lengths, stream to workers.

Each task's validated rows are tokenised by Ray Data (``map_batches``) and materialised
*before* training starts: the length check then happens before any compute is spent, and
during training the workers own every CPU, so a lazy read would stall waiting for one. The
workers receive the materialised blocks through Ray Train's streaming split.

The driver also puts each task's tokenised rows in Ray's object store, where the replay pool
reads them by reference (``pipelines.pool``), and writes a Parquet copy into the run
directory for users (``tokens/``).

    datasets, stats = tokenise_tasks(tasks, cfg.model, cfg.stream, seed=0)
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import ray.data

from mssr.sample_ids import sample_id
from mssr.tasks import Task
from mssr.tokenize import row_stats, training_order

# a fraction of a CPU per tokenising task: in a sweep the trials already training hold almost
# every CPU, and a trial that starts beside them must not wait for them to end to tokenise
TOKENIZE_CPUS = 0.25


@functools.lru_cache(maxsize=4)
def _tokenizer(model_json: str):
    """One tokenizer per Ray worker process, reused by every batch it tokenises: the one
    ``mssr.models.load_tokenizer`` makes for the model config, as everywhere else."""
    from mssr.config import ModelConfig
    from mssr.models import load_tokenizer

    return load_tokenizer(ModelConfig.model_validate_json(model_json))


def tokenize_batch(batch: dict, model_json: str, options: dict, truncate_to: int | None = None) -> pa.Table:
    """Ray Data UDF: prompt/answer text -> input_ids, prompt_len, length, truncated. With
    ``truncate_to``, longer rows have their prompt cut from the left; a row whose answer alone
    does not fit keeps its full length (and is refused by the caller)."""
    from mssr.tokenize import PromptEncoder, encode_rows

    encoder = PromptEncoder(_tokenizer(model_json), **options)
    input_ids, prompt_len, truncated = encode_rows(encoder, batch["prompt"], batch["answer"], truncate_to)
    return pa.table(
        {
            "sample_id": pa.array(batch["sample_id"], type=pa.int64()),
            "source_row": pa.array(batch["source_row"], type=pa.int64()),
            "input_ids": pa.array(input_ids, type=pa.list_(pa.int64())),
            "prompt_len": pa.array(prompt_len, type=pa.int64()),
            "length": pa.array([len(r) for r in input_ids], type=pa.int64()),
            "truncated": pa.array(truncated, type=pa.bool_()),
        }
    )


def _rows_table(task_index: int, task: Task, seed: int) -> pa.Table:
    """The task's train rows in a seeded shuffled order (the training order)."""
    order = training_order(task_index, len(task.train), seed)
    return pa.table(
        {
            "sample_id": [sample_id(task_index, int(i)) for i in order],
            "source_row": [task.train[i].line for i in order],
            "prompt": [task.train[i].prompt for i in order],
            "answer": [task.train[i].answer for i in order],
        }
    )


def dataset_table(ds: ray.data.Dataset) -> pa.Table:
    """A materialised dataset's rows as one Arrow table, in the dataset's order (Ray Data's
    public iteration, block by block)."""
    return pa.concat_tables(list(ds.iter_batches(batch_format="pyarrow", batch_size=None)))


def tokenise_tasks(
    tasks: Sequence[Task], model_cfg, stream_cfg, seed: int
) -> tuple[list[ray.data.Dataset], list[dict]]:
    """Tokenise every task's train split with Ray Data (materialised); over-long rows are
    refused or, with ``stream.too_long: truncate``, cut to fit and counted.

    Returns the datasets and per-task statistics ``{"rows", "tokens", "max_length", "truncated"}``.
    """
    from mssr.tokenize import encoder_options

    options = encoder_options(stream_cfg)
    truncate_to = stream_cfg.max_length if stream_cfg.too_long == "truncate" else None
    datasets, stats = [], []
    for k, task in enumerate(tasks):
        ds = (
            ray.data.from_arrow(_rows_table(k, task, seed))
            .map_batches(
                tokenize_batch,
                fn_kwargs=dict(model_json=model_cfg.model_dump_json(), options=options, truncate_to=truncate_to),
                batch_format="numpy",
                batch_size=256,
                num_cpus=TOKENIZE_CPUS,
            )
            .materialize()
        )
        table = dataset_table(ds.select_columns(["source_row", "length", "truncated"]))
        lengths, truncated = table.column("length").to_numpy(), table.column("truncated").to_numpy()
        stats.append(row_stats(task, table.column("source_row").to_pylist(), lengths, truncated, stream_cfg))
        datasets.append(ds)
    return datasets, stats


def mix_tasks(datasets: Sequence[ray.data.Dataset], seed: int) -> tuple[list[ray.data.Dataset], list[dict]]:
    """The ``joint`` reference: every task's tokenised rows shuffled together (seeded) and cut
    into segments of the original tasks' sizes, so it trains the same steps on the same data."""
    tables = [dataset_table(ds) for ds in datasets]
    union = pa.concat_tables(tables)
    mixed = union.take(np.random.default_rng([seed, len(tables)]).permutation(union.num_rows))
    segments, stats, start = [], [], 0
    for table in tables:
        part = mixed.slice(start, table.num_rows)
        start += table.num_rows
        length = part.column("length").to_numpy()
        segments.append(ray.data.from_arrow([part.slice(i, 256) for i in range(0, part.num_rows, 256)]))
        stats.append(
            {
                "rows": int(length.size),
                "tokens": int(length.sum()),
                "max_length": int(length.max()),
                "truncated": int(part.column("truncated").to_numpy().sum()),
            }
        )
    return segments, stats


def write_tokens(datasets: Sequence[ray.data.Dataset], run_dir: Path) -> None:
    """A copy of each task's tokenised rows, in training order, for users who want to look at
    them: ``<run_dir>/tokens/task_KK/rows.parquet``, written by this (the driver's) process.
    Training never reads it."""
    for k, ds in enumerate(datasets):
        out = run_dir / "tokens" / f"task_{k:02d}"
        out.mkdir(parents=True, exist_ok=True)
        pq.write_table(dataset_table(ds), out / "rows.parquet")
