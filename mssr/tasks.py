"""Task streams: an ordered list of tasks, each with train/test (optional validation) rows.

Rows come from JSONL, JSON-array, Parquet or CSV files (local or remote) or from a Hugging
Face dataset split (``mssr/sources.py`` reads them), in any of four shapes:

* ``{"prompt": ..., "answer": ...}`` (or ``"completion"`` for the answer, TRL's name)
* Alpaca: ``{"instruction": ..., "input": ..., "output": ...}`` (``input`` may be empty)
* chat: ``{"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}`` (one turn)

A task's ``columns`` renames a source's own fields to these first. Everything is validated
up front; a bad row raises ``DataError("source:line: what is wrong")``.

    tasks = load_stream(cfg.stream)          # list[Task], in training order

A user task uses every row of its files (``stream.train_size`` and ``test_size`` size the
built-in stream only); ``stream.split`` may filter them by prompt (``mssr/splits.py``).
"""

from __future__ import annotations

import csv
import io
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from mssr.config import DatasetSource, RowSource
from mssr.errors import DataError
from mssr.scoring import SCORERS, get_scorer
from mssr.sources import dataset_records, read_bytes
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
    train_total: int = 0  # rows in the train file before a cap (max_train_rows); 0: not capped
    test_total: int = 0  # likewise for the test file


ANSWER_KEYS = ("answer", "output", "completion")  # a number there is read as its text


def _single_turn(messages: object, where: str) -> tuple[object, object]:
    """(prompt, answer) of a chat ``messages`` row: one user turn, then the assistant's answer."""
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise DataError(f'{where}: field \'messages\' must be a list of {{"role", "content"}} objects')
    roles = [m.get("role") for m in messages]
    if "system" in roles:
        raise DataError(
            f"{where}: a system message per row is not supported; set one for the whole stream with "
            "stream.system_prompt and leave it out of the rows"
        )
    if roles != ["user", "assistant"]:
        raise DataError(
            f"{where}: 'messages' must be one user turn and the assistant's answer (roles user, assistant), "
            f"got roles {roles}; multi-turn conversations are not supported"
        )
    return messages[0].get("content"), messages[1].get("content")


def _normalise_row(row: object, where: str, line: int) -> Example:
    """One row in any of the accepted shapes, as an Example (module docstring)."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if "messages" in row:
        prompt, answer = _single_turn(row["messages"], where)
        keys = ("messages[0].content", "messages[1].content")
    elif "prompt" in row and "completion" in row:
        if not isinstance(row["prompt"], str) or not isinstance(row["completion"], str):
            raise DataError(
                f"{where}: 'prompt' and 'completion' must be strings (conversational prompt/completion "
                "rows: give them as 'messages' rows instead)"
            )
        prompt, answer = row["prompt"], row["completion"]
        keys = ("prompt", "completion")
    elif "prompt" in row or "answer" in row:
        prompt, answer = row.get("prompt"), row.get("answer")
        keys = ("prompt", "answer")
    elif "instruction" in row or "output" in row:
        for extra_key in ("system", "history"):
            if row.get(extra_key):
                raise DataError(
                    f"{where}: field {extra_key!r} is not supported ("
                    + (
                        "set one system prompt for the whole stream with stream.system_prompt)"
                        if extra_key == "system"
                        else "multi-turn history: give each turn as its own row)"
                    )
                )
        instruction, extra = row.get("instruction"), row.get("input") or ""
        if not isinstance(extra, str):
            raise DataError(f"{where}: field 'input' must be a string")
        prompt = f"{instruction}\n\n{extra}" if (isinstance(instruction, str) and extra.strip()) else instruction
        answer = row.get("output")
        keys = ("instruction", "output")
    else:
        raise DataError(
            f"{where}: expected fields 'prompt' and 'answer' (TRACE), 'prompt' and 'completion' (TRL), "
            f"'instruction', 'input', 'output' (Alpaca) or 'messages' (chat); got {sorted(row)}"
        )
    for key, value in zip(keys, (prompt, answer)):
        if value is None:
            raise DataError(f"{where}: missing field {key!r}")
        if (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and key.split(".")[0] in (*ANSWER_KEYS, "messages[1]")
        ):
            value = str(value)
        if not isinstance(value, str):
            raise DataError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
        if not value.strip():
            raise DataError(f"{where}: field {key!r} is empty")
    return Example(prompt=str(prompt), answer=str(answer), line=line)


def _text(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{name}: not UTF-8 (byte {e.start}): save the file as UTF-8") from None


def _json_records(text: str, name: str, array: bool) -> list[tuple[str, int, object]]:
    """(where, line, object) of one JSON object a line, or with ``array`` of a JSON array of rows
    (LLaMA-Factory's ``.json`` files)."""
    if array and text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{name}:{e.lineno}: malformed JSON: {e.msg} (column {e.colno})") from None
        return [(f"{name}: row {i}", i, obj) for i, obj in enumerate(records, start=1)]
    out = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append((f"{name}:{lineno}", lineno, json.loads(line)))
        except json.JSONDecodeError as e:
            raise DataError(f"{name}:{lineno}: malformed JSON: {e.msg} (column {e.colno})") from None
    return out


def _csv_records(text: str, name: str) -> list[tuple[str, int, object]]:
    """A CSV file with a header line naming the fields (empty cells read as empty)."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    out = []
    for record in reader:
        if None in record:  # more cells than the header names
            raise DataError(
                f"{name}:{reader.line_num}: more cells than the header's {len(reader.fieldnames or [])} columns"
            )
        out.append((f"{name}:{reader.line_num}", reader.line_num, record))
    return out


def _parquet_records(data: bytes, name: str) -> list[tuple[str, int, object]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        records = pq.read_table(pa.BufferReader(data)).to_pylist()
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise DataError(f"{name}: cannot read Parquet: {e}") from None
    return [(f"{name}:{i}", i, obj) for i, obj in enumerate(records, start=1)]


def _suffix(location: str) -> str:
    """A file's type from its path or URI (an https:// query string left out)."""
    return Path(location.split("?")[0]).suffix.lower()


def _file_records(location: str) -> list[tuple[str, int, object]]:
    suffix = _suffix(location)
    if suffix not in (".jsonl", ".json", ".csv", ".parquet"):
        raise DataError(f"{location}: unsupported file type {suffix!r}; expected .jsonl, .json, .parquet or .csv")
    data = read_bytes(location)
    if suffix == ".parquet":
        return _parquet_records(data, location)
    text = _text(data, location)
    return _csv_records(text, location) if suffix == ".csv" else _json_records(text, location, suffix == ".json")


_CSV_KEEP_EMPTY = ("prompt", "answer", "output", "instruction")  # empty there: "field is empty", not "missing"


def source_name(source: RowSource) -> str:
    """How messages and the data report name a source: its path or URI, or ``dataset[split]``."""
    if isinstance(source, DatasetSource):
        return f"{source.dataset}[{source.split}]" if source.split else source.dataset
    return str(source)


def read_rows(source: RowSource, columns: Optional[dict[str, str]] = None) -> list[Example]:
    """Read and validate one source of examples (a local or remote JSONL, JSON array, Parquet or
    CSV file, or a Hugging Face dataset split), its columns renamed by ``columns`` first."""
    if not isinstance(source, DatasetSource):
        source = str(source)
    if isinstance(source, DatasetSource):
        name = source_name(source)
        records = [(f"{name}: row {i}", i, obj) for i, obj in enumerate(dataset_records(source), start=1)]
    else:
        records = _file_records(str(source))
    columns = columns or {}
    csv_file = isinstance(source, str) and _suffix(source) == ".csv"
    rows = []
    for where, line, obj in records:
        if isinstance(obj, dict):
            obj = {columns.get(k, k): v for k, v in obj.items()}
            if csv_file:  # every CSV row has every column: an empty cell is a field left out
                obj = {k: v for k, v in obj.items() if v != "" or k in _CSV_KEEP_EMPTY}
        rows.append(_normalise_row(obj, where, line))
    if not rows:
        raise DataError(f"{source_name(source)}: no rows; a task split needs at least one example")
    return rows


def sample_rows(rows: list[Example], n: Optional[int], seed: str) -> list[Example]:
    """``n`` of ``rows`` drawn at random (seeded by ``seed``), in file order; all when n is None
    or not smaller: a cap keeps a fair sample of the file, not its first rows."""
    if n is None or n >= len(rows):
        return rows
    keep = sorted(random.Random(seed).sample(range(len(rows)), n))
    return [rows[i] for i in keep]


def load_task(
    name: str,
    train: RowSource,
    test: RowSource,
    validation: Optional[RowSource],
    scorer: str,
    columns: Optional[dict[str, str]] = None,
) -> Task:
    if scorer not in SCORERS:
        get_scorer(scorer)  # raises with the nearest valid name
    return Task(
        name=name,
        scorer=scorer,
        train=read_rows(train, columns),
        test=read_rows(test, columns),
        validation=read_rows(validation, columns) if validation else [],
        train_file=source_name(train),
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
        _capped(
            split_task(load_task(s.name, s.train, s.test, s.validation, s.scorer, s.columns), stream_cfg.split),
            s,
            stream_cfg,
        )
        for s in ordered(stream_cfg.tasks, stream_cfg.order_seed)
    ]


def _capped(task: Task, spec, stream_cfg) -> Task:
    """A user task's ``max_train_rows`` / ``max_test_rows``: a seeded sample (``stream.data_seed``)."""
    seed = f"{stream_cfg.data_seed}:{task.name}"
    train = sample_rows(task.train, spec.max_train_rows, seed + ":train")
    test = sample_rows(task.test, spec.max_test_rows, seed + ":test")
    task.train_total = len(task.train) if len(train) < len(task.train) else 0
    task.test_total = len(task.test) if len(test) < len(task.test) else 0
    task.train, task.test = train, test
    return task
