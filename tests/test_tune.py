"""``mssr tune``: the Tune mapping of a space, bad input, a 2-trial sweep end to end with real
Ray, Tune and MLflow, and the resume of an interrupted sweep."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mssr.config import load_config
from mssr.search_space import load_space
from tests.conftest import ROOT, chromium_path, run_cli, start_cli

TINY = str(ROOT / "configs" / "tiny.yaml")


def test_every_distribution_maps_onto_ray_tune(tmp_path):
    from ray.tune.search.sample import Categorical, Float, Integer

    from pipelines.tune import to_ray

    f = tmp_path / "space.yaml"
    f.write_text(
        "replay.strategy: fixed\n"
        "replay.fixed.interval: {randint: [2, 4]}\n"
        "train.lr: {loguniform: [0.0001, 0.01]}\n"
        "replay.mssr.growth: {uniform: [1.1, 2.0]}\n"
        "replay.samples_per_event: {choice: [2, 4]}\n"
        "seed: {grid: [0, 1]}\n"
    )
    ray_space = to_ray(load_space(f, TINY))
    assert ray_space["replay.strategy"] == "fixed" and ray_space["seed"] == {"grid_search": [0, 1]}
    assert isinstance(ray_space["train.lr"], Float) and isinstance(ray_space["replay.mssr.growth"], Float)
    assert isinstance(ray_space["replay.samples_per_event"], Categorical)
    interval = ray_space["replay.fixed.interval"]
    assert isinstance(interval, Integer)
    draws = interval.sample(size=400, random_state=np.random.default_rng(0))
    assert set(draws) == {2, 3, 4}  # randint's high bound is included, as the space file says
    lrs = ray_space["train.lr"].sample(size=400, random_state=np.random.default_rng(0))
    assert min(lrs) >= 0.0001 and max(lrs) <= 0.01


def test_a_sweep_can_minimise_the_final_loss_that_comparisons_lead_with():
    from pipelines.tune import METRICS

    assert METRICS["loss_final"] == "min" and METRICS["ap"] == "max"


def test_worker_cpus_fit_the_concurrent_trials():
    from pipelines.tune import TRIAL_CPU, worker_cpus

    for cpus, m, w in [(2, 2, 2), (2, 1, 2), (16, 4, 2), (2, 2, 1)]:
        per = worker_cpus(cpus, m, w)
        assert per > 0 and m * (TRIAL_CPU + w * per) <= cpus + 1e-9


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--space", "tune_spaces/nope.yaml"], "search space file not found"),
        (["--space", "tune_spaces/mssr.yaml", "--metric", "loss"], "invalid choice: 'loss'"),
        (["--space", "tune_spaces/mssr.yaml", "--resume"], "--resume needs the --name"),
        (["--space", "tune_spaces/mssr.yaml", "--max-concurrent", "0"], "must be at least 1"),
        (["--space", "tune_spaces/mssr.yaml", "train.batch_size=5"], "multiple of train.num_workers"),
        (
            ["--space", "tune_spaces/mssr.yaml", "stream.split=eval"],
            "a sweep never runs on the evaluation prompts",
        ),
    ],
)
def test_bad_sweep_input_is_refused_before_anything_runs(tmp_path, args, fragment):
    proc = run_cli("tune", TINY, f"run.output_dir={tmp_path / 'out'}", *args, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert fragment in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def _children(uri, parent_id):
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("mssr")
    return client, client.search_runs(exp.experiment_id, f"tags.mlflow.parentRunId = '{parent_id}'")


def _browser_check(uri: str, experiment_id: str, parent_name: str, child, screenshot_dir: Path) -> None:
    """Headless Chromium on the MLflow UI: the sweep's run with its two trials, and a trial's metrics."""
    import re

    chromium = chromium_path()
    from playwright.sync_api import sync_playwright

    screenshot_dir.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1500, "height": 900})
        page.goto(f"{uri}/#/experiments/{experiment_id}/runs")
        page.get_by_text("3 matching runs").wait_for(timeout=60_000)
        page.get_by_text(parent_name, exact=True).wait_for()
        # the trials are nested under the sweep's run: expand it and find both
        page.locator("button[data-component-id*='runnamecellrenderer']").first.click()
        for n in ("00000", "00001"):
            page.get_by_text(re.compile(rf"^{parent_name}-.*_{n}$")).wait_for(timeout=30_000)
        page.screenshot(path=str(screenshot_dir / "sweep_runs.png"))
        page.goto(f"{uri}/#/experiments/{experiment_id}/runs/{child.info.run_id}")
        page.get_by_text(child.info.run_name, exact=True).first.wait_for(timeout=60_000)
        for metric in ("ap", "bwt", "score/mean_seen", "train/loss"):
            page.get_by_text(metric, exact=True).first.wait_for(timeout=30_000)
        page.screenshot(path=str(screenshot_dir / "trial_run.png"), full_page=True)
        browser.close()
    assert (screenshot_dir / "sweep_runs.png").stat().st_size > 10_000


@pytest.mark.e2e
def test_two_trial_sweep_on_an_mlflow_server_seen_in_a_browser(tmp_path, mlflow_server):
    import os

    out = tmp_path / "out"
    proc = run_cli(
        "tune",
        TINY,
        f"run.output_dir={out}",
        f"mlflow.tracking_uri={mlflow_server}",
        "--space",
        str(ROOT / "tune_spaces" / "fixed.yaml"),
        "--num-samples",
        "2",
        "--name",
        "sw",
        cwd=tmp_path,
        timeout=1200,
    )  # ASHA, the default
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    sweep = out / "sweeps" / "sw"
    rows = (sweep / "trials.csv").read_text().splitlines()
    assert len(rows) == 3 and all(",finished," in r for r in rows[1:])
    # the best config is a complete config that loads and plans with `mssr run` unchanged
    best = load_config(sweep / "best.yaml")
    assert best.replay.strategy == "fixed" and best.run.name is None
    assert best.train.cpus_per_worker == 1.0 and best.train.checkpoint_every == 25  # not the trial's settings
    dry = run_cli("run", str(sweep / "best.yaml"), f"run.output_dir={out}", "--dry-run", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr[-2000:]
    # its swept settings alone, for mssr compare --tuned
    from pipelines.compare import load_tuned

    tuned = load_tuned(str(sweep / "best_params.yaml"))
    assert list(tuned) == ["fixed"] and sorted(o.split("=")[0] for o in tuned["fixed"]) == [
        "replay.balance_tasks",
        "replay.samples_per_event",
    ]
    # MLflow: the sweep's parent run, one nested run per trial with its matrix and curves
    record = json.loads((sweep / "sweep.json").read_text())
    client, children = _children(mlflow_server, record["mlflow_run_id"])
    parent = client.get_run(record["mlflow_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["kind"] == "sweep"
    assert parent.data.metrics["trials_finished"] == 2 and "best_ap" in parent.data.metrics
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"trials.csv", "trials.md", "best.yaml"}
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
    # each trial ran with its sampled knobs (the interval follows the budget: not swept)
    assert all(c.data.params["replay.samples_per_event"] in ("2", "4", "8") for c in children)
    assert all(c.data.params["replay.balance_tasks"] in ("False", "True") for c in children)
    for c in children:
        assert {"accuracy_matrix.png", "accuracy_matrix.csv"} <= {a.path for a in client.list_artifacts(c.info.run_id)}
        assert len(client.get_metric_history(c.info.run_id, "score/mean_seen")) == 5
    assert "run the best config with: mssr run" in proc.stdout
    shots = Path(os.environ.get("MSSR_TEST_ARTIFACTS", ROOT / "test-artifacts"))
    _browser_check(mlflow_server, parent.info.experiment_id, "sw", children[0], shots)


@pytest.mark.e2e
def test_a_trial_stopped_by_tune_gives_its_cpus_back(tmp_path):
    # Tune kills the trials ASHA stops; the placement group of their Ray Train workers stayed
    # reserved, and the next trials of a sweep waited for CPUs forever.
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "stopped_trial.py"), str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    cpus = json.loads(proc.stdout.strip().splitlines()[-1])
    assert cpus["free"] == cpus["total"], cpus


@pytest.mark.e2e
@pytest.mark.slow  # Tune's own restore; the sweep itself: the browser-checked sweep
def test_interrupted_sweep_resumes(tmp_path):
    out = tmp_path / "out"
    args = [
        "tune",
        TINY,
        f"run.output_dir={out}",
        "--space",
        str(ROOT / "tune_spaces" / "fixed.yaml"),
        "--num-samples",
        "2",
        "--scheduler",
        "fifo",
        "--name",
        "sw",
        "--max-concurrent",
        "1",
    ]
    proc = start_cli(*args, cwd=tmp_path, log_path=tmp_path / "first.log")
    deadline = time.time() + 600
    # interrupt once a trial has finished its second task (a task-boundary checkpoint to continue from)
    while not any(json.loads(p.read_text())["next_task"] >= 2 for p in out.glob("sw-*/progress.json")):
        assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        assert time.time() < deadline, "no trial reached its second task"
        time.sleep(0.5)
    assert len(list(out.glob("sw-*"))) == 1  # --max-concurrent 1: the second trial has not started
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=300) == 130, (tmp_path / "first.log").read_text()[-3000:]
    first = (tmp_path / "first.log").read_text()
    assert "--resume" in first
    resumed = run_cli(*args, "--resume", cwd=tmp_path, timeout=1200)
    assert resumed.returncode == 0, resumed.stdout[-4000:] + resumed.stderr[-4000:]
    assert "resumed from checkpoint task_" in resumed.stdout  # a trial continued, not restarted
    rows = (out / "sweeps" / "sw" / "trials.csv").read_text().splitlines()
    assert len(rows) == 3 and all(",finished," in r for r in rows[1:])
    record = json.loads((out / "sweeps" / "sw" / "sweep.json").read_text())
    client, children = _children(f"sqlite:///{out / 'mlflow.db'}", record["mlflow_run_id"])
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)  # one run per trial
    assert client.get_run(record["mlflow_run_id"]).info.status == "FINISHED"
