import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mssr.config import MSSRConfig, ReplayConfig
from mssr.memory import MemoryState


def make(n=8, loss=0.5, now=0.0, **params):
    mem = MemoryState(MSSRConfig(**params))
    mem.add(np.arange(n) + 100, task=0, losses=np.full(n, loss), now=now)
    return mem


@settings(max_examples=50, deadline=None)
@given(
    losses=st.lists(st.floats(0.0, 20.0), min_size=1, max_size=30), t1=st.floats(0.0, 500.0), dt=st.floats(0.0, 500.0)
)
def test_retention_in_unit_interval_and_non_increasing(losses, t1, dt):
    mem = MemoryState(MSSRConfig())
    mem.add(np.arange(len(losses)), task=0, losses=losses, now=0.0)
    r1, r2 = mem.retention(t1), mem.retention(t1 + dt)
    assert np.all(r1 > 0) and np.all(r1 <= 1) and np.all(r2 <= r1)


def test_well_learned_samples_start_stronger():
    mem = MemoryState(MSSRConfig(decay=0.02))
    mem.add([1, 2], task=0, losses=[0.1, 3.0], now=0)
    assert mem.strength[0] > mem.strength[1]
    assert mem.strength[0] == pytest.approx(50.0 / (1 + 0.1))  # S0 = 1/decay = 50


def test_recalled_replay_grows_strength_failed_replay_shrinks_it():
    mem = make()
    before = mem.strength.copy()
    mem.update([100, 101], losses=[0.1, 5.0], now=30.0)  # 100 recalled, 101 failed
    assert mem.strength[0] > before[0]
    assert mem.strength[1] == pytest.approx(max(1.0, 0.5 * before[1]))
    assert mem.tau[0] == mem.tau[1] == 30.0 and mem.tau[2] == 0.0
    assert mem.retention(30.0)[0] == pytest.approx(1.0)


def test_spacing_effect_rewards_reviewing_later():
    early, late = make(), make()
    early.update([100], [0.1], now=2.0)
    late.update([100], [0.1], now=60.0)
    assert late.strength[0] > early.strength[0]


def test_unknown_ids_and_duplicates_are_rejected():
    mem = make()
    with pytest.raises(KeyError):
        mem.update([5], [0.1], now=1.0)
    with pytest.raises(ValueError):
        mem.add([100], task=1, losses=[0.1], now=1.0)


def test_state_roundtrip_is_exact():
    mem = make(n=5)
    mem.update([101], [0.2], now=7.0)
    other = MemoryState(MSSRConfig())
    other.load_state_dict(mem.state_dict())
    for k, v in mem.state_dict().items():
        np.testing.assert_array_equal(v, other.state_dict()[k])


def test_tasks_are_found_as_slices_and_views_match_copies():
    params = MSSRConfig()
    mem = MemoryState(params)
    for k in range(3):
        mem.add(np.arange(k * 100, k * 100 + 10 + k), task=k, losses=np.full(10 + k, 0.5), now=k)
    assert mem.tasks() == {0: (0, 10), 1: (10, 21), 2: (21, 33)}
    view, copy = mem.of_tasks([1]), mem.subset(mem.task == 1)
    assert all(np.array_equal(getattr(view, f), getattr(copy, f), equal_nan=True) for f in MemoryState.ARRAYS)
    both = mem.of_tasks([0, 2])
    assert sorted(set(both.task.tolist())) == [0, 2] and len(both) == 22
    mixed = MemoryState(params)  # a task whose ids fall between another's: no slices, same samples
    mixed.add(np.array([1, 5]), task=0, losses=[0.1, 0.1], now=0)
    mixed.add(np.array([3]), task=1, losses=[0.1], now=0)
    assert mixed.tasks() == {} and mixed.of_tasks([0]).ids.tolist() == [1, 5]


def test_recall_relative_to_the_entry_loss_means_the_same_rise_on_every_task():
    mem = MemoryState(MSSRConfig(recall_margin=0.2))
    mem.add([1], task=0, losses=[0.05], now=0)  # a task learned to a low loss
    mem.add([2], task=1, losses=[2.0], now=0)  # a hard task, learned to a high loss
    before = mem.strength.copy()
    mem.update([1, 2], losses=[0.4, 2.1], now=30.0)  # 1 rose 0.35 (forgotten), 2 rose 0.1 (recalled)
    assert mem.strength[0] == pytest.approx(max(1.0, 0.5 * before[0]))
    assert mem.strength[1] > before[1]
    absolute = MemoryState(MSSRConfig(recall_margin=None))  # recall_loss 0.5: the opposite verdicts
    absolute.add([1], task=0, losses=[0.05], now=0)
    absolute.add([2], task=1, losses=[2.0], now=0)
    kept = absolute.strength.copy()
    absolute.update([1, 2], losses=[0.4, 2.1], now=30.0)
    assert absolute.strength[0] > kept[0] and absolute.strength[1] < kept[1]


def test_entry_losses_given_apart_from_the_last_losses():
    mem = MemoryState(MSSRConfig(decay=0.02))
    mem.add([1, 2], task=0, losses=[3.0, 0.2], now=0, entry_losses=0.5)
    assert mem.loss.tolist() == [3.0, 0.2]  # what the surprise sampler ranks by
    assert mem.entry_loss.tolist() == [0.5, 0.5]
    assert mem.strength[0] == mem.strength[1] == pytest.approx(50.0 / 1.5)


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
