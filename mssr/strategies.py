"""Named replay strategies: a sampler (which samples) and a scheduler (when).

    build_strategy("mssr", cfg.replay)           # -> Strategy(sampler, scheduler)
    build_strategy("my_pkg.mod:make", cfg.replay)  # a user factory: (replay_cfg) -> Strategy

A user strategy is a factory function or class taking the replay config and returning a
``Strategy``; it plugs in by import path without editing this module. ``replay.sampler`` and
``replay.scheduler`` (a registered name or an import path) replace one half of any strategy,
and ``replay.balance_tasks`` splits every draw evenly over the pool's tasks.

The built-in strategies:

    none            no replay: sequential fine-tuning, the lower bound
    joint           all tasks' data mixed into one stream, no replay: the non-continual reference
    fixed           every K steps, uniform draws from the pool
    loss            when the loss jumps above its running mean + z*std, uniform draws
    accuracy        when a past task's probed accuracy drops by more than delta, draws from it
    surprise        the fixed schedule, drawing the pool samples with the highest last loss (SuRe)
    mssr            memory-strength sampler + expanding, retention-aware schedule
    mssr-sampler    ablation: MSSR's sampler on the fixed schedule
    mssr-scheduler  ablation: MSSR's schedule with uniform draws
    mssr-paced      memory-strength sampler + a replay rate that follows predicted forgetting,
                    paced to spend the budget by the end of the stream
"""

from __future__ import annotations

from dataclasses import dataclass

from mssr.errors import ConfigError
from mssr.registry import Registry
from mssr.samplers import SAMPLERS, ReplaySampler, TaskBalancedSampler
from mssr.schedulers import SCHEDULERS, ReplayScheduler

STRATEGIES = Registry("strategy")


@dataclass
class Strategy:
    name: str
    sampler: ReplaySampler
    scheduler: ReplayScheduler
    # train on a shuffled mix of every task's data, cut into as many segments as there are
    # tasks (same sizes, same evaluation after each): the "joint" reference
    mixes_tasks: bool = False


def _combo(name: str, sampler: str, scheduler: str, mixes_tasks: bool = False):
    def make(replay_cfg) -> Strategy:
        return Strategy(
            name, SAMPLERS.get(sampler)(replay_cfg.mssr), SCHEDULERS.get(scheduler)(replay_cfg), mixes_tasks
        )

    make.__doc__ = f"{name}: {sampler} sampler, {scheduler} scheduler"
    STRATEGIES.register(name)(make)


_combo("none", "uniform", "never")
_combo("joint", "uniform", "never", mixes_tasks=True)
_combo("fixed", "uniform", "fixed")
_combo("loss", "uniform", "loss")
_combo("accuracy", "uniform", "accuracy")  # the scheduler narrows draws to the dropped tasks
_combo("surprise", "surprise", "fixed")
_combo("mssr", "strength", "adaptive")
_combo("mssr-sampler", "strength", "fixed")
_combo("mssr-scheduler", "uniform", "adaptive")
_combo("mssr-paced", "strength", "paced")


def build_strategy(name: str, replay_cfg) -> Strategy:
    strategy = STRATEGIES.get(name)(replay_cfg)
    if not isinstance(strategy, Strategy):
        raise ConfigError(f"strategy {name!r} must return an mssr.strategies.Strategy, got {type(strategy).__name__}")
    if replay_cfg.sampler:
        strategy.sampler = SAMPLERS.get(replay_cfg.sampler)(replay_cfg.mssr)
    if replay_cfg.scheduler:
        strategy.scheduler = SCHEDULERS.get(replay_cfg.scheduler)(replay_cfg)
    if replay_cfg.balance_tasks:
        strategy.sampler = TaskBalancedSampler(strategy.sampler)
    return strategy
