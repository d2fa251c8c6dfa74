"""Strategies (mssr/strategies.py): built by name or import path, a user's sampler, scheduler
and strategy included; MSSR's task balance."""

import pytest

from mssr.config import ReplayConfig
from mssr.errors import ConfigError
from mssr.samplers import StrengthSampler, TaskBalancedSampler
from mssr.strategies import STRATEGIES, build_strategy


def test_user_sampler_and_scheduler_by_import_path():
    s = build_strategy(
        "fixed", ReplayConfig(scheduler="tests.user_strategy:EveryStep", sampler="mssr.samplers:StrengthSampler")
    )
    assert type(s.scheduler).__name__ == "EveryStep" and isinstance(s.sampler, StrengthSampler)
    with pytest.raises(ConfigError, match="did you mean 'strength'"):
        build_strategy("fixed", ReplayConfig(sampler="strenght"))


def test_user_strategy_by_import_path():
    s = build_strategy("tests.user_strategy:make", ReplayConfig())
    assert s.name == "every-step"
    assert "mssr" in STRATEGIES.names()


def test_mssr_splits_its_draws_over_tasks_unless_the_config_says_otherwise():
    def parts(name, **cfg):
        s = build_strategy(name, ReplayConfig(**cfg))
        inner = s.sampler.inner if isinstance(s.sampler, TaskBalancedSampler) else None
        return type(s.sampler).__name__, type(inner).__name__, type(s.scheduler).__name__

    assert parts("mssr") == ("ExcessSampler", "NoneType", "ExcessPacedScheduler")
    assert parts("mssr-strength") == ("TaskBalancedSampler", "StrengthSampler", "PacedScheduler")
    assert parts("mssr-sampler") == ("TaskBalancedSampler", "StrengthSampler", "FixedIntervalScheduler")
    assert parts("mssr-scheduler") == ("UniformSampler", "NoneType", "PacedScheduler")
    assert parts("mssr-expanding") == ("StrengthSampler", "NoneType", "AdaptiveScheduler")
    assert parts("mssr-strength", balance_tasks=False)[0] == "StrengthSampler"
    assert parts("observed-loss") == ("ExcessSampler", "NoneType", "FixedIntervalScheduler")
    assert parts("fixed") == ("UniformSampler", "NoneType", "FixedIntervalScheduler")
    assert parts("fixed", balance_tasks=True)[:2] == ("TaskBalancedSampler", "UniformSampler")
