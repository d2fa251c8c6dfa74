"""Replay samplers: which pool samples to replay. Registered by name in ``SAMPLERS``.

A sampler is any class with ``__init__(self, params)`` and
``sample(memory, now, n, rng) -> np.ndarray`` of pool sample ids (without replacement).

    sampler = SAMPLERS.get("strength")(cfg.replay.mssr)
    ids = sampler.sample(memory, now=120, n=4, rng=np.random.default_rng(0))
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from mssr.memory import MemoryState
from mssr.registry import Registry

SAMPLERS = Registry("sampler")


class ReplaySampler(Protocol):
    def sample(self, memory: MemoryState, now: float, n: int, rng: np.random.Generator) -> np.ndarray: ...


_BLOCK = 1024


def _draw_with_replacement(weights: np.ndarray, k: int, rng: np.random.Generator,
                           block_cum: np.ndarray) -> np.ndarray:
    """k positions drawn with replacement in proportion to ``weights``: pick a block of
    ``_BLOCK`` positions by its weight, then a position inside it (no O(N) cumulative sum)."""
    u = rng.random(k) * block_cum[-1]
    blocks = np.minimum(np.searchsorted(block_cum, u, side="right"), block_cum.size - 1)
    out = np.empty(k, dtype=np.int64)
    for j, (b, x) in enumerate(zip(blocks.tolist(), u.tolist())):
        x -= block_cum[b - 1] if b else 0.0
        local = np.cumsum(weights[b * _BLOCK:(b + 1) * _BLOCK], dtype=np.float64)
        out[j] = b * _BLOCK + min(int(np.searchsorted(local, x, side="right")), local.size - 1)
    return out


LARGE_POOL = 4096  # from this many samples on, successive sampling over block sums beats Gumbel-top-k


def _gumbel_top_k(weights: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    keys = np.log(weights) + rng.gumbel(size=weights.size)
    top = np.argpartition(-keys, n - 1)[:n] if n < weights.size else np.arange(weights.size)
    return top[np.argsort(-keys[top], kind="stable")]


def weighted_without_replacement(weights: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Positions drawn without replacement with probability proportional to ``weights``.

    Small pools: Gumbel-top-k, one vectorised pass. Large pools (``LARGE_POOL`` samples or
    more), where drawing N Gumbel numbers dominates: successive sampling, i.e. draw with
    replacement and drop repeats (rejecting a repeat is the same as drawing from the weights
    that remain), which costs one pass of block sums plus O(n * 1024). When a few positions
    hold nearly all the weight, repeats keep coming; after a few rounds the rest is drawn with
    Gumbel-top-k over the remaining positions. Both give the same distribution.
    """
    n = min(n, weights.size)
    if weights.size < LARGE_POOL:
        return _gumbel_top_k(weights, n, rng)
    full = weights.size // _BLOCK * _BLOCK
    block_sums = weights[:full].reshape(-1, _BLOCK).sum(axis=1, dtype=np.float64)
    if full < weights.size:
        block_sums = np.append(block_sums, weights[full:].sum(dtype=np.float64))
    block_cum = np.cumsum(block_sums)
    picked: dict[int, None] = {}  # an insertion-ordered set
    for _ in range(8):
        need = n - len(picked)
        if need == 0:
            break
        for d in _draw_with_replacement(weights, 2 * need, rng, block_cum).tolist():
            picked.setdefault(d)
            if len(picked) == n:
                break
    need = n - len(picked)
    if need:
        rest = weights.astype(np.float64)
        rest[list(picked)] = 0.0
        remaining = np.flatnonzero(rest)
        picked.update(dict.fromkeys(remaining[_gumbel_top_k(rest[remaining], need, rng)].tolist()))
    return np.fromiter(picked, dtype=np.int64, count=n)


@SAMPLERS.register("uniform")
class UniformSampler:
    """Every pool sample equally likely (the baselines' sampler)."""

    def __init__(self, params=None):
        self.params = params

    def sample(self, memory: MemoryState, now: float, n: int, rng: np.random.Generator) -> np.ndarray:
        n = min(n, len(memory))
        return memory.ids[np.sort(rng.choice(len(memory), size=n, replace=False))] if n else memory.ids[:0]


@SAMPLERS.register("strength")
class StrengthSampler:
    """Favour samples at risk: P(i) proportional to (1 - R_i(t))^kappa + epsilon."""

    def __init__(self, params):
        self.kappa = params.kappa
        self.epsilon = params.epsilon

    def sample(self, memory: MemoryState, now: float, n: int, rng: np.random.Generator) -> np.ndarray:
        if len(memory) == 0 or n <= 0:
            return memory.ids[:0]
        # large pools: float32 is plenty for sampling weights and its exp is four times faster
        dtype = np.float32 if len(memory) >= LARGE_POOL else np.float64
        r = memory.retention(now, dtype=dtype)
        risk = np.square(1.0 - r) if self.kappa == 2 else np.power(1.0 - r, dtype(self.kappa))
        weights = np.maximum(risk + dtype(self.epsilon), dtype(1e-12))  # epsilon = 0, R = 1: stay defined
        return memory.ids[np.sort(weighted_without_replacement(weights, n, rng))]


class TaskBalancedSampler:
    """Wraps a sampler: split each draw evenly over the pool's tasks (the remainder goes to
    randomly chosen tasks), then let the wrapped sampler pick within each task.
    Enabled for any strategy with ``replay.balance_tasks: true``."""

    def __init__(self, inner: ReplaySampler):
        self.inner = inner

    def sample(self, memory: MemoryState, now: float, n: int, rng: np.random.Generator) -> np.ndarray:
        tasks, sizes = np.unique(memory.task, return_counts=True)
        if tasks.size <= 1 or n <= 0:
            return self.inner.sample(memory, now, n, rng)
        share = np.full(tasks.size, n // tasks.size)
        share[rng.choice(tasks.size, size=n % tasks.size, replace=False)] += 1
        share = np.minimum(share, sizes)  # a task smaller than its share gives what it has
        picks = [self.inner.sample(memory.subset(memory.task == t), now, int(k), rng)
                 for t, k in zip(tasks, share) if k > 0]
        return np.sort(np.concatenate(picks)) if picks else memory.ids[:0]
