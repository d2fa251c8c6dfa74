import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mssr.config import ReplayConfig
from mssr.memory import MemoryState
from mssr.replay import ReplayPlanner, Reservoir
from mssr.samplers import StrengthSampler, UniformSampler
from mssr.schedulers import AdaptiveScheduler, FixedIntervalScheduler
from mssr.strategies import STRATEGIES, build_strategy


def test_strength_sampler_favours_low_retention():
    cfg = ReplayConfig()
    mem = MemoryState(cfg.mssr)
    mem.add(np.arange(100), task=0, losses=np.full(100, 0.5), now=0)
    mem.update(np.arange(50), np.full(50, 0.1), now=80)  # first half fresh, second half decayed
    rng = np.random.default_rng(0)
    picks = np.concatenate([StrengthSampler(cfg.mssr).sample(mem, 80, 4, rng) for _ in range(500)])
    share_decayed = np.mean(picks >= 50)
    uniform = np.concatenate([UniformSampler().sample(mem, 80, 4, rng) for _ in range(500)])
    assert share_decayed > 0.9 and abs(np.mean(uniform >= 50) - 0.5) < 0.05


def test_samplers_draw_without_replacement():
    cfg = ReplayConfig()
    mem = MemoryState(cfg.mssr)
    mem.add(np.arange(10), task=0, losses=np.zeros(10), now=0)
    for sampler in (StrengthSampler(cfg.mssr), UniformSampler()):
        ids = sampler.sample(mem, 5, 10, np.random.default_rng(1))
        assert sorted(ids) == list(range(10))


def test_adaptive_intervals_expand_then_reset_at_task_start():
    cfg = ReplayConfig(mssr={"initial_interval": 2, "growth": 2.0, "max_interval": 8, "retention_threshold": 0.0})
    s = AdaptiveScheduler(cfg)
    mem = MemoryState(cfg.mssr)
    s.on_task_start(0, now=0)
    due = [t for t in range(40) if s.is_due(t, mem) and (s.on_replay(t) or True)]
    assert np.diff(due).tolist() == [4, 8, 8, 8, 8]  # first at I0=2, then 4, 8 (capped)
    assert due[0] == 2
    s.on_task_start(1, now=100)
    assert not s.is_due(101, mem) and s.is_due(102, mem)


def test_adaptive_replays_early_when_retention_is_low():
    cfg = ReplayConfig(mssr={"initial_interval": 2, "max_interval": 100, "retention_threshold": 0.9, "decay": 0.5})
    s = AdaptiveScheduler(cfg)
    mem = MemoryState(cfg.mssr)
    mem.add([1], task=0, losses=[1.0], now=0)
    s.on_task_start(1, now=0)
    s.on_replay(2)  # next due at 2 + 3 = 5
    assert s.is_due(4, mem)  # retention exp(-4/1) << 0.9 and 2 steps since the last replay


def test_fixed_interval():
    s = FixedIntervalScheduler(ReplayConfig(fixed={"interval": 3}))
    mem = MemoryState(ReplayConfig().mssr)
    s.on_task_start(0, now=10)
    due = [t for t in range(10, 30) if s.is_due(t, mem) and (s.on_replay(t) or True)]
    assert due == [13, 16, 19, 22, 25, 28]


def _run_planner(strategy, budget=None, seed=0, tasks=3, steps=40, batch=4):
    cfg = ReplayConfig(strategy=strategy, budget=budget, pool_per_task=16, samples_per_event=4,
                       fixed={"interval": 2})
    planner = ReplayPlanner(cfg, seed=seed, total_new_samples=tasks * steps * batch)
    plans, now = [], 0
    for k in range(tasks):
        planner.start_task(k, now)
        for i in range(steps):
            ids = planner.plan(now)
            plans.append(ids)
            new = [k * 1000 + i * batch + j for j in range(batch)]
            planner.observe(now, new, np.linspace(0.1, 2.0, batch), ids, np.full(len(ids), 0.3))
            now += 1
        planner.end_task(k, now)
    return planner, plans


@pytest.mark.parametrize("strategy", ["none", "fixed", "mssr", "mssr-sampler", "mssr-scheduler"])
@pytest.mark.parametrize("budget", [None, 10, 0.05])
def test_no_strategy_exceeds_its_budget(strategy, budget):
    planner, plans = _run_planner(strategy, budget)
    total = sum(len(p) for p in plans)
    assert total == planner.replayed
    if budget is not None:
        assert total <= (budget if isinstance(budget, int) else int(budget * 3 * 40 * 4))
    if strategy == "none":
        assert total == 0
    else:
        assert total > 0


@pytest.mark.parametrize("strategy", ["fixed", "mssr"])
def test_same_seed_same_plan_sequence(strategy):
    assert _run_planner(strategy, seed=3)[1] == _run_planner(strategy, seed=3)[1]
    assert _run_planner(strategy, seed=3)[1] != _run_planner(strategy, seed=4)[1]


def test_no_replay_before_the_pool_has_samples():
    _, plans = _run_planner("fixed")
    assert all(p == [] for p in plans[:40]) and any(plans[40:])


def test_planner_state_roundtrip_continues_identically():
    a, _ = _run_planner("mssr", tasks=2)
    b = ReplayPlanner(a.cfg, seed=99)
    b.load_state_dict(a.state_dict())
    b.start_task(2, 80)
    a.start_task(2, 80)
    assert [a.plan(t) for t in range(80, 120)] == [b.plan(t) for t in range(80, 120)]


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


def test_user_strategy_by_import_path():
    s = build_strategy("tests.user_strategy:make", ReplayConfig())
    assert s.name == "every-step"
    assert "mssr" in STRATEGIES.names()
