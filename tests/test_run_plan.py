"""The run plan (mssr/run_plan.py): resolved once, typed and frozen; and what a run says
when its strategy left most of its budget unspent (pipelines/results.py)."""

import dataclasses

import pytest

from mssr.config import Config, TaskSpec
from mssr.run_plan import build_plan
from mssr.strategies import build_strategy
from mssr.tasks import load_stream


def _plan(write_jsonl, strategy: str, budget):
    rows = [{"prompt": f"q{i}", "answer": "a"} for i in range(16)]
    specs = [
        TaskSpec(name=n, train=str(write_jsonl(f"{n}.jsonl", rows)), test=str(write_jsonl(f"{n}.t.jsonl", rows[:4])))
        for n in "ab"
    ]
    cfg = Config.model_validate(
        {
            "stream": {"tasks": [s.model_dump() for s in specs]},
            "train": {"num_workers": 1, "batch_size": 4},
            "replay": {"strategy": strategy, "budget": budget, "samples_per_event": 2},
        }
    )
    stats = [{"rows": 16, "tokens": 160, "max_length": 12, "truncated": 0}] * 2
    return build_plan(cfg, load_stream(cfg.stream), stats, build_strategy(strategy, cfg.replay))


def test_the_plan_resolves_the_budget_and_the_fixed_interval_once(write_jsonl):
    plan = _plan(write_jsonl, "fixed", 0.25)
    assert [t.steps for t in plan.tasks] == [4, 4] and plan.total_steps == 8 and plan.new_samples == 32
    assert plan.replay_budget == 8 and plan.replay.budget == 8  # a quarter of 32 new samples, counted
    assert plan.replay_steps == 4 and plan.replay.fixed.interval == plan.fixed_interval == 1.0  # 4 events in 4 steps
    assert plan.replays and not _plan(write_jsonl, "none", 0.25).replays
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.total_steps = 9


def test_a_strategy_that_spent_under_half_its_budget_is_said(write_jsonl):
    from pipelines.results import underspent

    plan = _plan(write_jsonl, "mssr", 0.25)
    assert underspent(plan, 3) == "the strategy replayed 3 of its budget of 8 samples"
    assert underspent(plan, 4) is None
    assert underspent(_plan(write_jsonl, "none", 0.25), 0) is None  # never replays: nothing to say
    assert underspent(_plan(write_jsonl, "mssr", None), 0) is None  # no budget
