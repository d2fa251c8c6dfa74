"""``mssr continue``: a finished 3-task run taught 2 more tasks ends as one 5-task run of the
same config and seed does, wherever both measure (tiny model, real Ray, real MLflow)."""

import json

import numpy as np
import pytest
import yaml

from mssr.builtin_stream import builtin_task_specs
from mssr.config import load_config
from mssr.metrics import tasks_to_score
from tests.conftest import ROOT, run_cli

TINY = ROOT / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def continued(tiny_run, tmp_path_factory):
    """The tiny stream's first 3 tasks as user tasks, run; then continued with the other 2."""
    where = tmp_path_factory.mktemp("continue")
    specs = [s.model_dump(mode="json") for s in builtin_task_specs(load_config(TINY).stream)]
    tree = yaml.safe_load(TINY.read_text())
    tree["stream"] = {**tree["stream"], "builtin": None, "tasks": specs[:3]}
    (where / "first3.yaml").write_text(yaml.safe_dump(tree))
    (where / "more.yaml").write_text(yaml.safe_dump({"stream": {"tasks": specs[3:]}}))
    out = where / "runs"
    first = run_cli("run", str(where / "first3.yaml"), f"run.output_dir={out}", "run.name=week1", cwd=where)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    proc = run_cli(
        "continue",
        str(out / "week1"),
        "--tasks",
        str(where / "more.yaml"),
        "--summary-json",
        str(where / "s.json"),
        cwd=where,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return where, out, json.loads((where / "s.json").read_text()), proc.stdout


@pytest.mark.e2e
def test_the_continued_run_is_the_whole_stream_run_where_both_measure(tiny_run, continued):
    _, out, summary, stdout = continued
    reference = tiny_run[1]
    assert summary["tasks"] == reference["tasks"] and summary["run_dir"].endswith("week1-cont1")
    a, ref = np.asarray(summary["accuracy_matrix"]), np.asarray(reference["accuracy_matrix"])
    loss, ref_loss = np.asarray(summary["loss_matrix"]), np.asarray(reference["loss_matrix"])
    assert np.isnan(a[:3, 3:]).all() and np.isnan(loss[:3, 3:]).all()  # the new tasks before the continuation
    assert not np.isnan(a[3, 3:]).any()  # the new tasks scored on the model the first run left
    both = ~np.isnan(a) & ~np.isnan(ref)
    read = np.zeros_like(both)  # every cell a metric reads, but FWT's before-training row
    for k in range(1, 6):
        read[k, tasks_to_score(k, 5, "next")] = True
    assert both[read].all()
    np.testing.assert_array_equal(a[both], ref[both])
    np.testing.assert_allclose(loss[both], ref_loss[both], atol=1e-6)
    for metric in ("ap", "bwt", "forgetting", "avg", "replay_samples"):
        assert summary[metric] == reference[metric], metric
    # from step 24 on (the first 3 tasks' steps), the same replay plans as the 5-task run
    plans = (out / "week1-cont1" / "plans" / "rank_0.jsonl").read_text().splitlines()
    ref_plans = (tiny_run[0] / "tiny" / "plans" / "rank_0.jsonl").read_text().splitlines()
    assert plans == [p for p in ref_plans if json.loads(p)["step"] >= 24]
    assert "scoring the model as the finished run left it on the new tasks: syllogism, aiw" in stdout
    # its own costs, not the sum of both runs' (which made "start-up and the rest" negative)
    times = summary["pipeline_seconds"]
    assert times["train_wall"] + times["eval_wall"] < summary["wall_seconds"]
    assert 0 < summary["tokens"]["train_new"] < reference["tokens"]["train_new"]


@pytest.mark.e2e
def test_the_continuation_records_its_lineage(continued):
    from pipelines.tracking import mlflow_client

    where, out, summary, _ = continued
    week1 = json.loads((out / "week1" / "run.json").read_text())
    record = json.loads((out / "week1-cont1" / "run.json").read_text())
    assert record["continues"]["run_dir"] == str(out / "week1")
    assert record["continues"]["tasks_before"] == 3 and record["continues"]["checkpoint"].endswith("task_02")
    run = mlflow_client(f"sqlite:///{out / 'mlflow.db'}").get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["mssr.continues"] == week1["mlflow_run_id"] == run.data.tags["mssr.lineage"]


@pytest.mark.e2e
@pytest.mark.parametrize(
    "what,fragment",
    [
        ("clash", "task names already in the run: aiw, syllogism"),
        ("unfinished", "has not finished"),
        ("other_keys", "only stream.tasks is read"),
        ("empty", "expected at least one task"),
    ],
)
def test_bad_continuations_are_refused_in_one_line(continued, tmp_path, what, fragment):
    where, out, _, _ = continued
    run_dir, tasks = out / "week1-cont1", where / "more.yaml"
    if what == "unfinished":
        run_dir = tmp_path / "half"
        run_dir.mkdir()
        (run_dir / "run.json").write_text("{}")
    elif what == "other_keys":
        tasks = tmp_path / "t.yaml"
        tasks.write_text("stream: {tasks: []}\ntrain: {lr: 0.1}\n")
    elif what == "empty":
        tasks = tmp_path / "t.yaml"
        tasks.write_text("stream: {tasks: []}\n")
    proc = run_cli("continue", str(run_dir), "--tasks", str(tasks), cwd=tmp_path)
    assert proc.returncode == 2 and fragment in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
