"""Replay samplers: which pool samples to replay. Registered by name in ``SAMPLERS``.

A sampler subclasses ``BaseSampler`` and writes ``__init__(self, params)`` and
``sample(memory, now, n, rng) -> np.ndarray`` of pool sample ids (without replacement).
``params`` is the ``replay.mssr`` section, or the section named by the class attribute
``config_section``. The base class supplies the rest of the protocol, each a no-op until a
sampler needs it: ``on_replayed(now, ids, losses, memory)``, told the losses of every
replay; ``state_dict``/``load_state_dict``, for a sampler that keeps state; and the class
attribute ``reads_reference = True``, which asks for the pooled samples' reference losses.

    sampler = SAMPLERS.get("strength")(cfg.replay.mssr)
    ids = sampler.sample(memory, now=120, n=4, rng=np.random.default_rng(0))
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from mssr.forgetting import forecast
from mssr.memory import MemoryState
from mssr.registry import Registry

SAMPLERS = Registry("sampler")


class BaseSampler:
    """The sampler protocol; every hook but ``sample`` is a no-op here."""

    config_section = "mssr"  # the replay config's section that __init__ receives
    reads_reference = False  # True: each finished task's pooled samples get a reference loss

    def sample(self, memory: MemoryState, now: float, n: int, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__}.sample")

    def on_replayed(self, now: float, ids: np.ndarray, losses: np.ndarray, memory: MemoryState) -> None:
        pass

    def state_dict(self) -> dict:
        return {}  # a stateless sampler: nothing in the checkpoint

    def load_state_dict(self, state: dict) -> None:
        pass


LARGE_POOL = 4096  # from this many samples on, rejection sampling beats one Gumbel number per sample
MAX_PROPOSALS = 1 << 17  # rejection's budget before it falls back to a full pass (a few ms)


def _gumbel_top_k(weights: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    keys = np.log(weights) + rng.gumbel(size=weights.size)
    top = np.argpartition(-keys, n - 1)[:n] if n < weights.size else np.arange(weights.size)
    return top[np.argsort(-keys[top], kind="stable")]


def draw_by_rejection(
    weight_of: Callable[[np.ndarray], np.ndarray],
    size: int,
    n: int,
    bound: float,
    rng: np.random.Generator,
    max_proposals: int = MAX_PROPOSALS,
) -> list[int]:
    """Up to ``n`` positions of ``range(size)`` without replacement, each with probability
    proportional to its weight among those not drawn yet (successive sampling, the same
    distribution as Gumbel-top-k), by rejection: propose a position uniformly, keep it with
    probability ``weight / bound`` (``bound`` >= every weight), skip repeats.

    ``weight_of(positions)`` is called on the proposals only, so a draw costs
    O(n * bound / mean weight), whatever ``size``. Stops after ``max_proposals`` proposals
    (weights far below the bound) and returns what it has, in draw order.
    """
    picked: dict[int, None] = {}  # an insertion-ordered set
    proposals, rate = 0, 0.5  # rate: the kept fraction, re-estimated each round
    while len(picked) < n and proposals < max_proposals:
        k = int(min(max_proposals - proposals, max(256, 2 * (n - len(picked)) / rate)))
        proposed = rng.integers(0, size, size=k)
        kept = proposed[rng.random(k) * bound < weight_of(proposed)]
        proposals += k
        rate = max(kept.size / k, 1e-4)
        for position in kept.tolist():
            picked.setdefault(position)
            if len(picked) == n:
                break
    return list(picked)


def _complete(picked: list[int], weights: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``picked`` followed by Gumbel-top-k over the positions not yet picked, up to ``n``."""
    need = n - len(picked)
    if need > 0:
        rest = weights.astype(np.float64)
        rest[picked] = 0.0
        remaining = np.flatnonzero(rest)
        picked = picked + remaining[_gumbel_top_k(rest[remaining], min(need, remaining.size), rng)].tolist()
    return np.asarray(picked, dtype=np.int64)


def draw_without_replacement(
    weight_of: Callable[[np.ndarray | None], np.ndarray], size: int, n: int, bound: float, rng: np.random.Generator
) -> np.ndarray:
    """Positions drawn without replacement with probability proportional to their weights;
    ``weight_of(positions)`` gives the weights of ``positions`` (of all with ``None``),
    ``bound`` is at least every weight.

    Small pools: Gumbel-top-k, one vectorised pass. Large pools (``LARGE_POOL`` samples or
    more): ``draw_by_rejection``; if a few positions hold nearly all the weight and proposals
    run out, the rest is drawn with Gumbel-top-k over the positions that remain. Both give
    the same distribution.
    """
    n = min(n, size)
    if size < LARGE_POOL:
        return _gumbel_top_k(weight_of(None), n, rng)
    picked = draw_by_rejection(weight_of, size, n, bound, rng)
    return np.asarray(picked, dtype=np.int64) if len(picked) == n else _complete(picked, weight_of(None), n, rng)


def weighted_without_replacement(weights: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``draw_without_replacement`` over an array of weights."""
    return draw_without_replacement(
        lambda pos: weights if pos is None else weights[pos], weights.size, n, float(weights.max()), rng
    )


@SAMPLERS.register("uniform")
class UniformSampler(BaseSampler):
    """Every pool sample equally likely (the baselines' sampler)."""

    def __init__(self, params=None):
        self.params = params

    def sample(self, memory: MemoryState, now: float, n: int, rng: np.random.Generator) -> np.ndarray:
        n = min(n, len(memory))
        return memory.ids[np.sort(rng.choice(len(memory), size=n, replace=False))] if n else memory.ids[:0]


@SAMPLERS.register("strength")
class StrengthSampler(BaseSampler):
    """Favour samples at risk: P(i) proportional to (1 - R_i(t))^kappa + epsilon."""

    def __init__(self, params):
        self.kappa = params.kappa
        self.epsilon = params.epsilon

    def sample(self, memory: MemoryState, now: float, n: int, rng: np.random.Generator) -> np.ndarray:
        if len(memory) == 0 or n <= 0:
            return memory.ids[:0]
        # every weight is at most 1 + epsilon: large pools reject under that bound, touching only the proposals
        positions = draw_without_replacement(
            lambda pos: self.weights(memory, now, pos), len(memory), n, 1.0 + self.epsilon, rng
        )
        return memory.ids[np.sort(positions)]

    def weights(self, memory: MemoryState, now: float, positions: np.ndarray | None = None) -> np.ndarray:
        """(1 - R)^kappa + epsilon of every sample, or of ``positions``."""
        r = memory.retention(now, positions)
        risk = np.square(1.0 - r) if self.kappa == 2 else np.power(1.0 - r, self.kappa)
        return np.maximum(risk + self.epsilon, 1e-12)  # epsilon = 0, R = 1: stay defined


@SAMPLERS.register("at-risk")
class AtRiskSampler(BaseSampler):
    """Favour the retention about to be lost: with d_i = R_i(t) - R_i(t + h), h = ``horizon``
    steps (about the time to the next replay event), P(i) proportional to
    (d_i / max_j d_j)^kappa + epsilon. The strength sampler's (1 - R)^kappa prefers what is
    already forgotten, so the task learned last, whose samples are fresh (R near 1), is rarely
    drawn although it is the one the next task overwrites first; never rehearsed, its samples
    have the lowest strength and lose the most retention over the next h steps. A sample long
    forgotten has little left to lose and is drawn less: this sampler spends replay where it
    can still save something. d is at most 1 - e^(-h/S), small for strong samples, so it is
    scaled by the pool's largest d (one pass over the pool per draw) to keep kappa and
    epsilon meaning what they mean for the strength sampler."""

    def __init__(self, params):
        self.kappa = params.kappa
        self.epsilon = params.epsilon
        self.horizon = params.horizon

    def sample(self, memory: MemoryState, now: float, n: int, rng: np.random.Generator) -> np.ndarray:
        if len(memory) == 0 or n <= 0:
            return memory.ids[:0]
        return memory.ids[np.sort(weighted_without_replacement(self.weights(memory, now), n, rng))]

    def weights(self, memory: MemoryState, now: float) -> np.ndarray:
        """(d / max d)^kappa + epsilon of every sample (uniform when nothing is left to lose)."""
        loss_ahead = memory.retention(now) - memory.retention(now + self.horizon)
        top = float(loss_ahead.max())
        if top <= 0:
            return np.ones(len(memory))
        risk = np.power(loss_ahead / top, self.kappa)
        return np.maximum(risk + self.epsilon, 1e-12)


@SAMPLERS.register("surprise")
class SurpriseSampler(BaseSampler):
    """Surprise-prioritised replay (after SuRe, arXiv 2511.22367): the pool samples with the
    highest loss when last seen (in their own task's training step, or their last replay),
    ties broken at random. A replayed sample's loss usually drops, so the picks rotate. No
    extra forward pass: the losses come from training steps."""

    def __init__(self, params=None):
        self.params = params

    def sample(self, memory: MemoryState, now: float, n: int, rng: np.random.Generator) -> np.ndarray:
        n = min(n, len(memory))
        if n <= 0:
            return memory.ids[:0]
        keys = memory.loss + 1e-9 * rng.random(len(memory))  # the jitter only orders equal losses
        top = np.argpartition(-keys, n - 1)[:n] if n < len(memory) else np.arange(len(memory))
        return memory.ids[np.sort(top)]


class TaskBalancedSampler(BaseSampler):
    """Wraps a sampler: split each draw evenly over the pool's tasks (the remainder goes to
    randomly chosen tasks), then let the wrapped sampler pick within each task.
    Used by mssr-strength and mssr-sampler, and by any strategy with ``replay.balance_tasks: true``."""

    def __init__(self, inner: BaseSampler):
        self.inner = inner
        self.reads_reference = inner.reads_reference

    # the wrapped sampler's hooks and state
    def on_replayed(self, now: float, ids: np.ndarray, losses: np.ndarray, memory: MemoryState) -> None:
        self.inner.on_replayed(now, ids, losses, memory)

    def state_dict(self) -> dict:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state)

    def sample(self, memory: MemoryState, now: float, n: int, rng: np.random.Generator) -> np.ndarray:
        bounds = memory.tasks()  # contiguous tasks (as in a run): no pass over the pool
        if bounds:
            tasks, sizes = np.array(list(bounds)), np.array([b - a for a, b in bounds.values()])
        else:
            tasks, sizes = np.unique(memory.task, return_counts=True)
        if tasks.size <= 1 or n <= 0:
            return self.inner.sample(memory, now, n, rng)
        share = np.full(tasks.size, n // tasks.size)
        share[rng.choice(tasks.size, size=n % tasks.size, replace=False)] += 1
        share = np.minimum(share, sizes)  # a task smaller than its share gives what it has
        picks = [self.inner.sample(memory.of_tasks([t]), now, int(k), rng) for t, k in zip(tasks, share) if k > 0]
        return np.sort(np.concatenate(picks)) if picks else memory.ids[:0]


def allocate_shares(predicted: np.ndarray, floor: float, cap: float) -> np.ndarray:
    """Each task's share of a draw: ``floor`` split evenly (every task keeps being observed),
    the rest in proportion to its predicted excess (negatives count as 0; evenly when every
    prediction is 0), no share above ``cap`` (at least 1 / tasks): what a capped share gives up
    goes to the others in proportion to their shares, until none is above."""
    k = predicted.size
    w = np.maximum(np.nan_to_num(np.asarray(predicted, dtype=np.float64)), 0.0)
    w = w / w.sum() if w.sum() > 0 else np.full(k, 1.0 / k)
    shares = floor / k + (1.0 - floor) * w
    cap = max(cap, 1.0 / k)
    for _ in range(k):  # each round caps at least one more task, or stops
        over = shares > cap + 1e-12
        if not over.any():
            break
        free = ~over & (shares < cap - 1e-12)
        spare = float((shares[over] - cap).sum())
        shares[over] = cap
        if not free.any():
            break
        shares[free] += spare * shares[free] / shares[free].sum()
    return shares


def counts_from_shares(shares: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` draws split by systematic sampling: task k gets floor(n * share_k) or one more,
    each in proportion to its share on average, and the counts sum to ``n``."""
    edges = np.floor(np.concatenate([[0.0], np.cumsum(n * shares)]) + rng.random())
    counts = np.diff(edges).astype(np.int64)
    counts[-1] += n - counts.sum()  # rounding of the cumulative sum: at most one draw
    return counts


@SAMPLERS.register("excess")
class ExcessSampler(BaseSampler):
    """MSSR's sampler: replay where forgetting is predicted, within bounds.

    Each draw is split over the pool's tasks by ``allocate_shares``: in proportion to each
    task's excess loss predicted now by the forgetting model (``mssr.forgetting``, fitted to
    what earlier replays observed, ``replay.mssr.forgetting_model``), with an exploration floor
    (``floor``: every task keeps being replayed, so its forgetting keeps being measured) and a
    cap on any one task's share (``cap``: a model that fixes on one task, as surprise replay's
    highest-loss picks do on the task learned last, cannot starve the rest). A rehearsal's
    benefit is what it removes of the excess, proportional to the excess itself in the
    rehearsal model, so the proportion to predicted excess is also the proportion to benefit.
    Within a task, the samples least recently trained go first (ties at random): a task's
    pool is cycled through before any sample repeats."""

    reads_reference = True

    def __init__(self, params):
        self.model, self.floor, self.cap = params.forgetting_model, params.floor, params.cap

    def shares(self, memory: MemoryState, now: float) -> tuple[list[int], np.ndarray]:
        """The pool's tasks and each one's share of the next draw."""
        predicted = forecast(self.model, memory, now)
        tasks = list(predicted)
        return tasks, allocate_shares(np.array([predicted[t] for t in tasks]), self.floor, self.cap)

    def sample(self, memory: MemoryState, now: float, n: int, rng: np.random.Generator) -> np.ndarray:
        n = min(n, len(memory))
        if n <= 0:
            return memory.ids[:0]
        tasks, shares = self.shares(memory, now)
        picks = []
        for task, k in zip(tasks, counts_from_shares(shares, n, rng)):
            if k > 0:
                picks.append(least_recent(memory.of_tasks([task]), int(k), rng))
        return np.sort(np.concatenate(picks)) if picks else memory.ids[:0]


def least_recent(memory: MemoryState, n: int, rng: np.random.Generator) -> np.ndarray:
    """The ``n`` samples trained longest ago (ties at random)."""
    n = min(n, len(memory))
    keys = memory.tau + 1e-6 * rng.random(len(memory))  # the jitter only orders equal times
    return memory.ids[np.argpartition(keys, n - 1)[:n]] if n < len(memory) else memory.ids.copy()


@SAMPLERS.register("leitner")
class LeitnerSampler(BaseSampler):
    """A Leitner queue (after Amiri et al. 2017, "Repeat before Forgetting"): every pooled
    sample sits in a box, 0 when it joins; a sample in box b is due ``base_interval * 2^b``
    after it was last trained. An event replays due samples drawn at random (the next ones to
    fall due where fewer are due); a replayed sample recalled (loss at most its reference loss
    plus ``recall_margin``; its task's learned level where no reference was measured) moves up
    a box, otherwise back to box 0.

    The queue reviews every due item; under a replay budget far fewer than the due samples can
    be replayed, so the queue is never emptied, and serving the longest overdue first would
    replay the oldest tasks only (on the 11-task stream's shape at 10%, tasks 1 to 4 took every replay
    and tasks 5 to 11 none, in a simulation). The draw among the due keeps the queue's spacing
    (a sample recalled waits longer before it is due again) without that starvation."""

    config_section = "leitner"
    reads_reference = True

    def __init__(self, params):
        self.base, self.margin = params.base_interval, params.recall_margin
        self.box: dict[int, int] = {}  # pool id -> box, for samples replayed at least once

    def due_times(self, memory: MemoryState) -> np.ndarray:
        boxes = np.array([self.box.get(int(i), 0) for i in memory.ids.tolist()], dtype=np.float64)
        return memory.tau + self.base * np.power(2.0, boxes)

    def sample(self, memory: MemoryState, now: float, n: int, rng: np.random.Generator) -> np.ndarray:
        n = min(n, len(memory))
        if n <= 0:
            return memory.ids[:0]
        due_at = self.due_times(memory)
        due = np.flatnonzero(due_at <= now)
        if due.size >= n:
            return np.sort(memory.ids[rng.choice(due, size=n, replace=False)])
        later = np.flatnonzero(due_at > now)
        keys = due_at[later] + 1e-6 * rng.random(later.size)  # the jitter only orders ties
        nearest = later[np.argsort(keys, kind="stable")[: n - due.size]]
        return np.sort(memory.ids[np.concatenate([due, nearest])])

    def on_replayed(self, now: float, ids: np.ndarray, losses: np.ndarray, memory: MemoryState) -> None:
        pos = memory.positions(ids)
        level = np.where(np.isnan(memory.reference[pos]), memory.entry_loss[pos], memory.reference[pos])
        for i, recalled in zip(np.asarray(ids).tolist(), (np.asarray(losses) <= level + self.margin).tolist()):
            self.box[int(i)] = self.box.get(int(i), 0) + 1 if recalled else 0

    def state_dict(self) -> dict:
        return {"box": [[i, b] for i, b in self.box.items()]}

    def load_state_dict(self, state: dict) -> None:
        self.box = {int(i): int(b) for i, b in state["box"]}
