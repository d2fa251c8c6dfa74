"""Task streams: an ordered list of tasks, each with train/test (optional validation) rows.

Rows come from JSONL or Parquet files in either of two shapes:

* TRACE:  ``{"prompt": ..., "answer": ...}``
* Alpaca: ``{"instruction": ..., "input": ..., "output": ...}`` (``input`` may be empty)

Everything is validated up front; a bad row raises ``DataError("file:line: what is wrong")``.

    tasks = load_stream(cfg.stream)          # list[Task], in training order

A user task uses every row of its files (``stream.train_size`` and ``test_size`` size the
built-in stream only); ``stream.split`` may filter them by prompt (``mssr/splits.py``).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from mssr.errors import DataError
from mssr.scoring import SCORERS, get_scorer
from mssr.splits import split_task


@dataclass(frozen=True)
class Example:
    prompt: str
    answer: str
    line: int = 0  # line (JSONL) or row (Parquet) in the source file, 1-based, for error messages


@dataclass
class Task:
    name: str
    scorer: str
    train: list[Example]
    test: list[Example]
    validation: list[Example] = field(default_factory=list)
    train_file: str = ""


def _normalise_row(row: object, where: str, line: int) -> Example:
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if "prompt" in row or "answer" in row:
        prompt, answer = row.get("prompt"), row.get("answer")
        keys = ("prompt", "answer")
    elif "instruction" in row or "output" in row:
        instruction, extra = row.get("instruction"), row.get("input") or ""
        if not isinstance(extra, str):
            raise DataError(f"{where}: field 'input' must be a string")
        prompt = f"{instruction}\n\n{extra}" if (isinstance(instruction, str) and extra.strip()) else instruction
        answer = row.get("output")
        keys = ("instruction", "output")
    else:
        raise DataError(
            f"{where}: expected fields 'prompt' and 'answer' (TRACE) or 'instruction', 'input', "
            f"'output' (Alpaca); got {sorted(row)}"
        )
    for key, value in zip(keys, (prompt, answer)):
        if value is None:
            raise DataError(f"{where}: missing field {key!r}")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key in ("answer", "output"):
            value = str(value)
        if not isinstance(value, str):
            raise DataError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
        if not value.strip():
            raise DataError(f"{where}: field {key!r} is empty")
    return Example(prompt=str(prompt), answer=str(answer), line=line)


def read_rows(path: str | Path) -> list[Example]:
    """Read and validate one JSONL or Parquet file of examples."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    suffix = p.suffix.lower()
    rows: list[Example] = []
    if suffix in (".jsonl", ".json"):
        try:
            text = p.read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{p}: not UTF-8 (byte {e.start}): save the file as UTF-8") from None
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{p}:{lineno}: malformed JSON: {e.msg} (column {e.colno})") from None
            rows.append(_normalise_row(obj, f"{p}:{lineno}", lineno))
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            records = pq.read_table(p).to_pylist()
        except Exception as e:  # pyarrow raises several types for corrupt files
            raise DataError(f"{p}: cannot read Parquet: {e}") from None
        for i, obj in enumerate(records, start=1):
            rows.append(_normalise_row(obj, f"{p}:{i}", i))
    else:
        raise DataError(f"{p}: unsupported file type {suffix!r}; expected .jsonl or .parquet")
    if not rows:
        raise DataError(f"{p}: no rows; a task split needs at least one example")
    return rows


def load_task(
    name: str,
    train: str,
    test: str,
    validation: Optional[str],
    scorer: str,
    max_train: Optional[int] = None,
    max_test: Optional[int] = None,
) -> Task:
    if scorer not in SCORERS:
        get_scorer(scorer)  # raises with the nearest valid name
    tr = read_rows(train)
    te = read_rows(test)
    va = read_rows(validation) if validation else []
    return Task(
        name=name,
        scorer=scorer,
        train=tr[:max_train] if max_train else tr,
        test=te[:max_test] if max_test else te,
        validation=va,
        train_file=str(train),
    )


def ordered(items: list, order_seed: Optional[int]) -> list:
    """The training order of a stream's tasks: ``items`` as listed when ``order_seed`` is None,
    else a permutation drawn from ``random.Random(order_seed)`` by Fisher-Yates: for ``i`` from
    the last index down to 1, swap items ``i`` and ``j = int(rng.random() * (i + 1))``. It uses
    ``random()`` alone, whose sequence for an integer seed Python keeps the same across
    versions, so a seed gives the same order on every machine."""
    out = list(items)
    if order_seed is not None:
        rng = random.Random(order_seed)
        for i in range(len(out) - 1, 0, -1):
            j = int(rng.random() * (i + 1))
            out[i], out[j] = out[j], out[i]
    return out


def load_stream(stream_cfg, cache_dir: Optional[Path] = None) -> list[Task]:
    """Load every task of the configured stream, in training order (``stream.order_seed``).

    The built-in stream is generated on first use (``stream.train_size`` and ``test_size`` rows
    per task, from ``stream.split``'s part of the prompts); a user task keeps every row of its
    files, filtered by ``stream.split`` alone (``mssr.splits.split_task``).
    """
    if not stream_cfg.tasks:
        from mssr.builtin_stream import builtin_task_specs

        specs = builtin_task_specs(stream_cfg, cache_dir)  # already ordered and split
        return [load_task(s.name, s.train, s.test, s.validation, s.scorer) for s in specs]
    return [
        split_task(load_task(s.name, s.train, s.test, s.validation, s.scorer), stream_cfg.split)
        for s in ordered(stream_cfg.tasks, stream_cfg.order_seed)
    ]
