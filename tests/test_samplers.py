"""The samplers (mssr/samplers.py): what each draws from the pool, its weights on small and
huge pools, and draws without replacement."""

import numpy as np

from mssr.config import ReplayConfig
from mssr.memory import MemoryState
from mssr.replay import ReplayPlanner
from mssr.samplers import StrengthSampler, TaskBalancedSampler, UniformSampler
from mssr.strategies import build_strategy


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
