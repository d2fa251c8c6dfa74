"""Task rows from every source a user may have: S3 (a real S3 API on localhost), HTTP, a
Hugging Face dataset saved with ``save_to_disk``, and renamed columns; each refusal names
its source."""

import functools
import http.server
import json
import threading

import pytest

from mssr.config import DatasetSource, load_config
from mssr.errors import ConfigError, DataError
from mssr.tasks import load_stream, read_rows
from tests.conftest import make_bucket

ROWS = [{"prompt": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(6)]
JSONL = "".join(json.dumps(r) + "\n" for r in ROWS).encode()


def test_rows_from_s3_in_every_file_format(s3_env, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs = make_bucket(s3_env, "tasks")
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "t.parquet")
    files = {
        "t.jsonl": JSONL,
        "t.json": json.dumps(ROWS).encode(),
        "t.csv": ("prompt,answer\n" + "".join(f'"{r["prompt"]}",{r["answer"]}\n' for r in ROWS)).encode(),
        "t.parquet": (tmp_path / "t.parquet").read_bytes(),
    }
    for name, data in files.items():
        with fs.open_output_stream(f"tasks/gcd/{name}") as f:
            f.write(data)
        rows = read_rows(f"s3://tasks/gcd/{name}")
        assert [(r.prompt, r.answer) for r in rows] == [(r["prompt"], r["answer"]) for r in ROWS], name


def test_s3_refusals_name_the_uri(s3_env):
    fs = make_bucket(s3_env, "broken")
    with fs.open_output_stream("broken/bad.jsonl") as f:
        f.write(b'{"prompt": "a", "answer": "b"}\n{"prompt": "a"}\n')
    with pytest.raises(DataError, match=r"^s3://broken/bad.jsonl:2: missing field 'answer'"):
        read_rows("s3://broken/bad.jsonl")
    with pytest.raises(DataError, match=r"^s3://broken/none.jsonl: file not found"):
        read_rows("s3://broken/none.jsonl")
    with pytest.raises(DataError, match=r"^s3://broken/x.txt: unsupported file type '.txt'"):
        read_rows("s3://broken/x.txt")


@pytest.fixture
def http_folder(tmp_path):
    """A plain HTTP server on localhost serving ``tmp_path/www``: yields (folder, base URL)."""
    folder = tmp_path / "www"
    folder.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_rows_from_http(http_folder):
    folder, base = http_folder
    (folder / "train.jsonl").write_bytes(JSONL)
    assert len(read_rows(f"{base}/train.jsonl")) == len(ROWS)
    assert len(read_rows(f"{base}/train.jsonl?download=1")) == len(ROWS)  # a query string is not the type
    with pytest.raises(DataError, match=r"/missing.jsonl: cannot read: HTTP 404"):
        read_rows(f"{base}/missing.jsonl")


def _saved_dataset(path, splits: dict[str, list[dict]]):
    import datasets

    if len(splits) == 1 and "" in splits:
        datasets.Dataset.from_list(splits[""]).save_to_disk(str(path))
    else:
        datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in splits.items()}).save_to_disk(str(path))
    return path


def test_rows_from_a_saved_dataset_with_renamed_columns(tmp_path):
    renamed = [{"question": r["prompt"], "solution": r["answer"], "source": "x"} for r in ROWS]
    folder = _saved_dataset(tmp_path / "gsm", {"train": renamed[:4], "test": renamed[4:]})
    columns = {"question": "prompt", "solution": "answer"}
    train = read_rows(DatasetSource(dataset=str(folder), split="train"), columns)
    test = read_rows(DatasetSource(dataset=str(folder), split="test"), columns)
    assert [r.answer for r in train] == ["0", "2", "4", "6"] and [r.prompt for r in test] == [
        ROWS[4]["prompt"],
        ROWS[5]["prompt"],
    ]
    with pytest.raises(DataError, match=r"gsm\[train\]: row 1: expected fields 'prompt' and 'answer'"):
        read_rows(DatasetSource(dataset=str(folder), split="train"))  # without the mapping
    with pytest.raises(DataError, match="no split 'validation'; the dataset has splits train, test"):
        read_rows(DatasetSource(dataset=str(folder), split="validation"), columns)
    with pytest.raises(DataError, match="name one with split; the dataset has splits train, test"):
        read_rows(DatasetSource(dataset=str(folder)), columns)
    single = _saved_dataset(tmp_path / "one", {"": ROWS})
    assert len(read_rows(DatasetSource(dataset=str(single)))) == len(ROWS)


def test_hub_dataset_name_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match=r"^nosuch-org/nosuch-data: cannot load the dataset: .*HF_HUB_OFFLINE is set"):
        read_rows(DatasetSource(dataset="nosuch-org/nosuch-data", split="train"))
    with pytest.raises(DataError, match="neither a save_to_disk folder nor a hub dataset name"):
        read_rows(DatasetSource(dataset="not-a-folder-or-name"))


def test_config_accepts_every_source_and_resolves_local_ones(tmp_path):
    _saved_dataset(tmp_path / "data" / "saved", {"train": ROWS, "test": ROWS})
    (tmp_path / "data" / "test.jsonl").write_bytes(JSONL)
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(
        "stream:\n  tasks:\n"
        "    - {name: a, train: {dataset: data/saved, split: train}, test: data/test.jsonl}\n"
        "    - {name: b, train: 's3://bucket/b/train.jsonl', test: 'https://example.org/b/test.csv',\n"
        "       columns: {question: prompt}}\n"
    )
    stream = load_config(cfg_file).stream
    a, b = stream.tasks
    assert a.train == DatasetSource(dataset=str((tmp_path / "data" / "saved").resolve()), split="train")
    assert a.test == str((tmp_path / "data" / "test.jsonl").resolve())
    assert (b.train, b.test, b.columns) == (
        "s3://bucket/b/train.jsonl",
        "https://example.org/b/test.csv",
        {"question": "prompt"},
    )
    (task,) = load_stream(stream.model_copy(update={"tasks": [a]}))  # only task a can be read here
    assert len(task.train) == len(ROWS) and task.train_file.endswith("saved[train]")


def test_config_refuses_an_unknown_column_target(tmp_path):
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text("stream:\n  tasks:\n    - {name: a, train: a.jsonl, test: a.jsonl, columns: {q: promt}}\n")
    with pytest.raises(ConfigError, match=r"columns.q: 'promt' is not a row field; did you mean 'prompt'\?"):
        load_config(cfg_file)
