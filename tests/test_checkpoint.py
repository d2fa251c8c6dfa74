"""Checkpoint files round-trip exactly: weights, trainer state and the memory actor's state."""

import math

import numpy as np
import pytest
import torch

from mssr.checkpoint import Progress, load_checkpoint, save_checkpoint
from mssr.config import ReplayConfig
from mssr.replay import ReplayPlanner, StepObservation
from tests.planner_sim import simulate


def _planner_after_two_tasks(strategy="mssr", **extra):
    cfg = ReplayConfig(strategy=strategy, pool_per_task=8, samples_per_event=3, **extra)
    p = ReplayPlanner(cfg, seed=5)
    simulate(p, tasks=2, steps=20, batch=2)
    p.start_task(2)
    p.observe_step(
        [StepObservation([2500, 2501], [0.3, 0.9], update_norm=0.02)]
    )  # a reservoir in progress is saved too
    return p, int(p.clock.time)


@pytest.mark.parametrize(
    "strategy,extra",
    [
        ("mssr", {}),
        ("accuracy", {}),
        ("loss", {"loss": {"signal": "probe"}}),
        ("mssr-expanding", {"clock": "update_norm"}),
    ],
)
def test_checkpoint_roundtrip_continues_the_same_plans(tmp_path, strategy, extra):
    planner, now = _planner_after_two_tasks(strategy, **extra)
    actor_state = {
        "planner": planner.state_dict(),
        "applied_through": now - 1,
        "started": [0, 1, 2],
        "ended": {0: [1, 2], 1: [3]},
    }
    trainable = {"layer.lora_A.weight": torch.randn(4, 8), "layer.lora_B.weight": torch.zeros(8, 4)}
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.randn(3))], lr=1e-3)
    trainer_state = {"optimizer": opt.state_dict(), "torch_rng": [torch.get_rng_state()]}
    progress = Progress(next_task=2, step=now, matrix=[[0.0, 0.1], [0.5, 0.2]], tokens={"train_new": 5.0})
    save_checkpoint(tmp_path, trainable, trainer_state, actor_state, progress)

    w, t, a, p = load_checkpoint(tmp_path)
    assert p == progress
    assert all(torch.equal(w[k], v) for k, v in trainable.items())
    assert torch.equal(t["torch_rng"][0], trainer_state["torch_rng"][0])
    assert {int(k): v for k, v in a["ended"].items()} == actor_state["ended"]

    restored = ReplayPlanner(planner.cfg, seed=123)
    restored.load_state_dict(a["planner"])
    for key, arr in planner.memory.state_dict().items():
        np.testing.assert_array_equal(arr, restored.memory.state_dict()[key])
    assert restored.reservoir.last_loss == planner.reservoir.last_loss
    assert simulate(planner, tasks=1, first_task=3) == simulate(restored, tasks=1, first_task=3)


def test_progress_from_an_older_or_newer_checkpoint_keeps_what_it_knows():
    old = {"next_task": 3, "step": 40, "matrix": [[0.5]], "pipeline": {"train_wall": 9.0}, "gone_field": 1}
    p = Progress.from_json(old)
    assert (p.next_task, p.step, p.matrix) == (3, 40, [[0.5]])
    assert p.pipeline == {"train_wall": 9.0, "data_wait": 0.0, "plan_wait": 0.0, "eval_wall": 0.0}
    assert Progress.from_json(p.to_json()) == p


def test_progress_widened_for_a_continuation():
    p = Progress(task_names=["a", "b"], matrix=[[0.1, 0.2], [0.9, 0.3], [0.5, 0.8]], row_scores=[[[1.0], [0.0]]] * 3)
    p.loss_matrix = [[1.0, 1.0]] * 3
    p.row_losses = [[[1.0], [1.0]]] * 3
    w = p.with_tasks(["a", "b", "c"])
    assert w.task_names == ["a", "b", "c"] and w.matrix[2][:2] == [0.5, 0.8] and math.isnan(w.matrix[2][2])
    assert all(len(r) == 3 for r in w.loss_matrix) and w.row_scores[0][2] == [] and p.task_names == ["a", "b"]
    with pytest.raises(ValueError, match="does not extend"):
        p.with_tasks(["b", "a", "c"])
    with pytest.raises(ValueError, match="does not extend"):
        p.with_tasks(["a", "b"])
