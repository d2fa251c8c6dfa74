import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def write_jsonl(tmp_path):
    """write_jsonl("name.jsonl", [row, ...] or raw text) -> path"""
    import json

    def write(name, rows):
        p = tmp_path / name
        if isinstance(rows, (str, bytes)):
            p.write_bytes(rows.encode() if isinstance(rows, str) else rows)
        else:
            p.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return p

    return write
