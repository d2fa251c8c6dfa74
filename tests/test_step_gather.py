"""Rank 0 gathers every rank's step observation (mssr.step_gather): exact round trip,
uneven shares, and a real two-process gather over gloo."""

import pickle

import numpy as np
import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from mssr.replay import ReplayPlan, StepObservation
from mssr.step_gather import gather_step, pack, unpack

PLAN = ReplayPlan(replay=[101, 102, 103], probe=[7, 8, 9, 10, 11])  # 3 replayed, 5 probed over 2 ranks


def observation(rank: int, world: int = 2, n_new: int = 4) -> StepObservation:
    rng = np.random.default_rng(rank)
    replay, probe = PLAN.share(rank, world)
    return StepObservation(
        new_ids=[10**12 + 1000 * rank + i for i in range(n_new)],
        new_losses=rng.random(n_new).astype(np.float32),
        replay_ids=replay,
        replay_losses=rng.random(len(replay)).astype(np.float32),
        probe_ids=probe,
        probe_losses=rng.random(len(probe)).tolist(),
        probe_correct=[i % 2 == 0 for i in probe],
        update_norm=0.5 if rank == 0 else 0.0,
    )


def assert_same(got: StepObservation, want: StepObservation) -> None:
    for field in ("new_ids", "new_losses", "replay_ids", "replay_losses", "probe_ids", "probe_losses", "probe_correct"):
        np.testing.assert_array_equal(
            np.asarray(getattr(got, field), dtype=np.float64),
            np.asarray(getattr(want, field), dtype=np.float64),
            err_msg=field,
        )
    assert got.update_norm == want.update_norm


def test_pack_unpack_is_exact_with_uneven_shares():
    # rank 0 has 4 new rows, 2 replayed, 3 probed; rank 1 a short last batch: 2 new, 1 replayed, 2 probed
    obs = [observation(0), observation(1, n_new=2)]
    rows = np.stack([pack(o, PLAN, world=2, capacity=4) for o in obs])
    assert rows.shape[1] == 1 + 4 + 4 + 2 + 3 + 3  # n_new, ids, losses, replay, probe losses and correct
    back = unpack(rows, PLAN, world=2, capacity=4, update_norm=0.5)
    for got, want in zip(back, obs):
        assert_same(got, want)
    assert back[0].new_ids.dtype == np.int64 and back[0].probe_correct.dtype == bool


def test_pack_rejects_more_rows_than_the_batch_and_ids_beyond_float64():
    with pytest.raises(ValueError, match="more than the per-rank batch"):
        pack(observation(0, n_new=5), PLAN, world=2, capacity=4)
    big = StepObservation(new_ids=[2**53], new_losses=[1.0])
    with pytest.raises(ValueError, match="too large"):
        pack(big, ReplayPlan(), world=1, capacity=1)


def test_without_a_process_group_the_one_rank_gets_its_own_observation_back():
    obs = observation(0, world=1)
    (got,) = gather_step(obs, PLAN, rank=0, world=1, capacity=4)
    assert_same(got, obs)


def _gather_worker(rank: int, world: int, init_file: str, out_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        got = gather_step(observation(rank, n_new=4 - rank), PLAN, rank, world, 4)
        if rank == 0:
            with open(out_file, "wb") as f:
                pickle.dump(got, f)
        else:
            assert got is None
    finally:
        dist.destroy_process_group()


def test_rank_0_gathers_every_rank_in_rank_order(tmp_path):
    out = tmp_path / "gathered.pkl"
    mp.spawn(_gather_worker, args=(2, str(tmp_path / "init"), str(out)), nprocs=2, join=True)
    got = pickle.loads(out.read_bytes())
    assert len(got) == 2
    assert_same(got[0], observation(0, n_new=4))
    assert_same(got[1], observation(1, n_new=3))
