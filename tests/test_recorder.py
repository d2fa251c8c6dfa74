"""The run recorder (pipelines/recorder.py) as a plain class: what the workers record lands in
the run directory, plan logs are cut back on a restore, and metrics MLflow could not take are
kept, not lost."""

import json

import pytest

from mssr.checkpoint import RestoreRecord
from mssr.replay import ReplayPlan
from pipelines.recorder import RunRecorder, WorkerRecord


def test_records_land_in_the_run_directory(tmp_path):
    rec = RunRecorder(str(tmp_path), None, None)
    rec.worker(WorkerRecord(rank=1, pid=42, node_id="n2", hostname="h"))
    rec.start_plans(0, 0)
    for step in range(3):
        rec.plan(0, step, ReplayPlan(replay=[step], probe=[]))
    rec.restored(RestoreRecord(2, 0, 2, "step_000002", "a", "a"))
    rec.progress({"step": 3})
    assert json.loads((tmp_path / "workers" / "rank_1.json").read_text())["pid"] == 42
    plans = [json.loads(line) for line in (tmp_path / "plans" / "rank_0.jsonl").read_text().splitlines()]
    assert [p["step"] for p in plans] == [0, 1, 2] and plans[2]["replay"] == [2]
    assert json.loads((tmp_path / "restores.jsonl").read_text())["checkpoint"] == "step_000002"
    assert json.loads((tmp_path / "progress.json").read_text()) == {"step": 3}


def test_a_restore_drops_the_plans_of_steps_trained_again(tmp_path):
    rec = RunRecorder(str(tmp_path), None, None)
    for step in range(5):
        rec.plan(1, step, ReplayPlan(replay=[], probe=[]))
    rec.start_plans(1, 3)  # restored at step 3: steps 3 and 4 come again
    rec.plan(1, 3, ReplayPlan(replay=[7], probe=[]))
    plans = [json.loads(line) for line in (tmp_path / "plans" / "rank_1.jsonl").read_text().splitlines()]
    assert [p["step"] for p in plans] == [0, 1, 2, 3] and plans[3]["replay"] == [7]


def test_metrics_mlflow_cannot_take_are_kept_in_a_file(tmp_path):
    # a sqlite store in a folder that does not exist: every flush fails at once
    rec = RunRecorder(str(tmp_path), f"sqlite:///{tmp_path}/missing/dir/mlflow.db", "0123")
    for step in range(20):  # more than a flush's worth: the failed flush keeps them
        rec.log_metrics({"train/loss": 1.0 / (step + 1)}, step)
    outcome = rec.close()
    assert outcome["unlogged"] == 20 and outcome["failures"] >= 2 and outcome["error"]
    lines = [json.loads(line) for line in (tmp_path / "unlogged_metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in lines] == list(range(20))
    assert lines[3]["metrics"]["train/loss"] == pytest.approx(0.25)


def test_metrics_reach_mlflow_when_it_answers(tmp_path):
    from pipelines.tracking import mlflow_client, start_run

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run_id = start_run(uri, "mssr", "rec", {})
    rec = RunRecorder(str(tmp_path), uri, run_id)
    for step in range(5):
        rec.log_metrics({"train/loss": float(step)}, step)
    assert rec.close() == {"unlogged": 0, "failures": 0, "error": ""}
    history = mlflow_client(uri).get_metric_history(run_id, "train/loss")
    assert sorted((m.step, m.value) for m in history) == [(s, float(s)) for s in range(5)]
    assert not (tmp_path / "unlogged_metrics.jsonl").exists()
