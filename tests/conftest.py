import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MSSR = [sys.executable, "-m", "pipelines.cli"]

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


def run_cli(*args, cwd, timeout=900):
    """Run the real ``mssr`` command in a subprocess and wait for it."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([*MSSR, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def start_cli(*args, cwd, log_path):
    """Start the real ``mssr`` command in the background, output to ``log_path``."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    log = open(log_path, "w")  # noqa: SIM115 (open for as long as the process writes to it)
    return subprocess.Popen([*MSSR, *args], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One uninterrupted run of configs/tiny.yaml, shared by the end-to-end tests."""
    out = tmp_path_factory.mktemp("e2e")
    proc = run_cli(
        "run",
        str(ROOT / "configs" / "tiny.yaml"),
        f"run.output_dir={out}",
        "run.name=tiny",
        "--summary-json",
        str(out / "summary.json"),
        cwd=out,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, json.loads((out / "summary.json").read_text()), proc.stdout
