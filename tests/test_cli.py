"""User errors from the command line: one line, exit code 2, no traceback, nothing created."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def mssr(*args, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def write_stream(tmp_path, train_rows):
    (tmp_path / "train.jsonl").write_text(train_rows)
    (tmp_path / "test.jsonl").write_text(json.dumps({"prompt": "q", "answer": "a"}) + "\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "model: {name: tiny}\nstream:\n  tasks:\n    - {name: t, train: train.jsonl, test: test.jsonl}\n"
        f"run: {{output_dir: {tmp_path / 'out'}}}\n"
    )
    return cfg


@pytest.mark.parametrize(
    "content,overrides,fragment",
    [
        ("replay:\n  stratgy: mssr\n", [], "did you mean 'strategy'"),
        ("", ["replay.strategy=msr"], "unknown strategy 'msr'; did you mean 'mssr'"),
        ("", ["train.batch_size=5"], "multiple of train.num_workers"),
        ("", ["replay.mssr.decay=-1"], "replay.mssr.decay"),
        ("", ["model.name=/nonexistent/model"], "neither a local folder nor a hub id"),
        ("", ["model.name=some-org/some-model"], "not available"),
        ("seed: [1, 2]\n", [], "seed"),
    ],
)
def test_config_errors(tmp_path, content, overrides, fragment):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(content + f"run: {{output_dir: {tmp_path / 'out'}}}\n")
    proc = mssr("run", str(cfg), *overrides, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert fragment in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 2
    assert not (tmp_path / "out").exists()


def test_bad_data_row_names_file_and_line(tmp_path):
    cfg = write_stream(tmp_path, '{"prompt": "a", "answer": "b"}\n{"prompt": "a"}\n')
    proc = mssr("run", str(cfg), cwd=tmp_path)
    assert proc.returncode == 2
    assert f"{tmp_path / 'train.jsonl'}:2: missing field 'answer'" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


def test_too_long_row_is_refused_before_training(tmp_path):
    long_prompt = " ".join(["word"] * 300)
    cfg = write_stream(
        tmp_path,
        json.dumps({"prompt": "short", "answer": "b"})
        + "\n"
        + json.dumps({"prompt": long_prompt, "answer": "b"})
        + "\n",
    )
    proc = mssr("run", str(cfg), "--dry-run", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"{tmp_path / 'train.jsonl'}:2:" in proc.stderr and "stream.max_length=192" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_dry_run_prints_the_plan_and_trains_nothing(tmp_path):
    proc = mssr(
        "run", str(ROOT / "configs" / "tiny.yaml"), f"run.output_dir={tmp_path / 'out'}", "--dry-run", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for text in ("strategy mssr", "2 worker(s)", "chain_sum", "optimizer steps", "budget unlimited"):
        assert text in proc.stdout
    assert not (tmp_path / "out").exists()
