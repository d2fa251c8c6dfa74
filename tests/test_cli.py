"""The real ``mssr`` command in a subprocess: the smoke tests of what users type (the table
of bad inputs runs in-process in ``tests/test_bad_input.py``)."""

import json
from pathlib import Path

from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]


def test_a_bad_row_through_the_real_command(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"prompt": "a", "answer": "b"}\n{"prompt": "a"}\n')
    (tmp_path / "test.jsonl").write_text(json.dumps({"prompt": "q", "answer": "a"}) + "\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "model: {name: tiny}\nstream:\n  tasks:\n    - {name: t, train: train.jsonl, test: test.jsonl}\n"
        f"run: {{output_dir: {tmp_path / 'out'}}}\n"
    )
    proc = run_cli("run", str(cfg), cwd=tmp_path, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"mssr: error: {tmp_path / 'train.jsonl'}:2: missing field 'answer'"
    assert not (tmp_path / "out").exists()


def test_dry_run_prints_the_plan_and_trains_nothing(tmp_path):
    proc = run_cli(
        "run", str(ROOT / "configs" / "tiny.yaml"), f"run.output_dir={tmp_path / 'out'}", "--dry-run", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for text in ("strategy mssr", "2 worker(s)", "chain_sum", "optimizer steps", "budget unlimited"):
        assert text in proc.stdout
    assert not (tmp_path / "out").exists()
