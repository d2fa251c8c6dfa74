"""The stream in one process (mssr/local_run.py): the loop of ``mssr run`` without Ray, step
for step the same as a one-worker ``mssr run`` on the tiny model; and its refusals."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mssr.config import load_config
from mssr.errors import ConfigError
from mssr.local_run import run_local
from tests.conftest import ROOT, run_cli, same_matrix

TINY = str(ROOT / "configs" / "tiny.yaml")


@pytest.mark.e2e
def test_a_local_run_trains_as_mssr_run_with_one_worker(tmp_path):
    small = ["train.num_workers=1", "stream.train_size=16"]  # 4 steps a task: the comparison, not the training
    ray_run = run_cli("run", TINY, *small, f"run.output_dir={tmp_path}", "run.name=one", cwd=tmp_path)
    assert ray_run.returncode == 0, ray_run.stdout[-3000:] + ray_run.stderr[-3000:]
    # a fresh interpreter that never imports Ray (as on a GPU machine without it)
    code = (
        "import sys; from mssr.local_run import main; rc = main(sys.argv[1:]); "
        "assert not [m for m in sys.modules if m.split('.')[0] == 'ray'], 'imported Ray'; sys.exit(rc)"
    )
    local = subprocess.run(
        [sys.executable, "-c", code, TINY, *small, "--out", str(tmp_path / "local")],
        cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert local.returncode == 0, local.stdout[-3000:] + local.stderr[-3000:]

    ray_summary = json.loads((tmp_path / "one" / "summary.json").read_text())
    summary = json.loads((tmp_path / "local" / "summary.json").read_text())
    assert summary["tasks"] == ray_summary["tasks"]
    assert same_matrix(summary["accuracy_matrix"], ray_summary["accuracy_matrix"])
    np.testing.assert_allclose(summary["loss_matrix"], ray_summary["loss_matrix"], atol=1e-6)
    assert summary["tokens"] == ray_summary["tokens"]
    plans = (tmp_path / "local" / "plans" / "rank_0.jsonl").read_text()
    assert plans == (tmp_path / "one" / "plans" / "rank_0.jsonl").read_text()
    assert sum(1 for line in plans.splitlines() if json.loads(line)["replay"]) > 0  # the plans replayed
    assert sorted(p.name for p in (tmp_path / "local" / "checkpoints").iterdir())[-1] == "task_04"


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["train.num_workers=2"], "a local run trains one worker"),
        (["train.num_workers=1", "replay.strategy=joint"], "mixes the tasks through Ray Data"),
    ],
)
def test_what_a_local_run_refuses(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        run_local(load_config(TINY, overrides), tmp_path / "out")


def test_a_local_run_wants_a_new_folder(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("")
    with pytest.raises(ConfigError, match="not empty"):
        run_local(load_config(TINY, ["train.num_workers=1"]), tmp_path / "out")


def test_the_command_takes_settings_after_out_and_refuses_bad_ones_in_one_line(tmp_path, capsys):
    from mssr.local_run import main

    assert main([TINY, "--out", str(tmp_path / "out"), "train.num_workers=2"]) == 2
    err = capsys.readouterr().err
    assert "a local run trains one worker" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
