"""It keeps going: a worker killed with SIGKILL, the memory actor killed, the driver
interrupted and resumed. Each run must finish with the same accuracy matrix as the
uninterrupted run of the same config and seed (``tiny_run``), in one MLflow run."""

import json
import os
import re
import signal
import time

import pytest

from tests.conftest import ROOT, run_cli, same_matrix, start_cli

TINY = str(ROOT / "configs" / "tiny.yaml")


def _last_step(run_dir, rank=0) -> int:
    path = run_dir / "plans" / f"rank_{rank}.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return json.loads(lines[-1])["step"] if lines else -1


def _wait_until(condition, proc, what: str, timeout=300):
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, f"the run ended before {what}"
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _mlflow_runs(out, name):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("mssr")
    return client.search_runs(exp.experiment_id, f"attributes.run_name = '{name}'")


def _check_finished_like_uninterrupted(out, name, tiny_run):
    summary = json.loads((out / name / "summary.json").read_text())
    reference = tiny_run[1]
    assert same_matrix(summary["accuracy_matrix"], reference["accuracy_matrix"])
    assert summary["replay_samples"] == reference["replay_samples"]
    # replay plans depend on every loss through the memory model: equal plans, equal training
    plans = (out / name / "plans" / "rank_0.jsonl").read_text()
    assert plans == (tiny_run[0] / "tiny" / "plans" / "rank_0.jsonl").read_text()
    runs = _mlflow_runs(out, name)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.metrics["ap"] == pytest.approx(reference["ap"])
    return summary


def _check_restores(run_dir, expected: int):
    restores = [json.loads(line) for line in (run_dir / "restores.jsonl").read_text().splitlines()]
    assert len(restores) == expected
    for r in restores:  # the actor's state after the restore is the checkpoint's, bit for bit
        assert r["memory_digest"] == r["checkpoint_memory_digest"]
    return restores


@pytest.mark.e2e
def test_worker_killed_mid_task_resumes_from_the_checkpoint(tiny_run, tmp_path):
    proc = start_cli(
        "run",
        TINY,
        f"run.output_dir={tmp_path}",
        "run.name=kill",
        "train.checkpoint_every=6",
        cwd=tmp_path,
        log_path=tmp_path / "log.txt",
    )
    run_dir = tmp_path / "kill"
    _wait_until(
        lambda: _last_step(run_dir, 1) >= 13, proc, "step 13"
    )  # task 2 (8 steps a task), after step 12's checkpoint
    pid = json.loads((run_dir / "workers" / "rank_1.json").read_text())["pid"]
    os.kill(pid, signal.SIGKILL)
    assert proc.wait(timeout=600) == 0, (tmp_path / "log.txt").read_text()[-3000:]
    restores = _check_restores(run_dir, 1)
    # the latest checkpoint Ray Train had registered when the kill landed: the plan log is written
    # by the run recorder, a message behind the worker, so on a busy machine the worker may be a
    # few steps further than the log says (past the boundary of task 2, at most)
    assert restores[0]["checkpoint"] in ("step_000006", "task_00", "step_000012", "task_01", "step_000018")
    assert "resumed from checkpoint" in (tmp_path / "log.txt").read_text()
    _check_finished_like_uninterrupted(tmp_path, "kill", tiny_run)


@pytest.mark.e2e
def test_memory_actor_killed_is_recreated_from_the_snapshot(tiny_run, tmp_path):
    proc = start_cli(
        "run",
        TINY,
        f"run.output_dir={tmp_path}",
        "run.name=actor",
        "train.checkpoint_every=6",
        cwd=tmp_path,
        log_path=tmp_path / "log.txt",
    )
    run_dir = tmp_path / "actor"
    _wait_until(lambda: _last_step(run_dir, 0) >= 20, proc, "step 20")
    actor_pid = json.loads((run_dir / "workers" / "rank_0.json").read_text())["actor_pid"]
    os.kill(actor_pid, signal.SIGKILL)
    assert proc.wait(timeout=600) == 0, (tmp_path / "log.txt").read_text()[-3000:]
    _check_restores(run_dir, 1)
    new_pid = json.loads((run_dir / "workers" / "rank_0.json").read_text())["actor_pid"]
    assert new_pid != actor_pid  # a new actor process, loaded with the checkpointed state
    _check_finished_like_uninterrupted(tmp_path, "actor", tiny_run)


@pytest.mark.e2e
# SIGTERM: a preemption. Ctrl-C takes the same path, and the multi-node rehearsal stops its
# driver with it (`ray job stop`) and resumes: slow
@pytest.mark.parametrize(
    "sig", [pytest.param(signal.SIGINT, marks=pytest.mark.slow), signal.SIGTERM], ids=["ctrl-c", "sigterm"]
)
def test_interrupted_run_resumes_into_the_same_run(tiny_run, tmp_path, sig):
    proc = start_cli(
        "run", TINY, f"run.output_dir={tmp_path}", "run.name=intr", cwd=tmp_path, log_path=tmp_path / "log.txt"
    )
    run_dir = tmp_path / "intr"
    progress = run_dir / "progress.json"
    _wait_until(
        lambda: progress.exists() and json.loads(progress.read_text())["next_task"] >= 2,
        proc,
        "the checkpoint after task 2",
    )
    proc.send_signal(sig)
    assert proc.wait(timeout=120) == 130
    assert "--resume" in (tmp_path / "log.txt").read_text()
    assert not (run_dir / "summary.json").exists()
    assert _mlflow_runs(tmp_path, "intr")[0].info.status == "FAILED"

    again = run_cli("run", TINY, f"run.output_dir={tmp_path}", "run.name=intr", "--resume", cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "resumed from checkpoint" in again.stdout
    _check_finished_like_uninterrupted(tmp_path, "intr", tiny_run)


def test_resume_refuses_a_changed_config_or_a_missing_run(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "run.json").write_text("{}")
    (tmp_path / "r" / "config.yaml").write_text("seed: 0\n")
    proc = run_cli("run", TINY, f"run.output_dir={tmp_path}", "--resume", str(tmp_path / "r"), cwd=tmp_path)
    assert proc.returncode == 2 and "was started with a different config" in proc.stderr
    proc = run_cli("run", TINY, f"run.output_dir={tmp_path}", "--resume", str(tmp_path / "nope"), cwd=tmp_path)
    assert proc.returncode == 2 and "is not a run directory" in proc.stderr


@pytest.mark.e2e
def test_a_worker_that_keeps_failing_stops_the_run_with_one_line_and_a_resumable_run(tiny_run, tmp_path):
    proc = start_cli(
        "run",
        TINY,
        f"run.output_dir={tmp_path}",
        "run.name=dies",
        "train.max_failures=0",  # no restart: the first crash ends the run
        cwd=tmp_path,
        log_path=tmp_path / "log.txt",
    )
    run_dir = tmp_path / "dies"
    _wait_until(lambda: _last_step(run_dir, 1) >= 10, proc, "step 10")  # task 2, after task 1's checkpoint
    os.kill(json.loads((run_dir / "workers" / "rank_1.json").read_text())["pid"], signal.SIGKILL)
    assert proc.wait(timeout=600) == 1
    log = (tmp_path / "log.txt").read_text()
    errors = [line for line in log.splitlines() if line.startswith("mssr: error:")]
    assert len(errors) == 1 and "training failed" in errors[0] and "full logs in" in errors[0], log[-3000:]
    # no pasted traceback (one is Ray's, not the run's: its placement-group cleaner cannot pick a
    # cluster when several local Ray instances run on the machine, as when tests run beside runs)
    assert log.count("Traceback") <= log.count("Found multiple active Ray instances") and "--resume" in log
    assert _mlflow_runs(tmp_path, "dies")[0].info.status == "FAILED"
    again = run_cli(
        "run", TINY, f"run.output_dir={tmp_path}", "run.name=dies", "train.max_failures=0", "--resume", cwd=tmp_path
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    _check_finished_like_uninterrupted(tmp_path, "dies", tiny_run)


@pytest.mark.e2e
def test_an_error_no_restart_can_fix_ends_the_run_once_with_one_line(tmp_path):
    """A user scorer refuses the rows in the workers' first evaluation: the run ends at once,
    without a restart (train.max_failures is 1) and without a --resume hint, exit code 2."""
    rows = "".join(json.dumps({"prompt": f"Name colour {i}.", "answer": "blue"}) + "\n" for i in range(8))
    (tmp_path / "colours.jsonl").write_text(rows)
    task = f"{{name: colours, train: {tmp_path / 'colours.jsonl'}, test: {tmp_path / 'colours.jsonl'}"
    proc = run_cli(
        "run",
        TINY,
        f"run.output_dir={tmp_path}",
        "run.name=refused",
        f"stream.tasks=[{task}, scorer: 'tests.user_scorer:whole_numbers'}}]",
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("mssr: error:")]
    expected = r"mssr: error: training stopped \(rank [01]\): whole_numbers: the reference answer 'blue' is not"
    assert len(errors) == 1 and re.fullmatch(expected + " a whole number", errors[0]), proc.stderr[-3000:]
    log = proc.stdout + proc.stderr  # no traceback of the run's own (see the test above for Ray's)
    assert log.count("Traceback") <= log.count("Found multiple active Ray instances") and "--resume" not in log
    assert not (tmp_path / "refused" / "restores.jsonl").exists()  # no restart was tried
    assert _mlflow_runs(tmp_path, "refused")[0].info.status == "FAILED"


@pytest.mark.e2e
def test_tracking_server_away_mid_run_loses_no_metric(tmp_path, mlflow_server_process):
    """The MLflow server stops in task 1 and comes back in task 2 or later: training goes on, the
    recorder keeps the step metrics meanwhile and sends them when the server answers again."""
    from mlflow import MlflowClient

    server = mlflow_server_process
    proc = start_cli(
        "run",
        TINY,
        f"run.output_dir={tmp_path}",
        "run.name=away",
        f"mlflow.tracking_uri={server.uri}",
        "train.log_every=1",
        "--summary-json",
        str(tmp_path / "summary.json"),
        cwd=tmp_path,
        log_path=tmp_path / "log.txt",
    )
    run_dir = tmp_path / "away"
    _wait_until(lambda: _last_step(run_dir) >= 3, proc, "step 3")
    server.stop()
    _wait_until(lambda: _last_step(run_dir) >= 12, proc, "step 12", timeout=600)
    server.start()  # the run may end first: it waits up to 60 s for the server at its end
    assert proc.wait(timeout=900) == 0, (tmp_path / "log.txt").read_text()[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["mlflow_unlogged_entries"] == 0 and not (run_dir / "unlogged_metrics.jsonl").exists()
    client = MlflowClient(server.uri)
    run = client.get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.metrics["ap"] == pytest.approx(summary["ap"])
    # every step's line (log_every=1: 40 steps) and every task's scores reached the server
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/loss")) == list(range(1, 41))
    assert len(client.get_metric_history(run.info.run_id, "score/mean_seen")) == 5


@pytest.mark.e2e
@pytest.mark.slow  # a run resumed inside: the interrupted-run drills; finished runs kept: test_compare
def test_compare_interrupted_inside_a_run_continues_where_it_stopped(tmp_path, tiny_run):
    """Ctrl-C in the second run of a comparison: exit 130 with how to go on; the same command
    again keeps the first run and resumes the second from its checkpoint, which ends as the
    uninterrupted run of the same config and seed does."""
    args = ["compare", TINY, f"run.output_dir={tmp_path}", "train.checkpoint_every=6", "--strategies", "none,mssr"]
    args += ["--name", "cc"]
    proc = start_cli(*args, cwd=tmp_path, log_path=tmp_path / "log.txt")
    _wait_until(lambda: _last_step(tmp_path / "cc-mssr-s0") >= 14, proc, "step 14 of the second run")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=300) == 130
    log = (tmp_path / "log.txt").read_text()
    assert "comparison cc stopped in run 2/2; run the same mssr compare command again" in log
    assert (tmp_path / "cc-none-s0" / "summary.json").exists() and not (
        tmp_path / "cc-mssr-s0" / "summary.json"
    ).exists()
    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "cc-none-s0 finished in an earlier invocation: kept" in again.stdout
    assert "cc-mssr-s0 was cut off: continuing it from its last checkpoint" in again.stdout
    assert "resumed from checkpoint" in again.stdout
    _check_finished_like_uninterrupted(tmp_path, "cc-mssr-s0", tiny_run)


@pytest.fixture
def small_disk(tmp_path):
    """A 1100 MiB tmpfs (mounted here: the tests run as root, as CI does), unmounted at the end."""
    import subprocess

    where = tmp_path / "bucket"
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1100m", "mssr-small-disk", str(where)])
    if mounted.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail("mounting a tmpfs needs root, as the CI machine has")
        pytest.skip("mounting a tmpfs needs root")
    yield where
    subprocess.run(["umount", "-l", str(where)])


def _fill(filler) -> None:
    """Write ``filler`` until its disk is full: the run may still be writing its last checkpoint,
    so the free space measured a moment before is not the space left (fallocate of it fails)."""
    import errno

    with open(filler, "wb", buffering=0) as f:
        for chunk in (b"\0" * (1 << 20), b"\0" * 4096):
            try:
                while True:
                    f.write(chunk)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise


@pytest.mark.e2e
def test_a_full_checkpoint_disk_stops_the_run_clearly_and_it_resumes_once_freed(tmp_path, tiny_run, small_disk):
    """Checkpoints go to a small disk (MSSR_STORAGE_PATH) that fills up mid-run: the run stops
    with one line naming the error and exit code 1; the last checkpoint written is intact, and
    once space is freed ``--resume`` finishes the run as an uninterrupted one."""

    env = {"MSSR_STORAGE_PATH": str(small_disk)}
    args = ["run", TINY, f"run.output_dir={tmp_path}", "run.name=full", "train.checkpoint_every=6"]
    proc = start_cli(*args, cwd=tmp_path, log_path=tmp_path / "log.txt", env=env)
    run_dir = tmp_path / "full"
    _wait_until(lambda: _last_step(run_dir, 1) >= 13, proc, "step 13")  # after step 12's checkpoint
    _fill(small_disk / "filler")
    assert proc.wait(timeout=600) == 1
    log = (tmp_path / "log.txt").read_text()
    errors = [line for line in log.splitlines() if line.startswith("mssr: error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0], log[-3000:]
    assert "--resume" in log and not (run_dir / "summary.json").exists()
    (small_disk / "filler").unlink()
    again = run_cli(*args, "--resume", cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "resumed from checkpoint" in again.stdout
    _check_finished_like_uninterrupted(tmp_path, "full", tiny_run)
