"""The schedulers (mssr/schedulers.py): when each replays, what it probes, and how the paced
schedule spends its budget."""

import numpy as np
import pytest

from mssr.config import ReplayConfig
from mssr.memory import MemoryState
from mssr.replay import ReplayPlan, ReplayPlanner, StepObservation
from mssr.schedulers import (
    DEFAULT_FIXED_INTERVAL,
    AdaptiveScheduler,
    FixedIntervalScheduler,
    LossTriggerScheduler,
    PacedScheduler,
)
from tests.planner_sim import replayed, simulate


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


@pytest.mark.parametrize("floor", [0.0, 0.25])
def test_the_paced_schedule_keeps_replaying_at_its_floor_when_it_predicts_no_forgetting(floor):
    """A signal that only replays can measure (the excess loss a forgetting model fits to
    them) can predict none: without a floor the schedule then never replays again, so never
    sees forgetting return; with one it keeps a share of the even pace."""

    class Pool:
        forgotten = 0.0

        def mean_retention(self, now):
            return 1.0 - self.forgotten

    sched = PacedScheduler(ReplayConfig(mssr={"pace_floor": floor}))
    sched.on_budget(budget=80, samples_per_event=4, replay_steps=100)  # 20 events
    pool, events = Pool(), []
    for t in range(100):
        pool.forgotten = 0.3 if t < 10 else 0.0  # forgetting seen early, then predicted nil
        if sched.is_due(t, pool):
            sched.on_replay(t)
            events.append(t)
    # the budget is spent all the same: once the events left are as many as the steps left,
    # every step replays (the catch-up, a run of consecutive steps to the end)
    assert len(events) == 20
    catch_up = 0
    while catch_up < len(events) and events[-1 - catch_up] == 99 - catch_up:
        catch_up += 1
    paced = [t for t in events[: len(events) - catch_up] if t >= 20]
    if floor == 0:
        assert paced == [], events  # starved until only the catch-up could spend the budget
    else:
        assert len(paced) >= 0.25 * 20 * 80 / 100 * 0.8, events  # about a quarter of an even spend
