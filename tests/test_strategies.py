"""Strategies (mssr/strategies.py): built by name or import path, a user's sampler, scheduler
and strategy included; MSSR's task balance."""

from pathlib import Path

import pytest

from mssr.config import ReplayConfig
from mssr.errors import ConfigError
from mssr.samplers import StrengthSampler, TaskBalancedSampler
from mssr.strategies import STRATEGIES, build_strategy

ROOT = Path(__file__).resolve().parents[1]
USER = "tests.user_strategy:EVERY_K"  # tests/user_strategy.py


def test_user_sampler_and_scheduler_by_import_path():
    s = build_strategy(
        "fixed", ReplayConfig(scheduler="tests.user_strategy:EveryStep", sampler="mssr.samplers:StrengthSampler")
    )
    assert type(s.scheduler).__name__ == "EveryStep" and isinstance(s.sampler, StrengthSampler)
    with pytest.raises(ConfigError, match="did you mean 'strength'"):
        build_strategy("fixed", ReplayConfig(sampler="strenght"))


def test_user_strategy_by_import_path():
    s = build_strategy("tests.user_strategy:EVERY_K", ReplayConfig())
    assert s.name == "every-k" and s.scheduler.every == 2  # its settings' default
    assert "mssr" in STRATEGIES.names() and "every-k" not in STRATEGIES.names()


def _events(every: int) -> int:
    from mssr.replay import ReplayPlanner
    from tests.planner_sim import simulate

    cfg = ReplayConfig(
        strategy="tests.user_strategy:EVERY_K",
        settings={"every-k": {"every": every}},
        pool_per_task=8,
        samples_per_event=2,
    )
    planner = ReplayPlanner(cfg, seed=0, total_new_samples=3 * 12 * 4)
    plans = simulate(planner, tasks=3, steps=12, batch=4)
    assert all(len(p.replay) == 2 for p in plans if p.replay)
    return planner.events


def test_a_user_strategys_own_settings_reach_it_and_change_its_plan():
    """replay.settings.every-k reaches the user's factory as its typed settings: every 2 steps
    replays 6 times in each of the two tasks with a pool, every 3 steps 4 times."""
    assert _events(2) == 2 * 6 and _events(3) == 2 * 4


def test_a_user_strategys_settings_are_checked_when_the_config_is_loaded():
    from mssr.config import load_config

    cfg = load_config(
        ROOT / "configs" / "tiny.yaml",
        ["replay.strategy=tests.user_strategy:EVERY_K", "replay.settings.every-k.every=5"],
    )
    assert build_strategy(cfg.replay.strategy, cfg.replay).scheduler.every == 5
    bad = ["replay.strategy=tests.user_strategy:EVERY_K"]
    with pytest.raises(ConfigError, match=r"replay.settings.every-k.evry: unknown key; did you mean 'every'"):
        load_config(ROOT / "configs" / "tiny.yaml", [*bad, "replay.settings.every-k.evry=5"])
    with pytest.raises(ConfigError, match=r"replay.settings.every-k.every: Input should be greater than 0"):
        load_config(ROOT / "configs" / "tiny.yaml", [*bad, "replay.settings.every-k.every=0"])
    with pytest.raises(ConfigError, match=r"settings.every-j: no strategy of that name; did you mean 'every-k'"):
        load_config(ROOT / "configs" / "tiny.yaml", [*bad, "replay.settings.every-j.every=2"])
    with pytest.raises(ConfigError, match=r"settings.fixed: strategy 'fixed' takes no settings"):
        load_config(ROOT / "configs" / "tiny.yaml", ["replay.settings.fixed.every=2"])


def test_a_plugin_module_registers_a_strategy_by_name_with_its_settings(tmp_path, monkeypatch):
    """replay.plugins imports a module that registers its strategy; its settings section is
    then checked whichever strategy runs (as in a comparison of several)."""
    from mssr.config import load_config

    (tmp_path / "my_plugin.py").write_text(
        "from mssr.strategies import register_strategy\n"
        "from tests.user_strategy import EveryKSettings, make_every_k\n"
        "register_strategy('every-k-plugin', settings=EveryKSettings)(make_every_k)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    plugin = ["replay.plugins=[my_plugin]", "replay.settings.every-k-plugin.every=4"]
    cfg = load_config(ROOT / "configs" / "tiny.yaml", [*plugin, "replay.strategy=every-k-plugin"])
    assert build_strategy("every-k-plugin", cfg.replay).scheduler.every == 4
    assert load_config(ROOT / "configs" / "tiny.yaml", [*plugin, "replay.strategy=fixed"]).replay.strategy == "fixed"
    with pytest.raises(ConfigError, match=r"replay.plugins: cannot import 'no_such_plugin'"):
        load_config(ROOT / "configs" / "tiny.yaml", ["replay.plugins=[no_such_plugin]"])


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


def test_a_user_strategys_settings_are_a_search_space_like_any_key(tmp_path):
    from mssr.search_space import load_space

    space = tmp_path / "every_k.yaml"
    space.write_text("replay.strategy: tests.user_strategy:EVERY_K\nreplay.settings.every-k.every: {grid: [2, 3]}\n")
    assert load_space(str(space), base_config=str(ROOT / "configs" / "tiny.yaml")).params[
        "replay.settings.every-k.every"
    ]
    space.write_text("replay.strategy: tests.user_strategy:EVERY_K\nreplay.settings.every-k.every: {grid: [0, 3]}\n")
    with pytest.raises(ConfigError, match=r"every_k.yaml:2: .*greater than 0"):
        load_space(str(space), base_config=str(ROOT / "configs" / "tiny.yaml"))
