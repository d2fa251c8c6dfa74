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


class NotASampler:
    """Has ``sample`` but not the rest of the protocol: refused, not half-called."""

    def __init__(self, params=None):
        pass

    def sample(self, memory, now, n, rng):
        return memory.ids[:n]


def test_a_sampler_or_scheduler_outside_the_protocol_is_refused():
    with pytest.raises(
        ConfigError,
        match=r"sampler 'tests.test_strategies:NotASampler': NotASampler must subclass mssr.samplers.BaseSampler",
    ):
        build_strategy("fixed", ReplayConfig(sampler="tests.test_strategies:NotASampler"))
    with pytest.raises(ConfigError, match="must subclass mssr.schedulers.BaseScheduler"):
        build_strategy("fixed", ReplayConfig(scheduler="tests.test_strategies:NotASampler"))


def test_a_user_scheduler_gets_every_hook_from_the_base_and_replays():
    """tests/user_strategy.py writes only ``is_due``: the planner's calls of the other hooks
    (budget, probe, pick, focus, on_step, state) reach the base class's defaults."""
    from mssr.replay import ReplayPlanner
    from tests.planner_sim import simulate

    cfg = ReplayConfig(scheduler="tests.user_strategy:EveryStep", pool_per_task=8, samples_per_event=2)
    planner = ReplayPlanner(cfg, seed=0, total_new_samples=3 * 10 * 4)
    simulate(planner, tasks=3, steps=10, batch=4)
    assert planner.events == 20  # every step of tasks 2 and 3
    state = planner.state_dict()
    assert "sampler" not in state  # a stateless sampler adds nothing to the checkpoint
    planner.load_state_dict(state)
