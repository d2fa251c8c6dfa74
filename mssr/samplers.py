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


def weighted_without_replacement(weights: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Positions drawn without replacement with probability proportional to ``weights``.

    Gumbel-top-k: equivalent to sequential weighted draws, O(N) instead of O(N * n).
    """
    n = min(n, weights.size)
    keys = np.log(weights) + rng.gumbel(size=weights.size)
    top = np.argpartition(-keys, n - 1)[:n] if n < weights.size else np.arange(weights.size)
    return top[np.argsort(-keys[top], kind="stable")]


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
        risk = (1.0 - memory.retention(now)) ** self.kappa + self.epsilon
        weights = np.maximum(risk, 1e-12)  # epsilon = 0 with R = 1 everywhere: stay defined
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
