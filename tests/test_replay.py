import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mssr.clock import StepClock, UpdateNormClock
from mssr.config import ReplayConfig
from mssr.errors import ConfigError
from mssr.memory import MemoryState
from mssr.replay import ReplayPlan, ReplayPlanner, Reservoir, StepObservation, derived_fixed_interval
from mssr.samplers import StrengthSampler, TaskBalancedSampler, UniformSampler
from mssr.schedulers import (
    DEFAULT_FIXED_INTERVAL,
    AdaptiveScheduler,
    FixedIntervalScheduler,
    LossTriggerScheduler,
    PacedScheduler,
)
from mssr.strategies import STRATEGIES, build_strategy
from tests.planner_sim import replayed, simulate


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


def test_loss_trigger_fires_on_a_spike_only():
    s = LossTriggerScheduler(ReplayConfig(loss={"z": 2.0, "window": 10, "min_history": 5}))
    mem = MemoryState(ReplayConfig().mssr)
    for t in range(30):
        s.on_step(t, 1.0 + 0.01 * (-1) ** t)  # ups and downs within 1 std
    assert not s.is_due(30, mem)
    s.on_step(30, 2.0)  # a jump far above mean + 2 std
    assert s.is_due(31, mem)
    s.on_replay(31)
    assert not s.is_due(32, mem)


def test_loss_probe_measures_a_fixed_slice_every_k_steps():
    cfg = ReplayConfig(loss={"signal": "probe", "probe_every": 4, "probe_size": 3})
    s = LossTriggerScheduler(cfg)
    mem = MemoryState(cfg.mssr)
    mem.add(np.arange(10), task=0, losses=np.zeros(10), now=0)
    rng = np.random.default_rng(0)
    s.on_task_start(1, now=10)
    probes = {t: s.probe(t, mem, rng) for t in range(10, 20)}
    assert [t for t, p in probes.items() if p is not None] == [10, 14, 18]
    assert len({tuple(p) for p in probes.values() if p is not None}) == 1 and len(probes[10]) == 3


def test_accuracy_trigger_replays_only_the_task_that_dropped():
    cfg = ReplayConfig(
        strategy="accuracy", samples_per_event=4, accuracy={"every": 5, "probe_per_task": 4, "delta": 0.2, "events": 2}
    )
    planner = ReplayPlanner(cfg, seed=0)
    mem = planner.memory
    mem.add(np.arange(0, 10), task=0, losses=np.zeros(10), now=0)
    mem.add(np.arange(100, 110), task=1, losses=np.zeros(10), now=0)
    planner.start_task(2)
    first = planner.plan()
    assert first.replay == [] and len(first.probe) == 8  # the baseline probe: 4 per past task
    ids = np.asarray(first.probe)
    planner.observe_step(
        [StepObservation([], [], probe_ids=ids, probe_losses=np.zeros(8), probe_correct=np.ones(8, bool))]
    )
    for _ in range(4):  # no probe and no replay until the next probe is due
        p = planner.plan()
        assert p == ReplayPlan()
        planner.observe_step([StepObservation([], [])])
    second = planner.plan()
    assert second.probe == first.probe  # the same validation slices each time
    correct = np.asarray(second.probe) >= 100  # task 0 forgot everything, task 1 nothing
    planner.observe_step(
        [StepObservation([], [], probe_ids=second.probe, probe_losses=np.zeros(8), probe_correct=correct)]
    )
    events = []
    for _ in range(4):
        events.append(planner.plan().replay)
        planner.observe_step([StepObservation([], [])])
    assert [len(e) for e in events] == [4, 4, 0, 0]  # `events` = 2 replay events
    assert all(i < 10 for e in events for i in e)  # drawn from task 0 only


def test_task_balanced_sampler_splits_draws_evenly():
    cfg = ReplayConfig()
    mem = MemoryState(cfg.mssr)
    mem.add(np.arange(0, 90), task=0, losses=np.zeros(90), now=0)  # task 0 dominates the pool
    mem.add(np.arange(100, 105), task=1, losses=np.zeros(5), now=0)
    mem.add(np.arange(200, 205), task=2, losses=np.zeros(5), now=0)
    rng = np.random.default_rng(0)
    for inner in (UniformSampler(), StrengthSampler(cfg.mssr)):
        draws = [TaskBalancedSampler(inner).sample(mem, 10, 6, rng) for _ in range(50)]
        assert all(len(set(d)) == 6 for d in draws)
        assert all(np.bincount(np.asarray(d) // 100, minlength=3).tolist() == [2, 2, 2] for d in draws)


def test_update_norm_clock_runs_slower_when_the_model_moves_less():
    clock = UpdateNormClock(calibration_steps=4)
    for _ in range(4):
        clock.tick(0.02)
    assert clock.time == pytest.approx(4.0)
    for _ in range(10):
        clock.tick(0.005)  # a quarter of the calibrated step
    assert clock.time == pytest.approx(6.5)
    steps = StepClock()
    steps.tick(123.0)
    assert steps.time == 1.0


def test_model_time_stretches_the_schedule():
    def events(norm_after_calibration):
        planner = ReplayPlanner(
            ReplayConfig(strategy="fixed", fixed={"interval": 4}, clock="update_norm", clock_calibration_steps=4),
            seed=0,
        )
        planner.memory.add(np.arange(10), task=0, losses=np.zeros(10), now=0)
        planner.start_task(1)
        n = 0
        for t in range(40):
            n += bool(planner.plan().replay)
            planner.observe_step([StepObservation([], [], update_norm=1.0 if t < 4 else norm_after_calibration)])
        return n

    # every 4 steps (at 4, 8, ..., 36); at half the calibrated update norm every 8 steps after
    # the first (4, 12, ..., 36)
    assert events(1.0) == 9 and events(0.5) == 5


def test_user_sampler_and_scheduler_by_import_path():
    s = build_strategy(
        "fixed", ReplayConfig(scheduler="tests.user_strategy:EveryStep", sampler="mssr.samplers:StrengthSampler")
    )
    assert type(s.scheduler).__name__ == "EveryStep" and isinstance(s.sampler, StrengthSampler)
    with pytest.raises(ConfigError, match="did you mean 'strength'"):
        build_strategy("fixed", ReplayConfig(sampler="strenght"))


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


def test_large_pool_sampling_follows_the_weights():
    """The successive sampler used from LARGE_POOL samples on: unique draws, in proportion to weight."""
    from mssr.samplers import LARGE_POOL, weighted_without_replacement

    rng = np.random.default_rng(0)
    weights = np.ones(2 * LARGE_POOL + 100)
    weights[:100] = 50.0  # 100 heavy positions hold 5000 / (5000 + 8292) of the weight
    picks = np.concatenate([weighted_without_replacement(weights, 8, rng) for _ in range(400)])
    assert all(np.unique(picks[i : i + 8]).size == 8 for i in range(0, picks.size, 8))
    heavy = np.mean(picks < 100)
    assert 0.30 < heavy < 0.42  # successive draws of 8: slightly under the 0.376 single-draw share
    all_heavy = weighted_without_replacement(np.r_[np.full(10, 1e9), np.ones(LARGE_POOL)], 12, rng)
    assert set(range(10)) <= set(all_heavy.tolist()) and np.unique(all_heavy).size == 12

    cfg = ReplayConfig()
    mem = MemoryState(cfg.mssr)
    n = 2 * LARGE_POOL
    mem.add(np.arange(n), task=0, losses=np.full(n, 0.5), now=0)
    mem.update(np.arange(n // 2), np.full(n // 2, 0.1), now=80)  # first half fresh, second half decayed
    picks = np.concatenate([StrengthSampler(cfg.mssr).sample(mem, 80, 4, rng) for _ in range(200)])
    assert np.mean(picks >= n // 2) > 0.9


def test_rejection_draws_follow_successive_sampling():
    """draw_by_rejection gives the distribution of Gumbel-top-k (successive sampling): the
    first pick in proportion to weight, the second among the rest."""
    from mssr.samplers import _gumbel_top_k, draw_by_rejection

    weights = np.array([1.0, 2.0, 3.0, 4.0])
    rng = np.random.default_rng(1)
    firsts, pairs = np.zeros(4), {}
    for _ in range(20000):
        a, b = draw_by_rejection(lambda pos: weights[pos], 4, 2, 4.0, rng)
        firsts[a] += 1
        pairs[(a, b)] = pairs.get((a, b), 0) + 1
    assert np.allclose(firsts / firsts.sum(), weights / weights.sum(), atol=0.01)
    exact_3_then_2 = 4 / 10 * 3 / 6  # P(first = 3, second = 2)
    assert abs(pairs[(3, 2)] / 20000 - exact_3_then_2) < 0.01
    gumbel = [tuple(_gumbel_top_k(weights, 2, rng).tolist()) for _ in range(20000)]
    assert abs(gumbel.count((3, 2)) / 20000 - exact_3_then_2) < 0.01


def test_strength_sampler_on_a_large_pool_touches_only_its_proposals():
    """From LARGE_POOL on, the strength sampler rejects under the weight bound 1 + epsilon: the
    same preference as the exact small-pool draw, and rarely a full pass (all fresh, epsilon 0)."""
    from mssr.samplers import LARGE_POOL

    cfg = ReplayConfig()
    n = 4 * LARGE_POOL
    mem = MemoryState(cfg.mssr)
    mem.add(np.arange(n), task=0, losses=np.full(n, 0.5), now=0)
    mem.update(np.arange(n // 4), np.full(n // 4, 0.1), now=300)  # a quarter fresh, the rest decayed
    rng = np.random.default_rng(0)
    sampler = StrengthSampler(cfg.mssr)
    picks = np.concatenate([sampler.sample(mem, 300, 8, rng) for _ in range(300)])
    w = sampler.weights(mem, 300)
    expected_fresh = w[: n // 4].sum() / w.sum()
    assert abs(np.mean(picks < n // 4) - expected_fresh) < 0.03
    fresh = MemoryState(cfg.mssr)
    fresh.add(np.arange(n), task=0, losses=np.full(n, 0.5), now=0)
    eps0 = StrengthSampler(cfg.mssr.model_copy(update={"epsilon": 0.0}))
    ids = eps0.sample(fresh, 0, 8, rng)  # every weight 1e-12: rejection gives up, the full pass draws
    assert np.unique(ids).size == 8


def test_mean_retention_of_a_huge_pool_is_estimated_closely():
    from mssr.memory import EXACT_MEAN_LIMIT

    cfg = ReplayConfig()
    n = EXACT_MEAN_LIMIT + 12345
    rng = np.random.default_rng(0)
    mem = MemoryState(cfg.mssr)
    mem.add(np.arange(n), task=0, losses=rng.gamma(2.0, 0.3, size=n), now=0)
    mem.update(np.sort(rng.choice(n, n // 3, replace=False)), rng.gamma(2.0, 0.1, size=n // 3), now=60)
    exact = float(mem.retention(120).mean())
    assert 0.05 < exact < 0.95 and abs(mem.mean_retention(120) - exact) < 0.005


def test_mssr_splits_its_draws_over_tasks_unless_the_config_says_otherwise():
    def parts(name, **cfg):
        s = build_strategy(name, ReplayConfig(**cfg))
        inner = s.sampler.inner if isinstance(s.sampler, TaskBalancedSampler) else None
        return type(s.sampler).__name__, type(inner).__name__, type(s.scheduler).__name__

    assert parts("mssr") == ("ExcessSampler", "NoneType", "ExcessPacedScheduler")
    assert parts("mssr-strength") == ("TaskBalancedSampler", "StrengthSampler", "PacedScheduler")
    assert parts("mssr-sampler") == ("TaskBalancedSampler", "StrengthSampler", "FixedIntervalScheduler")
    assert parts("mssr-scheduler") == ("UniformSampler", "NoneType", "PacedScheduler")
    assert parts("mssr-expanding") == ("StrengthSampler", "NoneType", "AdaptiveScheduler")
    assert parts("mssr-strength", balance_tasks=False)[0] == "StrengthSampler"
    assert parts("observed-loss") == ("ExcessSampler", "NoneType", "FixedIntervalScheduler")
    assert parts("fixed") == ("UniformSampler", "NoneType", "FixedIntervalScheduler")
    assert parts("fixed", balance_tasks=True)[:2] == ("TaskBalancedSampler", "UniformSampler")


def test_the_surprise_sampler_replays_the_highest_losses_first():
    from mssr.samplers import SurpriseSampler

    mem = MemoryState(ReplayConfig().mssr)
    losses = np.array([0.1, 2.0, 0.5, 3.0, 0.2, 1.0, 0.3, 0.4])
    mem.add(np.arange(8), task=0, losses=losses, now=0)
    sampler = SurpriseSampler()
    assert sampler.sample(mem, 5, 3, np.random.default_rng(0)).tolist() == [1, 3, 5]  # losses 3.0, 2.0, 1.0
    # after a replay lowers their losses, the next draw moves on to the next most surprising
    mem.update(np.array([1, 3, 5]), losses=np.array([0.05, 0.05, 0.05]), now=5)
    assert sampler.sample(mem, 6, 2, np.random.default_rng(0)).tolist() == [2, 7]  # 0.5, 0.4
    # equal losses: ties broken at random, all reachable
    flat = MemoryState(ReplayConfig().mssr)
    flat.add(np.arange(6), task=0, losses=np.ones(6), now=0)
    seen = {int(i) for seed in range(30) for i in sampler.sample(flat, 1, 1, np.random.default_rng(seed))}
    assert seen == set(range(6))
    assert build_strategy("surprise", ReplayConfig()).sampler.__class__ is SurpriseSampler


@pytest.mark.parametrize("budget", [6, 10, 0.05, 0.2])
def test_the_paced_schedule_spends_its_budget_and_never_more(budget):
    cfg = ReplayConfig(strategy="mssr", budget=budget, pool_per_task=16, samples_per_event=4)
    planner = ReplayPlanner(cfg, seed=0, total_new_samples=3 * 40 * 4, replay_steps=2 * 40)
    plans = simulate(planner, tasks=3, steps=40, batch=4)
    cap = budget if isinstance(budget, int) else int(budget * 3 * 40 * 4)
    assert replayed(plans) == cap  # all of it, not one sample more
    events = [i for i, p in enumerate(plans) if p.replay]
    assert events[0] >= 40 and events[-1] >= 80  # none before the pool exists; still replaying in the last task


def test_the_paced_schedule_replays_more_when_more_is_forgotten():
    """Steps whose predicted forgotten fraction runs above its mean so far earn events faster.
    As in a run, the pool's forgetting rises through each task (interference accumulates) and
    drops when the task's fresh samples join: the events lean towards the end of each task."""

    class Pool:  # only what the scheduler reads of the memory
        forgotten = 0.0

        def mean_retention(self, now):
            return 1.0 - self.forgotten

    sched = PacedScheduler(ReplayConfig())
    sched.on_budget(budget=96, samples_per_event=4, replay_steps=100)
    pool, events = Pool(), []
    for t in range(100):
        pool.forgotten = 0.1 + 0.6 * (t % 25) / 24  # four tasks of 25 steps
        if sched.is_due(t, pool):
            sched.on_replay(t)
            events.append(t)
    assert len(events) == 24  # the budget's 96 samples, 4 per event
    later = [t % 25 for t in events if t >= 25]  # after the first task has set the mean
    assert sum(i >= 12 for i in later) > 1.5 * sum(i < 12 for i in later)


def test_the_paced_schedule_keeps_budget_for_the_last_task_when_forgetting_trends_up():
    """As the pool ages its forgotten fraction rises over the whole stream, so it runs above
    its mean so far nearly always: the spend must still stay close to even over the tasks
    (never more than PACE_LEAD events ahead), leaving the last task its share."""
    from mssr.schedulers import PACE_LEAD

    class Pool:
        forgotten = 0.0

        def mean_retention(self, now):
            return 1.0 - self.forgotten

    sched = PacedScheduler(ReplayConfig())
    sched.on_budget(budget=80, samples_per_event=4, replay_steps=100)  # 20 events over 4 tasks of 25 steps
    pool, events = Pool(), []
    for t in range(100):
        pool.forgotten = 0.05 + 0.8 * t / 99 + 0.1 * (t % 25) / 24  # the trend, and the rise within each task
        if sched.is_due(t, pool):
            sched.on_replay(t)
            events.append(t)
        assert len(events) <= 20 * (t + 1) / 100 + PACE_LEAD
    per_task = [sum(t // 25 == k for t in events) for k in range(4)]
    assert sum(per_task) == 20 and min(per_task) >= 4, per_task


def test_the_paced_schedule_without_a_budget_replays_at_the_default_rate():
    planner = ReplayPlanner(ReplayConfig(strategy="mssr", pool_per_task=16), seed=0)
    plans = simulate(planner, tasks=3, steps=40, batch=4)
    n = sum(bool(p.replay) for p in plans)
    assert abs(n - 80 / DEFAULT_FIXED_INTERVAL) <= 6  # 80 steps with a pool, about one event in four


def test_the_at_risk_sampler_favours_the_fresh_unrehearsed_task_over_the_long_forgotten_one():
    """Task 0 entered long ago and is mostly forgotten; task 1 just entered (R = 1) with the
    initial strength: the strength sampler draws task 0, the at-risk sampler task 1, whose
    retention falls the most over the horizon."""
    from mssr.samplers import AtRiskSampler

    cfg = ReplayConfig(strategy="mssr-strength", sampler="at-risk", mssr={"horizon": 8})
    mem = MemoryState(cfg.mssr)
    mem.add(np.arange(50), task=0, losses=np.full(50, 0.5), now=0)
    mem.add(np.arange(50, 100), task=1, losses=np.full(50, 0.5), now=200)
    at_risk, strength = AtRiskSampler(cfg.mssr), StrengthSampler(cfg.mssr)
    w = at_risk.weights(mem, 200)
    r_now, r_ahead = mem.retention(200), mem.retention(208)
    d = r_now - r_ahead
    assert np.allclose(w, (d / d.max()) ** cfg.mssr.kappa + cfg.mssr.epsilon)
    rng = np.random.default_rng(0)
    fresh_share = np.mean(np.concatenate([at_risk.sample(mem, 200, 4, rng) for _ in range(300)]) >= 50)
    strength_share = np.mean(np.concatenate([strength.sample(mem, 200, 4, rng) for _ in range(300)]) >= 50)
    assert fresh_share > 0.9 and strength_share < 0.1
    planner = ReplayPlanner(cfg, seed=0)
    assert isinstance(planner.strategy.sampler.inner, AtRiskSampler)  # by name, inside mssr's split over tasks


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
