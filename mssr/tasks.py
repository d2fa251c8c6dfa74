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

import csv
import io
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


def _text(p: Path) -> str:
    try:
        return p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{p}: not UTF-8 (byte {e.start}): save the file as UTF-8") from None


def _json_rows(p: Path) -> list[Example]:
    """One JSON object a line, or in a ``.json`` file a JSON array of rows (LLaMA-Factory's)."""
    text = _text(p)
    if p.suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{p}:{e.lineno}: malformed JSON: {e.msg} (column {e.colno})") from None
        return [_normalise_row(obj, f"{p}: row {i}", i) for i, obj in enumerate(records, start=1)]
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{p}:{lineno}: malformed JSON: {e.msg} (column {e.colno})") from None
        rows.append(_normalise_row(obj, f"{p}:{lineno}", lineno))
    return rows


def _csv_rows(p: Path) -> list[Example]:
    """A CSV file with a header line naming the fields (empty cells read as empty)."""
    reader = csv.DictReader(io.StringIO(_text(p), newline=""))
    rows = []
    for record in reader:
        if None in record:  # more cells than the header names
            raise DataError(
                f"{p}:{reader.line_num}: more cells than the header's {len(reader.fieldnames or [])} columns"
            )
        obj = {k: v for k, v in record.items() if v != "" or k in ("prompt", "answer", "output", "instruction")}
        rows.append(_normalise_row(obj, f"{p}:{reader.line_num}", reader.line_num))
    return rows


def read_rows(path: str | Path) -> list[Example]:
    """Read and validate one file of examples: JSONL, a JSON array, Parquet or CSV."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    suffix = p.suffix.lower()
    if suffix in (".jsonl", ".json"):
        rows = _json_rows(p)
    elif suffix == ".csv":
        rows = _csv_rows(p)
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            records = pq.read_table(p).to_pylist()
        except Exception as e:  # pyarrow raises several types for corrupt files
            raise DataError(f"{p}: cannot read Parquet: {e}") from None
        rows = [_normalise_row(obj, f"{p}:{i}", i) for i, obj in enumerate(records, start=1)]
    else:
        raise DataError(f"{p}: unsupported file type {suffix!r}; expected .jsonl, .json, .parquet or .csv")
    if not rows:
        raise DataError(f"{p}: no rows; a task split needs at least one example")
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
        _capped(split_task(load_task(s.name, s.train, s.test, s.validation, s.scorer), stream_cfg.split), s, stream_cfg)
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
