"""The learner in-process, without Ray: the step the Ray worker runs, on the tiny model."""

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from mssr.config import load_config
from mssr.learner import Learner
from mssr.losses import per_sample_loss
from mssr.tasks import Example
from mssr.tokenize import collate

TINY = Path(__file__).resolve().parent.parent / "configs" / "tiny.yaml"
CPU = torch.device("cpu")


def _learner(*overrides: str, steps: int = 10) -> Learner:
    return Learner(load_config(TINY, list(overrides)), total_steps=steps, device=CPU)


def _rows(learner: Learner, n: int, offset: int = 0) -> list[tuple[list[int], int]]:
    enc = learner.encoder.encode_many(
        [f"what is {i} plus {i}?" for i in range(offset, offset + n)], [str(2 * i) for i in range(offset, offset + n)]
    )
    return list(zip(enc["input_ids"], enc["prompt_len"]))


@torch.no_grad()
def _losses_now(learner: Learner, rows) -> np.ndarray:
    b = collate([r[0] for r in rows], [r[1] for r in rows], learner.tok.pad_token_id)
    logits = learner.core(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    return per_sample_loss(logits, b["labels"]).numpy()


def test_a_step_returns_the_per_sample_losses_of_new_then_replayed_rows_before_the_update():
    learner = _learner()
    new, replay = _rows(learner, 3), _rows(learner, 2, offset=10)
    expected = _losses_now(learner, [*new, *replay])
    before = [p.detach().clone() for p in learner.trainable]
    result = learner.train_step(new, replay, update_norm=True)
    assert result.losses == pytest.approx(expected, rel=1e-5)  # the training forward's own losses
    assert result.new_tokens == sum(len(r[0]) for r in new)
    assert result.replay_tokens == sum(len(r[0]) for r in replay)
    moved = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(learner.trainable, before)))
    assert result.update_norm == pytest.approx(float(moved), rel=1e-5) and result.update_norm > 0
    assert not np.allclose(_losses_now(learner, new), expected[:3])  # the step changed the model


def test_replayed_rows_change_the_step():
    a, b = _learner(), _learner()
    new = _rows(a, 2)
    a.train_step(new)
    b.train_step(new, _rows(b, 2, offset=10))
    assert any(not torch.equal(p, q) for p, q in zip(a.trainable, b.trainable))


def test_gradient_accumulation_gives_the_same_step():
    whole, chunked = _learner(), _learner("train.grad_accum_steps=2")
    rows = _rows(whole, 4)
    r1, r2 = whole.train_step(rows[:2], rows[2:]), chunked.train_step(rows[:2], rows[2:])
    assert r1.losses == pytest.approx(r2.losses, rel=1e-5)
    for p, q in zip(whole.trainable, chunked.trainable):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)


def test_isolated_weights_do_not_move_in_a_step():
    learner = _learner("isolation.method=static", "isolation.ratio=0.3")
    learner.start_task(0)
    learner.train_step(_rows(learner, 4))
    learner.start_task(1)  # static: the most-moved weights of task 0 are frozen for task 1
    mask = [m.clone() for m in learner.isolation.mask]
    assert sum(int(m.sum()) for m in mask) > 0
    before = [p.detach().clone() for p in learner.trainable]
    learner.train_step(_rows(learner, 4, offset=20))
    for p, b, m in zip(learner.trainable, before, mask):
        assert torch.equal(p[m], b[m])  # frozen: bit-for-bit
        assert not torch.equal(p[~m], b[~m])  # the others trained


def test_a_restored_learner_takes_the_same_next_step():
    a = _learner("train.lr_schedule=cosine")
    rows = _rows(a, 4)
    a.train_step(rows)
    trainable, state = a.state_dict()
    b = _learner("train.lr_schedule=cosine")
    b.load_state_dict(copy.deepcopy(trainable), copy.deepcopy(state))  # as a checkpoint would: no shared tensors
    ra, rb = a.train_step(rows), b.train_step(rows)
    assert ra.losses == pytest.approx(rb.losses, rel=1e-6)
    for p, q in zip(a.trainable, b.trainable):
        torch.testing.assert_close(p, q)


def test_probe_and_evaluate_leave_the_model_in_training_mode():
    learner = _learner()
    probe = learner.probe(_rows(learner, 3))
    assert len(probe.losses) == len(probe.correct) == 3 and probe.tokens > 0
    assert probe.losses == pytest.approx(_losses_now(learner, _rows(learner, 3)), rel=1e-5)
    result = learner.evaluate([Example("what is 1 plus 1?", "2"), Example("what is 2 plus 2?", "4")], "exact_match")
    assert len(result.scores) == len(result.losses) == 2 and result.tokens > 0
    assert learner.core.training
