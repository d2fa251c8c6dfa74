"""Replay diagnostics: calibration on a simulated pool whose forgetting is known, and the
per-task accounting of a plan."""

import json

import numpy as np
import pytest

from mssr.diagnostics import (
    ReplayRecord,
    calibration,
    events_by_task_phase,
    last_task_share,
    picks_by_task,
    spend_by_task,
    summarise,
    task_of_step,
)
from mssr.sample_ids import sample_id, task_of


def _records(true_strength, believed_strength, n=400, seed=0):
    """Replays at random ages; the true loss rise is 2 (1 - exp(-age / S_true)) plus noise;
    the memory model predicts R from its own belief of S."""
    rng = np.random.default_rng(seed)
    age = rng.uniform(0, 100, n)
    rise = 2.0 * (1 - np.exp(-age / true_strength)) + rng.normal(0, 0.1, n)
    believed = np.broadcast_to(believed_strength, (n,))
    return [
        ReplayRecord(
            step=float(a),
            sample_id=i,
            task=0,
            age=float(a),
            strength=float(s),
            predicted_retention=float(np.exp(-a / s)),
            entry_loss=0.5,
            loss=0.5 + float(x),
        )
        for i, (a, x, s) in enumerate(zip(age, rise, believed))
    ]


def test_a_calibrated_memory_model_ranks_forgetting_and_a_blind_one_does_not():
    good = calibration(_records(true_strength=np.full(400, 30.0), believed_strength=30.0))
    assert good["n"] == 400 and good["spearman"] > 0.9
    rises = [b["mean_loss_rise"] for b in good["bins"]]
    assert rises == sorted(rises, reverse=True)  # more retained, less forgotten
    assert sum(b["n"] for b in good["bins"]) == 400 and good["bins"][0]["r_high"] <= good["bins"][1]["r_low"]

    # strengths the model made up: its R varies, but says nothing about the (noise-only) loss rise
    rng = np.random.default_rng(1)
    blind = calibration(
        [
            ReplayRecord(
                step=0,
                sample_id=i,
                task=0,
                age=10.0,
                strength=s,
                predicted_retention=float(np.exp(-10 / s)),
                entry_loss=0.5,
                loss=0.5 + float(rng.normal(1.0, 0.3)),
            )
            for i, s in enumerate(rng.uniform(1, 100, 400))
        ]
    )
    assert abs(blind["spearman"]) < 0.15


def test_calibration_of_too_few_records():
    assert calibration([])["spearman"] != calibration([])["spearman"]  # NaN
    one = calibration(_records(30.0, 30.0, n=2))
    assert one["n"] == 2 and np.isnan(one["spearman"]) and len(one["bins"]) == 2


def test_plan_accounting_by_task():
    task_steps = [4, 6, 6]
    replays = [[]] * 4 + [[], [], [1, 2], [], [], [3]] + [[sample_id(1, 5), 7], [], [], [], [], [sample_id(1, 6)]]
    assert task_of_step(0, task_steps) == (0, 0) and task_of_step(9, task_steps) == (1, 5)
    assert task_of_step(10, task_steps) == (2, 0)
    with pytest.raises(ValueError, match="past the stream"):
        task_of_step(16, task_steps)
    events = events_by_task_phase(replays, task_steps)
    assert events["events_per_task"] == [0, 2, 2]
    assert events["phases"] == {"first": 1, "middle": 1, "last": 2}
    assert spend_by_task(replays, task_steps, budget=10) == [
        {"task": 0, "replayed": 0, "budget_left": 10},
        {"task": 1, "replayed": 3, "budget_left": 7},
        {"task": 2, "replayed": 3, "budget_left": 4},
    ]
    picks = picks_by_task(replays, task_steps, task_of)
    assert picks[1]["replayed_from"] == {0: 3} and picks[2]["replayed_from"] == {1: 2, 0: 1}


def test_the_share_drawn_from_the_task_learned_last_against_an_even_split():
    picks = [
        {"task": 0, "replayed_from": {}},
        {"task": 1, "replayed_from": {"0": 4}},  # one task to draw from: not counted
        {"task": 2, "replayed_from": {"0": 1, "1": 3}},  # 3 of 4 from task 1; even: 2 of 4
        {"task": 3, "replayed_from": {"0": 2, "1": 2, "2": 2}},  # 2 of 6 from task 2; even: 2 of 6
    ]
    share, even = last_task_share(picks)
    assert share == pytest.approx(5 / 10) and even == pytest.approx(4 / 10)
    assert np.isnan(last_task_share(picks[:2])[0])


def test_the_diagnostics_command_tabulates_runs_and_names_a_missing_file(tmp_path, capsys):
    from pipelines.cli import main

    task_steps = [4, 6, 6]
    replays = [[]] * 4 + [[], [], [1, 2], [], [], [3]] + [[sample_id(1, 5), 7], [], [], [], [], [sample_id(1, 6)]]
    events = [[s, ids] for s, ids in enumerate(replays) if ids]
    log = [r.to_json() for r in _records(30.0, 30.0, n=40)]
    run = tmp_path / "run-a"
    run.mkdir()
    (run / "diagnostics.json").write_text(json.dumps(summarise(log, events, task_steps, budget=10)))
    assert main(["diagnostics", str(run)]) == 0
    row = capsys.readouterr().out.splitlines()[2]
    # 6 replayed; 1 event in the first third of its task, 1 in the middle, 2 in the last; 3 during the last
    # task, 2 of them from task 1 (an even split over tasks 0 and 1 gives half)
    assert row.startswith("| run-a | 6 | +0.") and "| 1 / 1 / 2 | 3 | 0.67 (0.50) |" in row
    assert main(["diagnostics", str(tmp_path / "missing")]) == 2
    assert f"{tmp_path / 'missing' / 'diagnostics.json'}: not found" in capsys.readouterr().err
