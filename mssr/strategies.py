"""Named replay strategies: a sampler (which samples) and a scheduler (when).

    build_strategy("mssr", cfg.replay)           # -> Strategy(sampler, scheduler)
    build_strategy("my_pkg.mod:make", cfg.replay)  # a user factory: (replay_cfg) -> Strategy

A user strategy is a factory function or class taking the replay config and returning a
``Strategy``; it plugs in by import path without editing this module.
"""

from __future__ import annotations

from dataclasses import dataclass

from mssr.registry import Registry
from mssr.samplers import SAMPLERS, ReplaySampler
from mssr.schedulers import SCHEDULERS, ReplayScheduler

STRATEGIES = Registry("strategy")


@dataclass
class Strategy:
    name: str
    sampler: ReplaySampler
    scheduler: ReplayScheduler


def _combo(name: str, sampler: str, scheduler: str):
    def make(replay_cfg) -> Strategy:
        return Strategy(name, SAMPLERS.get(sampler)(replay_cfg.mssr), SCHEDULERS.get(scheduler)(replay_cfg))

    make.__doc__ = f"{name}: {sampler} sampler, {scheduler} scheduler"
    STRATEGIES.register(name)(make)


_combo("none", "uniform", "never")  # sequential fine-tuning, the lower bound
_combo("fixed", "uniform", "fixed")  # every K steps, uniform from the pool
_combo("mssr", "strength", "adaptive")  # MSSR: memory-strength sampler + expanding schedule
_combo("mssr-sampler", "strength", "fixed")  # ablation: MSSR's sampler on a fixed schedule
_combo("mssr-scheduler", "uniform", "adaptive")  # ablation: MSSR's schedule with uniform draws


def build_strategy(name: str, replay_cfg) -> Strategy:
    strategy = STRATEGIES.get(name)(replay_cfg)
    if not isinstance(strategy, Strategy):
        from mssr.errors import ConfigError

        raise ConfigError(f"strategy {name!r} must return an mssr.strategies.Strategy, got {type(strategy).__name__}")
    return strategy
