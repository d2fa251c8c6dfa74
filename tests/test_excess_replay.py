"""MSSR's replay from excess loss: reference losses, excess observations, forecasts, the
allocation of draws over tasks (proportional, floor, cap) and the paced schedule on it."""

import numpy as np
import pytest

from mssr.config import ReplayConfig
from mssr.errors import ConfigError
from mssr.forgetting import forecast
from mssr.memory import MemoryState
from mssr.replay import ReplayPlanner
from mssr.samplers import ExcessSampler, allocate_shares, counts_from_shares
from mssr.schedulers import ExcessPacedScheduler
from mssr.strategies import build_strategy, reference_pass
from tests.planner_sim import EXCESS_RATES, simulate


def pool(tasks=3, per_task=8, params=None) -> MemoryState:
    """``tasks`` tasks of ``per_task`` samples, task k ending at step 10 k, references 0.5."""
    mem = MemoryState(params or ReplayConfig().mssr)
    for k in range(tasks):
        ids = np.arange(k * 100, k * 100 + per_task)
        mem.add(ids, task=k, losses=np.full(per_task, 0.4), now=10.0 * k)
        mem.set_reference(ids, np.full(per_task, 0.5))
    return mem


def test_a_replay_of_referenced_samples_adds_one_excess_observation_per_task():
    mem = pool()
    mem.update([0, 1, 100], losses=[0.9, 0.7, 0.6], now=30.0)
    assert mem.history() == [(30.0, 0, 0.0, pytest.approx(0.3)), (30.0, 1, 10.0, pytest.approx(0.1))]
    unreferenced = MemoryState(ReplayConfig().mssr)
    unreferenced.add([1, 2], task=0, losses=[0.4, 0.4], now=0.0)
    unreferenced.update([1], losses=[0.9], now=5.0)
    assert unreferenced.history() == []  # no reference, nothing to measure the excess against
    one_task = mem.of_tasks([1])
    assert one_task.history() == [(30.0, 1, 10.0, pytest.approx(0.1))]  # a view keeps its task's observations
    mem.update([2, 101], losses=[float("nan"), 0.8], now=35.0)  # a non-finite loss is no observation
    assert [h[1] for h in mem.history()] == [0, 1, 1] and np.isfinite([h[3] for h in mem.history()]).all()


def test_the_excess_observations_survive_a_state_round_trip_and_older_states_load():
    mem = pool()
    mem.update([0, 100], losses=[0.9, 0.6], now=30.0)
    again = MemoryState(mem.p)
    again.load_state_dict(mem.state_dict())
    assert again.history() == mem.history()
    old = {k: v for k, v in mem.state_dict().items() if k in ("ids", "task", "tau", "strength", "loss", "entry_loss")}
    legacy = MemoryState(mem.p)
    legacy.load_state_dict(old)
    assert np.isnan(legacy.reference).all() and legacy.history() == [] and len(legacy) == len(mem)


def test_shares_follow_the_predicted_excess_above_the_floor_and_below_the_cap():
    shares = allocate_shares(np.array([0.1, 0.3, 0.6]), floor=0.0, cap=1.0)
    assert shares == pytest.approx([0.1, 0.3, 0.6])
    floored = allocate_shares(np.array([0.0, 0.0, 1.0]), floor=0.3, cap=1.0)
    assert floored == pytest.approx([0.1, 0.1, 0.8])  # every task keeps floor / tasks
    capped = allocate_shares(np.array([0.0, 0.1, 0.9]), floor=0.2, cap=0.5)
    assert capped.max() == pytest.approx(0.5) and capped.sum() == pytest.approx(1.0)
    assert capped[1] > capped[0] >= 0.2 / 3  # what the cap took goes to the others, in their proportion
    assert allocate_shares(np.array([-1.0, 0.0]), floor=0.0, cap=1.0) == pytest.approx([0.5, 0.5])
    assert allocate_shares(np.ones(4), floor=0.0, cap=0.1) == pytest.approx([0.25] * 4)  # a cap below 1/tasks


@pytest.mark.parametrize("n", [1, 4, 7])
def test_counts_are_the_shares_rounded_and_sum_to_the_draw(n):
    shares = np.array([0.05, 0.15, 0.3, 0.5])
    rng = np.random.default_rng(0)
    counts = np.array([counts_from_shares(shares, n, rng) for _ in range(4000)])
    assert (counts.sum(axis=1) == n).all()
    assert (counts >= np.floor(n * shares)).all() and (counts <= np.ceil(n * shares)).all()
    assert counts.mean(axis=0) == pytest.approx(n * shares, abs=0.05)


def test_the_excess_sampler_draws_from_the_task_forgetting_most_and_cycles_within_it():
    params = ReplayConfig(mssr={"floor": 0.2, "cap": 0.5}).mssr
    mem = pool(params=params)
    for step in (30.0, 40.0):  # task 2 forgets fastest, task 0 barely
        mem.update([0, 100, 200], losses=[0.55, 0.7, 0.5 + 0.1 * (step - 20)], now=step)
    sampler, rng = ExcessSampler(params), np.random.default_rng(0)
    tasks, shares = sampler.shares(mem, 50.0)
    assert tasks == [0, 1, 2] and shares[2] == pytest.approx(0.5) and shares[2] > shares[1] > shares[0]
    drawn = [sampler.sample(mem, 50.0, 4, rng) for _ in range(200)]
    per_task = np.bincount(np.concatenate(drawn) // 100, minlength=3) / (4 * 200)
    assert per_task == pytest.approx(shares, abs=0.03)
    # within a task, the least recently trained first: 0, 100 and 200 were just replayed
    first = sampler.sample(mem, 50.0, 4, np.random.default_rng(1))
    assert not set(first.tolist()) & {0, 100, 200}


def test_the_forecast_of_the_rehearsal_model_ranks_the_simulated_rates():
    """Replays of a synthetic stream whose tasks forget at known rates: mssr's forecast ranks
    the tasks by their rates, and its draws lean towards the fastest-forgetting task."""
    cfg = ReplayConfig(strategy="mssr", budget=0.2, pool_per_task=16, samples_per_event=4)
    planner = ReplayPlanner(cfg, seed=0, total_new_samples=6 * 40 * 4, replay_steps=5 * 40)
    plans = simulate(planner, tasks=6, steps=40, batch=4)
    predicted = forecast("rehearsal", planner.memory, planner.now)
    slow, middle, fast = ([k for k in range(5) if EXCESS_RATES[k % 3] == r] for r in sorted(set(EXCESS_RATES)))
    assert max(predicted[k] for k in slow) < min(predicted[k] for k in middle)  # tasks 0 and 3, then 2
    assert max(predicted[k] for k in middle) < min(predicted[k] for k in fast)  # then 1 and 4
    # from the fifth task on: with two or three tasks pooled, the cap (half a draw) keeps the split near even
    drawn = np.concatenate([p.replay for p in plans[160:] if p.replay]) // 1000
    assert np.isin(drawn, fast).mean() > 2 * np.isin(drawn, slow).mean()


def test_the_excess_schedule_has_no_signal_before_a_replay_observed_one():
    cfg = ReplayConfig(strategy="mssr")
    sched = ExcessPacedScheduler(cfg)
    mem = pool()
    assert sched.signal(40.0, mem) is None
    mem.update([0, 100], losses=[0.9, 0.6], now=30.0)
    assert sched.signal(40.0, mem) > 0


def test_a_task_predicted_below_its_reference_does_not_cancel_another_tasks_forgetting():
    """Task 0's replays fall below its reference (later tasks helped it), task 1's rise above:
    the schedule's signal is the mean of the predictions clipped at zero, not zero."""
    sched, mem = ExcessPacedScheduler(ReplayConfig(strategy="mssr")), pool(tasks=2)
    for t in range(20, 80, 5):
        mem.update([0, 100], losses=[0.5 - 0.004 * t, 0.5 + 0.003 * t], now=float(t))
    predicted = forecast("rehearsal", mem, 90.0)
    assert predicted[0] < 0 < predicted[1] and predicted[0] + predicted[1] < 0
    assert sched.signal(90.0, mem) == pytest.approx(predicted[1] / 2)


def test_the_reference_pass_runs_where_the_strategy_reads_it_unless_configured():
    assert build_strategy("mssr", ReplayConfig()).needs_reference

    def measured(**cfg) -> bool:
        replay = ReplayConfig(**cfg)
        return reference_pass(replay, build_strategy(replay.strategy, replay))

    assert measured(strategy="mssr") and measured(strategy="observed-loss")
    assert not measured(strategy="fixed")
    assert measured(strategy="fixed", reference_pass=True)
    with pytest.raises(ConfigError, match="replay.reference_pass: false, but strategy 'mssr'"):
        measured(strategy="mssr", reference_pass=False)  # it would replay blind
    assert measured(strategy="fixed", sampler="excess")  # the sampler reads it


def test_mir_replays_the_candidates_whose_loss_the_probed_update_raised():
    """Two probes of the same candidates a step apart, then the event: the picks are the
    candidates with the largest rise between the probes, not the highest loss."""
    from mssr.schedulers import LaggedMIRScheduler

    sched = LaggedMIRScheduler(ReplayConfig(fixed={"interval": 4}, mir={"candidates": 6}))
    mem, rng = pool(tasks=2, per_task=8), np.random.default_rng(0)
    assert sched.probe(20.0, mem, rng) is None and not sched.is_due(20.0, mem)  # the grid starts: due at 24
    first = sched.probe(22.0, mem, rng)
    assert first.size == 6
    before = np.linspace(2.0, 0.5, 6)  # the highest loss first
    rise = np.array([0.0, 0.1, 0.9, 0.0, 0.5, -0.2])
    sched.on_probe(22.0, first, before, np.zeros(6, bool), mem)
    assert sched.probe(23.0, mem, rng).tolist() == first.tolist()  # the same set, one update later
    sched.on_probe(23.0, first, before + rise, np.zeros(6, bool), mem)
    assert sched.probe(24.0, mem, rng) is None and sched.is_due(24.0, mem)
    assert sched.pick(2, mem).tolist() == sorted(first[[2, 4]].tolist())
    assert sched.pick(2, mem) is None  # used once


def test_mir_runs_in_the_planner_within_its_budget_and_probes_twice_per_event():
    cfg = ReplayConfig(strategy="mir", budget=0.1, pool_per_task=16, samples_per_event=4)
    planner = ReplayPlanner(cfg, seed=0, total_new_samples=3 * 40 * 4, replay_steps=2 * 40)
    plans = simulate(planner, tasks=3, steps=40, batch=4)
    events = [i for i, p in enumerate(plans) if p.replay]
    assert planner.replayed == 48 and len(events) == 12
    probed = [i for i, p in enumerate(plans) if p.probe]
    assert len(probed) == 2 * len(events) and all(e - 1 in probed and e - 2 in probed for e in events)


def test_mir_picks_its_candidates_when_events_are_two_steps_apart():
    """At an interval between two and three steps (2 samples an event at 10% on the long
    stream), the first probe for an event falls on the step of the event before: every event
    but the first replays candidates the two probes before it measured, none a plain draw."""
    cfg = ReplayConfig(strategy="mir", fixed={"interval": 2.25}, samples_per_event=2, pool_per_task=16)
    planner = ReplayPlanner(cfg, seed=0)
    plans = simulate(planner, tasks=3, steps=40, batch=4)
    events = [i for i, p in enumerate(plans) if p.replay]
    gaps = {b - a for a, b in zip(events, events[1:])}
    assert gaps == {2, 3} and len(events) > 30
    measured = [e for e in events[1:] if set(plans[e].replay) <= set(plans[e - 1].probe)]
    assert measured == events[1:]


def test_leitner_draws_among_the_due_so_a_backlog_does_not_starve_the_newest_tasks():
    """Under a budget the queue always has a backlog: every sample of four tasks is due. The
    draws reach every task, not only the oldest (which serving the longest overdue first did)."""
    from mssr.samplers import LeitnerSampler

    sampler, mem = LeitnerSampler(ReplayConfig().leitner), pool(tasks=4, per_task=8)  # tasks end at 0, 10, 20, 30
    rng = np.random.default_rng(0)
    drawn = np.concatenate([sampler.sample(mem, 100.0, 4, rng) for _ in range(100)]) // 100
    assert (np.bincount(drawn, minlength=4) / drawn.size > 0.15).all()


def test_leitner_boxes_move_up_on_recall_and_back_on_a_lapse():
    from mssr.samplers import LeitnerSampler

    cfg = ReplayConfig(leitner={"base_interval": 10.0, "recall_margin": 0.1})
    sampler, mem = LeitnerSampler(cfg.leitner), pool(tasks=1, per_task=4)  # references 0.5, entered at 0
    mem.update([0, 1], losses=[0.55, 0.9], now=10.0)
    sampler.on_replayed(10.0, np.array([0, 1]), np.array([0.55, 0.9]), mem)
    assert sampler.box == {0: 1, 1: 0}
    assert sampler.due_times(mem).tolist() == [30.0, 20.0, 10.0, 10.0]  # box 1 waits twice as long
    assert sorted(sampler.sample(mem, 12.0, 3, np.random.default_rng(0)).tolist()) == [1, 2, 3]
    again = LeitnerSampler(cfg.leitner)
    again.load_state_dict(sampler.state_dict())
    assert again.box == sampler.box


def test_sure_stores_each_tasks_most_surprising_samples():
    cfg = ReplayConfig(strategy="sure", pool_per_task=3)
    planner = ReplayPlanner(cfg, seed=0)
    planner.start_task(0)
    from mssr.replay import StepObservation

    planner.observe_step([StepObservation(new_ids=[0, 1, 2, 3], new_losses=[0.1, 2.0, 0.5, 1.5])])
    planner.observe_step([StepObservation(new_ids=[4, 5, 6, 7], new_losses=[0.2, 3.0, 0.3, 0.4])])
    assert planner.end_task(0) == [1, 3, 5]  # losses 2.0, 1.5, 3.0
    assert ReplayPlanner(ReplayConfig(strategy="sure", storage="reservoir"), seed=0).storage.__name__ == "Reservoir"


def test_a_reference_subset_is_seeded_by_run_and_task_and_the_rest_take_its_mean():
    from mssr.replay import reference_subset

    pool_ids = list(range(100, 132))
    chosen = reference_subset(pool_ids, 16, seed=0, task=3)
    assert len(chosen) == 16 and chosen == sorted(chosen) and set(chosen) <= set(pool_ids)
    assert chosen == reference_subset(list(reversed(pool_ids)), 16, seed=0, task=3)
    assert chosen != reference_subset(pool_ids, 16, seed=0, task=4)
    assert reference_subset(pool_ids[:8], 16, seed=0, task=3) == pool_ids[:8]
    cfg = ReplayConfig(strategy="mssr", pool_per_task=4)
    planner = ReplayPlanner(cfg, seed=0)
    planner.memory.add([1, 2, 3, 4], task=0, losses=[0.5] * 4, now=0.0)
    planner.memory.add([5, 6], task=1, losses=[0.5] * 2, now=9.0)
    planner.set_reference([1, 2], [0.2, 0.4])
    assert planner.memory.reference[:4] == pytest.approx([0.2, 0.4, 0.3, 0.3])
    assert np.isnan(planner.memory.reference[4:]).all()  # another task: untouched


def test_a_runs_diagnostics_say_how_well_its_forgetting_model_predicted_its_replays():
    from mssr.diagnostics import forgetting_fit, format_summary, summarise

    cfg = ReplayConfig(strategy="mssr", budget=0.2, pool_per_task=16, samples_per_event=4)
    planner = ReplayPlanner(cfg, seed=0, total_new_samples=5 * 40 * 4, replay_steps=4 * 40)
    simulate(planner, tasks=5, steps=40, batch=4)
    log = [r.to_json() for r in planner.replay_log]
    fit = forgetting_fit(log, "rehearsal")
    assert fit["n"] > 20 and fit["spearman"] > 0.5  # the simulated excess grows with age at per-task rates
    assert forgetting_fit([{**r, "reference_loss": float("nan")} for r in log], "rehearsal")["n"] == 0
    line = format_summary(summarise(log, [], [40] * 5, 160, "rehearsal"))
    assert "the rehearsal forgetting model predicted the excess loss" in line
