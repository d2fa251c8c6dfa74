"""The replay planner (mssr/replay.py): budgets, determinism, the split over ranks, state
round trips, the reservoir, the task-end entry loss and a continued run's re-planned budget."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mssr.config import ReplayConfig
from mssr.replay import ReplayPlanner, Reservoir, StepObservation, derived_fixed_interval
from mssr.schedulers import (
    DEFAULT_FIXED_INTERVAL,
)
from mssr.strategies import STRATEGIES
from tests.planner_sim import replayed, simulate


def _run_planner(strategy, budget=None, seed=0, tasks=3, steps=40, batch=4, **extra):
    cfg = ReplayConfig(
        strategy=strategy, budget=budget, pool_per_task=16, samples_per_event=4, fixed={"interval": 2}, **extra
    )
    planner = ReplayPlanner(cfg, seed=seed, total_new_samples=tasks * steps * batch)
    return planner, simulate(planner, tasks=tasks, steps=steps, batch=batch)


VARIANTS = [(name, {}) for name in STRATEGIES.names()] + [
    ("loss", {"loss": {"signal": "probe"}}),
    ("mssr", {"clock": "update_norm"}),
    ("fixed", {"balance_tasks": True}),
]


@pytest.mark.parametrize("strategy,extra", VARIANTS)
@pytest.mark.parametrize("budget", [None, 10, 0.05])
def test_no_strategy_exceeds_its_budget(strategy, extra, budget):
    planner, plans = _run_planner(strategy, budget, **extra)
    total = replayed(plans)
    assert total == planner.replayed
    if budget is not None:
        assert total <= (budget if isinstance(budget, int) else int(budget * 3 * 40 * 4))
    if strategy in ("none", "joint"):
        assert total == 0
    else:
        assert total > 0


@pytest.mark.parametrize("budget", [6, 10, 0.05, 0.2])
@pytest.mark.parametrize("strategy", ["fixed", "mssr-sampler"])
def test_an_interval_derived_from_the_budget_spends_it_to_the_last_event(strategy, budget):
    """With ``fixed.interval`` null, the fixed schedule spreads the budget evenly over the
    steps after the first task: it spends all of it (the last event may be partial), and its
    last event falls in the last task."""
    cfg = ReplayConfig(strategy=strategy, budget=budget, pool_per_task=16, samples_per_event=4)
    planner = ReplayPlanner(cfg, seed=0, total_new_samples=3 * 40 * 4, replay_steps=2 * 40)
    plans = simulate(planner, tasks=3, steps=40, batch=4)
    cap = budget if isinstance(budget, int) else int(budget * 3 * 40 * 4)
    assert replayed(plans) == cap
    events = [i for i, p in enumerate(plans) if p.replay]
    assert len(events) == -(-cap // 4) and events[-1] >= 80  # ceil(cap / 4) events, the last in task 3
    gaps = np.diff(events)
    assert gaps.max() - gaps.min() <= 1  # evenly spread (the grid's fractional interval)


def test_a_configured_interval_is_kept_and_a_missing_budget_falls_back_to_the_default():
    with_interval = ReplayPlanner(
        ReplayConfig(strategy="fixed", budget=10, fixed={"interval": 7}), seed=0, total_new_samples=480, replay_steps=80
    )
    assert with_interval.strategy.scheduler.interval == 7
    no_budget = ReplayPlanner(ReplayConfig(strategy="fixed"), seed=0, total_new_samples=480, replay_steps=80)
    assert no_budget.strategy.scheduler.interval == DEFAULT_FIXED_INTERVAL
    assert derived_fixed_interval(400, 4, 80) == 1.0  # more events than steps: every step


@pytest.mark.parametrize("strategy,extra", VARIANTS)
def test_same_seed_same_plan_sequence(strategy, extra):
    first = _run_planner(strategy, seed=3, **extra)[1]
    assert first == _run_planner(strategy, seed=3, **extra)[1]
    if strategy not in ("none", "joint"):
        assert first != _run_planner(strategy, seed=4, **extra)[1]


def test_plans_do_not_depend_on_how_a_step_is_split_over_ranks():
    one = simulate(ReplayPlanner(ReplayConfig(strategy="mssr", pool_per_task=16), seed=0), ranks=1)
    two = simulate(ReplayPlanner(ReplayConfig(strategy="mssr", pool_per_task=16), seed=0), ranks=2)
    assert replayed(one) > 0
    # the same samples, split over one rank or two: the same pool, the same events, the same ids
    assert [p.replay for p in one] == [p.replay for p in two]


def test_no_replay_before_the_pool_has_samples():
    _, plans = _run_planner("fixed")
    assert all(p.replay == [] for p in plans[:40]) and any(p.replay for p in plans[40:])


def test_planner_state_roundtrip_continues_identically():
    a, _ = _run_planner("mssr", tasks=2)
    b = ReplayPlanner(a.cfg, seed=99)
    b.load_state_dict(a.state_dict())
    assert simulate(a, tasks=1, first_task=2) == simulate(b, tasks=1, first_task=2)


def test_task_end_entry_loss_is_the_learned_level_of_the_task_and_survives_a_mid_task_restore():
    cfg = ReplayConfig(strategy="mssr", pool_per_task=8, mssr={"entry_loss": "task_end"})
    planner = ReplayPlanner(cfg, seed=0)
    planner.start_task(0)
    for i, loss in enumerate([4.0, 3.0, 2.0, 1.0, 0.8, 0.6, 0.4, 0.2]):
        planner.observe_step([StepObservation(new_ids=[2 * i, 2 * i + 1], new_losses=[loss - 0.1, loss + 0.1])])
    restored = ReplayPlanner(cfg, seed=5)
    restored.load_state_dict(planner.state_dict())
    assert planner.learned_level() == pytest.approx(0.3)  # the last quarter: steps of 0.4 and 0.2
    planner.end_task(0)
    restored.end_task(0)
    assert planner.memory.entry_loss.tolist() == pytest.approx([0.3] * 8)
    assert planner.memory.loss.tolist() != planner.memory.entry_loss.tolist()  # own-step losses kept
    assert restored.memory.state_dict().keys() == planner.memory.state_dict().keys()
    for k, v in planner.memory.state_dict().items():
        assert np.array_equal(v, restored.memory.state_dict()[k], equal_nan=True), k
    own = ReplayPlanner(ReplayConfig(strategy="mssr", pool_per_task=8, mssr={"entry_loss": "own_step"}), seed=0)
    own.start_task(0)
    own.observe_step([StepObservation(new_ids=[1, 2], new_losses=[4.0, 0.5])])
    own.end_task(0)
    assert own.memory.entry_loss.tolist() == [4.0, 0.5]


@settings(max_examples=30, deadline=None)
@given(n=st.integers(0, 200), size=st.integers(1, 20))
def test_reservoir_keeps_min_n_size_unique_samples(n, size):
    r = Reservoir(size, np.random.default_rng(0))
    r.offer(range(n), np.ones(n))
    r.offer(range(n), np.zeros(n))  # a second epoch refreshes losses only
    assert len(r.ids) == min(n, size) == len(set(r.ids)) and set(r.last_loss) == set(r.ids)
    assert all(v == 0.0 for v in r.last_loss.values())


def test_reservoir_is_uniform():
    counts = np.zeros(100)
    for seed in range(400):
        r = Reservoir(10, np.random.default_rng(seed))
        r.offer(range(100), np.zeros(100))
        counts[r.ids] += 1
    # each sample kept with p = 0.1: 40 expected of 400, std ~6
    assert counts.min() > 15 and counts.max() < 70


@pytest.mark.parametrize("strategy", ["fixed", "mssr", "mssr-scheduler", "surprise", "loss", "accuracy"])
def test_a_continued_run_spends_its_re_planned_budget_on_the_new_tasks(strategy):
    """mssr continue restores the planner from the finished run's checkpoint with a budget and
    steps re-planned over the extended stream: the schedule follows the new plan (restored with
    the old one, the paced schedule found its budget spent and replayed nothing in new tasks)."""
    first = ReplayPlanner(ReplayConfig(strategy=strategy, budget=0.08, pool_per_task=16, samples_per_event=4), seed=0,
                          total_new_samples=3 * 40 * 4, replay_steps=2 * 40)  # fmt: skip
    simulate(first, tasks=3, steps=40, batch=4)
    spent = first.replayed
    longer = ReplayConfig(strategy=strategy, budget=0.08, pool_per_task=16, samples_per_event=4)
    continued = ReplayPlanner(longer, seed=0, total_new_samples=5 * 40 * 4, replay_steps=4 * 40)
    continued.load_state_dict(first.state_dict())
    plans = simulate(continued, tasks=2, steps=40, batch=4, first_task=3)
    assert continued.budget == int(0.08 * 5 * 40 * 4) > spent
    assert replayed(plans) > 0  # the new tasks are replayed with the old ones
    assert continued.replayed <= continued.budget
