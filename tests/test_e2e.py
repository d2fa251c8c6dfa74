"""End to end: the real ``mssr`` command, real Ray (2 workers), the tiny model, a real MLflow store."""

import json
import re

import numpy as np
import pytest

from mssr.metrics import tasks_to_score
from mssr.provenance import processor_model
from tests.conftest import ROOT, run_cli, same_matrix


def scored_cells(T: int) -> np.ndarray:
    """Which cells a run with eval.future_tasks=next scores: row 0 whole, then the tasks up to the next."""
    scored = np.zeros((T + 1, T), dtype=bool)
    for k in range(T + 1):
        scored[k, tasks_to_score(k, T, "next")] = True
    return scored


@pytest.mark.e2e
def test_summary_has_every_field_and_the_cells_the_metrics_read(tiny_run):
    _, s, stdout = tiny_run
    T = len(s["tasks"])
    assert T == 5
    m = np.asarray(s["accuracy_matrix"])
    scored = scored_cells(T)
    assert m.shape == (T + 1, T) and np.array_equal(~np.isnan(m), scored)
    assert np.all((m[scored] >= 0) & (m[scored] <= 1))
    assert scored.sum() == 5 + 2 + 3 + 4 + 5 + 5  # 24 of 30 cells
    for key in ("strategy", "ap", "bwt", "fwt", "forgetting", "avg", "replay_samples", "wall_seconds", "mlflow_run_id"):
        assert key in s
    assert s["strategy"] == "mssr"
    assert s["tokens"]["train_new"] > 0 and s["tokens"]["eval"] > 0 and s["tokens"]["train_replay"] > 0
    assert s["replay_samples"] > 0
    assert "accuracy matrix" in stdout and "AP " in stdout and "loss matrix" in stdout
    # where and how the workers trained: this machine, in fp32 (CPUs train in fp32 unless asked)
    prov = s["provenance"]
    assert prov["processor"] == processor_model() and prov["device"] == "cpu" and prov["train_precision"] == "fp32"
    assert prov["threads"] >= 1 and prov["versions"]["torch"] and "machine: " + prov["processor"] in stdout


@pytest.mark.e2e
def test_the_loss_matrix_and_every_test_rows_results(tiny_run):
    """The forced pass scores each test row and gives its answer loss; the matrices are their means."""
    out, s, _ = tiny_run
    T = len(s["tasks"])
    loss = np.asarray(s["loss_matrix"])
    scored = scored_cells(T)
    assert loss.shape == (T + 1, T) and np.array_equal(~np.isnan(loss), scored) and np.all(loss[scored] > 0)
    # each task's loss fell while it was trained (the tiny model learns a little)
    assert all(loss[k, k - 1] < loss[k - 1, k - 1] for k in range(1, T + 1))
    for key in ("loss_final", "loss_bwt", "loss_forgetting"):
        assert np.isfinite(s[key])
    assert s["eval_mode"] == "forced" and s["autocast"] in ("bf16", "none")
    rows = json.loads((out / "tiny" / "eval_rows.json").read_text())
    for k in range(T + 1):
        for j in range(T):
            cell_scores, cell_losses = rows["scores"][k][j], rows["losses"][k][j]
            if not scored[k, j]:  # no metric reads it: no rows
                assert cell_scores == cell_losses == []
                continue
            assert len(cell_scores) == len(cell_losses) == 8  # 8 test rows per task, split over 2 ranks
            assert np.isclose(np.mean(cell_losses), loss[k, j])
            assert np.isclose(np.mean(cell_scores), s["accuracy_matrix"][k][j])
            assert set(cell_scores) <= {0.0, 1.0}
    assert len(set(rows["losses"][0][0])) == 8  # every row its own


@pytest.mark.e2e
def test_every_rank_saw_the_same_replay_plan(tiny_run):
    out, s, _ = tiny_run
    plans = out / "tiny" / "plans"
    ranks = sorted(plans.glob("rank_*.jsonl"))
    assert len(ranks) == 2
    seqs = [[json.loads(line) for line in p.read_text().splitlines()] for p in ranks]
    assert seqs[0] == seqs[1]
    assert [p["step"] for p in seqs[0]] == list(range(len(seqs[0])))
    assert sum(len(p["replay"]) for p in seqs[0]) == s["replay_samples"]


@pytest.mark.e2e
def test_checkpoints_hold_model_optimizer_and_memory_state(tiny_run):
    out, s, _ = tiny_run
    ckpts = sorted((out / "tiny" / "ray" / "train").glob("task_*"))
    assert ckpts, "no checkpoint written"
    last = ckpts[-1]
    for name in ("trainable.safetensors", "trainer.pt", "memory.npz", "memory.json", "progress.json"):
        assert (last / name).is_file(), name
    with np.load(last / "memory.npz") as z:
        # the pool holds pool_per_task (8) samples of each of the 5 tasks, with positive strengths
        assert z["ids"].size == 8 * 5 and np.all(z["strength"] > 0)
        assert sorted(set(z["task"].tolist())) == [0, 1, 2, 3, 4]
    progress = json.loads((last / "progress.json").read_text())
    assert progress["next_task"] == 5 and same_matrix(progress["matrix"], s["accuracy_matrix"])
    memory = json.loads((last / "memory.json").read_text())
    assert memory["planner"]["replayed"] == s["replay_samples"]


@pytest.mark.e2e
def test_mlflow_run_holds_the_same_numbers_and_artifacts(tiny_run):
    from mlflow import MlflowClient

    out, s, _ = tiny_run
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    run = client.get_run(s["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # MLflow 3's model-training views
    assert run.data.params["replay.strategy"] == "mssr" and run.data.params["model.name"] == "tiny"
    assert run.data.tags["mssr.commit"] == (s["provenance"]["commit"] or "unknown")
    assert run.data.tags["mssr.processor_kind"] == s["provenance"]["processor_kind"] != "unknown"
    for key in ("ap", "bwt", "fwt", "forgetting", "avg"):
        assert run.data.metrics[key] == pytest.approx(s[key])
    assert run.data.metrics["replay_samples"] == s["replay_samples"]
    assert run.data.metrics["tokens_eval"] == s["tokens"]["eval"]
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) >= 5
    replayed = client.get_metric_history(run.info.run_id, "train/replay_samples")
    assert sum(m.value for m in replayed) == s["replay_samples"]
    # a task's score is logged after each task that scored it: the first after every task, the
    # last (aiw, task 5) after task 4 (as the next task) and task 5
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "score/chain_sum")) == [1, 2, 3, 4, 5]
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "score/aiw")) == [4, 5]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {
        "accuracy_matrix.csv",
        "accuracy_matrix.json",
        "accuracy_matrix.png",
        "config.yaml",
        "loss_matrix.csv",
        "loss_matrix.json",
        "loss_matrix.png",
        "eval_rows.json",
    } <= artifacts
    for key in ("loss_final", "loss_bwt", "loss_forgetting"):
        assert run.data.metrics[key] == pytest.approx(s[key])
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "loss/aiw")) == [4, 5]


@pytest.mark.e2e
def test_same_seed_same_run(tiny_run, tmp_path):
    """Data order, replay plans (which depend on every loss through the memory model) and the
    loss curve repeat exactly with the same config and seed."""
    from mlflow import MlflowClient

    out, first, _ = tiny_run
    proc = run_cli(
        "run",
        str(ROOT / "configs" / "tiny.yaml"),
        f"run.output_dir={tmp_path}",
        "run.name=again",
        "--summary-json",
        str(tmp_path / "s.json"),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    second = json.loads((tmp_path / "s.json").read_text())
    assert same_matrix(second["accuracy_matrix"], first["accuracy_matrix"])
    assert same_matrix(second["loss_matrix"], first["loss_matrix"])
    assert second["replay_samples"] == first["replay_samples"] and second["tokens"] == first["tokens"]
    assert (tmp_path / "again" / "plans" / "rank_0.jsonl").read_text() == (
        out / "tiny" / "plans" / "rank_0.jsonl"
    ).read_text()

    def losses(db, run_id):
        return [(m.step, m.value) for m in MlflowClient(f"sqlite:///{db}").get_metric_history(run_id, "train/loss")]

    assert losses(tmp_path / "mlflow.db", second["mlflow_run_id"]) == losses(out / "mlflow.db", first["mlflow_run_id"])


# what a user cannot act on: warnings, deprecations, tracebacks, library INFO logging, progress bars
NOISE = re.compile(r"warn|deprecat|traceback|\bINFO\b|\d+%\|", re.IGNORECASE)
# Ray Train's placement-group cleaner cannot pick a cluster when several local Ray instances
# run on one machine (a test machine running runs side by side): Ray's own thread, not the run's
RAY_INSTANCES = re.compile(
    r"Exception in thread PlacementGroupCleanerMonitor:\n.*?Found multiple active Ray instances[^\n]*\n", re.DOTALL
)


@pytest.mark.e2e
def test_the_console_holds_nothing_a_user_cannot_act_on(tiny_run):
    """Every line the tiny run printed, on stdout and stderr, is the run's own: no library
    warning, deprecation, traceback, INFO log or progress bar."""
    out, _, stdout = tiny_run
    console = RAY_INSTANCES.sub("", stdout + (out / "stderr.txt").read_text())
    unexpected = [line for line in console.splitlines() if NOISE.search(line)]
    assert unexpected == [], "\n".join(unexpected[:20])
