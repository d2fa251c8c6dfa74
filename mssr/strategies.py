"""Named replay strategies: a sampler (which samples) and a scheduler (when).

    build_strategy("mssr", cfg.replay)             # -> Strategy(sampler, scheduler)
    build_strategy("my_pkg.mod:EVERY_K", cfg.replay)  # a user's StrategySpec, by import path

A strategy is registered as a ``StrategySpec``: its name, the factory that builds it and its
own settings class (a pydantic model), the way peft registers a method's config class beside
its model class. Its settings are read from ``replay.settings.<name>`` and checked when the
config is loaded. A user strategy plugs in without editing this module: by import path in
``replay.strategy`` (a ``StrategySpec``, or a bare factory ``make(replay_cfg, settings)``
that takes no settings), or registered by name with ``register_strategy`` in a module listed
in ``replay.plugins`` (which a comparison of several strategies with settings needs: their
sections are checked whichever one runs). ``replay.sampler`` and
``replay.scheduler`` (a registered name or an import path) replace one half of any strategy,
and ``replay.balance_tasks`` (true or false) overrides whether every draw is split evenly over
the pool's tasks (by default mssr-strength and mssr-sampler split them, the others do not).

The built-in strategies:

    none            no replay: sequential fine-tuning, the lower bound
    joint           all tasks' data mixed into one stream, no replay: the non-continual reference
    fixed           every K steps, uniform draws from the pool
    loss            when the loss jumps above its running mean + z*std, uniform draws
    accuracy        when a past task's probed accuracy drops by more than delta, draws from it
    surprise        the fixed schedule, drawing the pool samples with the highest last loss
    sure            SuRe as published (arXiv 2511.22367): the pool keeps each task's samples with
                    the highest loss in their training step; uniform draws on the fixed schedule
    mir             lagged maximally interfered retrieval: the fixed schedule, replaying the
                    probed candidates whose loss the last update raised most
    leitner         a Leitner queue (boxes with doubling intervals) on the fixed schedule
    mssr            draws split over tasks by the excess loss a forgetting model fitted to the
                    replays' observations predicts (floor and cap per task, least recently
                    trained first within a task) + a replay rate that follows the mean
                    predicted excess over tasks, paced to spend the budget by the end of the
                    stream
    observed-loss   ablation: mssr's draws from each task's last observed excess (no forgetting
                    model), on the fixed schedule
    mssr-strength   the formulation before: memory-strength sampler (retention from a strength per
                    sample), draws split evenly over tasks + the paced schedule on 1 - mean R
    mssr-sampler    ablation of mssr-strength: its sampler on the fixed schedule
    mssr-scheduler  ablation of mssr-strength: its paced schedule with uniform draws
    mssr-expanding  the first formulation: memory-strength sampler + expanding, retention-aware
                    intervals after each task switch (with entry_loss: own_step and
                    recall_margin: null, the first memory model too)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from pydantic import BaseModel, ValidationError

from mssr.errors import ConfigError, did_you_mean
from mssr.registry import Registry, import_modules
from mssr.samplers import SAMPLERS, BaseSampler, TaskBalancedSampler
from mssr.schedulers import SCHEDULERS, BaseScheduler, NeverScheduler

STRATEGIES = Registry("strategy")


@dataclass
class Strategy:
    name: str
    sampler: BaseSampler
    scheduler: BaseScheduler
    # train on a shuffled mix of every task's data, cut into as many segments as there are
    # tasks (same sizes, same evaluation after each): the "joint" reference
    mixes_tasks: bool = False
    # split every draw evenly over the pool's tasks unless replay.balance_tasks says otherwise
    balances_tasks: bool = False
    # which of a task's samples join the pool unless replay.storage says otherwise (mssr.replay)
    storage: str = "reservoir"

    @property
    def replays(self) -> bool:
        """Whether it ever replays (not the ``never`` scheduler): its runs depend on the budget."""
        return not isinstance(self.scheduler, NeverScheduler)

    @property
    def needs_reference(self) -> bool:
        """Whether the sampler or the scheduler reads the pooled samples' reference losses (a
        class attribute ``reads_reference = True``): then, unless ``replay.reference_pass``
        says otherwise, the workers measure them in a no-grad pass when each task ends."""
        return self.sampler.reads_reference or self.scheduler.reads_reference


@dataclass(frozen=True)
class StrategySpec:
    """What a strategy registers: its name, its factory and its own settings.

        class EveryKSettings(pydantic.BaseModel, extra="forbid"):
            every: int = pydantic.Field(2, gt=0)

        def make_every_k(replay_cfg, settings: EveryKSettings) -> Strategy: ...

        EVERY_K = StrategySpec("every-k", make_every_k, EveryKSettings)

    ``make(replay_cfg, settings)`` gets the replay config (budget, pool, the built-in
    components' sections) and its settings: ``replay.settings.<name>`` validated by the
    settings class, defaults for what is left out; ``None`` for a strategy without one.
    """

    name: str
    make: Callable[[Any, Optional[BaseModel]], Strategy]
    settings: Optional[type[BaseModel]] = None

    def parse_settings(self, replay_cfg) -> Optional[BaseModel]:
        """The strategy's settings from ``replay.settings.<name>``; a ``ValueError`` naming the
        key (``settings.every-k.every: ...``) for a wrong or unknown one."""
        raw = replay_cfg.settings.get(self.name, {})
        if self.settings is None:
            if raw:
                raise ValueError(f"settings.{self.name}: strategy {self.name!r} takes no settings")
            return None
        try:
            return self.settings.model_validate(raw)
        except ValidationError as e:
            raise ValueError(_settings_error(self.name, self.settings, e)) from None


def _settings_error(name: str, cls: type[BaseModel], err: ValidationError) -> str:
    e = err.errors()[0]
    key = ".".join(["settings", name, *(str(p) for p in e["loc"])])
    if e["type"] == "extra_forbidden":
        fields = list(cls.model_fields)
        return f"{key}: unknown key{did_you_mean(str(e['loc'][-1]), fields, otherwise=f'; valid keys: {fields}')}"
    return f"{key}: {e['msg']} (got {e.get('input')!r})"


def register_strategy(name: str, settings: Optional[type[BaseModel]] = None):
    """Register ``make(replay_cfg, settings) -> Strategy`` under ``name`` with its settings class:

    @register_strategy("every-k", settings=EveryKSettings)
    def make_every_k(replay_cfg, settings): ...
    """

    def deco(make):
        STRATEGIES.register(name)(StrategySpec(name, make, settings))
        return make

    return deco


def strategy_spec(name: str) -> StrategySpec:
    """The spec of a registered name or an import path (a bare factory by import path: a spec
    without settings)."""
    found = STRATEGIES.get(name)
    return found if isinstance(found, StrategySpec) else StrategySpec(name, found)


def check_settings(replay_cfg) -> None:
    """Every section of ``replay.settings`` names a strategy (registered, or the one
    ``replay.strategy`` names by import path) and passes its settings class; a
    ``ValueError`` naming the key otherwise. Called when the config is loaded."""
    specs = {n: STRATEGIES.get(n) for n in STRATEGIES.names()}
    if ":" in replay_cfg.strategy:
        try:
            active = strategy_spec(replay_cfg.strategy)
        except ConfigError as e:
            raise ValueError(f"strategy: {e}") from None
        specs[active.name] = active
    for name in replay_cfg.settings:
        if name not in specs:
            hint = did_you_mean(name, specs)
            raise ValueError(
                f"settings.{name}: no strategy of that name{hint} (a strategy with settings is found by "
                "name once replay.plugins registers it, or when replay.strategy names it by import path)"
            )
        specs[name].parse_settings(replay_cfg)


def build_sampler(name: str, replay_cfg):
    """A sampler by name or import path, given its settings: ``replay.mssr``, or the section of
    the replay config its class names in ``config_section``."""
    cls = SAMPLERS.get(name)
    _check_protocol(cls, BaseSampler, "sampler", name)
    return cls(getattr(replay_cfg, cls.config_section))


def build_scheduler(name: str, replay_cfg):
    """A scheduler by name or import path, given the replay config."""
    cls = SCHEDULERS.get(name)
    _check_protocol(cls, BaseScheduler, "scheduler", name)
    return cls(replay_cfg)


def _check_protocol(cls, base: type, kind: str, name: str) -> None:
    """The planner calls every hook of the protocol: a class must get them from its base."""
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ConfigError(
            f"{kind} {name!r}: {getattr(cls, '__name__', cls)} must subclass {base.__module__}.{base.__name__} "
            "(it supplies the hooks a class does not write)"
        )


def _combo(
    name: str,
    sampler: str,
    scheduler: str,
    mixes_tasks: bool = False,
    balances_tasks: bool = False,
    storage: str = "reservoir",
):
    def make(replay_cfg, settings=None) -> Strategy:
        sampler_, scheduler_ = build_sampler(sampler, replay_cfg), build_scheduler(scheduler, replay_cfg)
        return Strategy(name, sampler_, scheduler_, mixes_tasks, balances_tasks, storage)

    make.__doc__ = f"{name}: {sampler} sampler, {scheduler} scheduler"
    register_strategy(name)(make)


_combo("none", "uniform", "never")
_combo("joint", "uniform", "never", mixes_tasks=True)
_combo("fixed", "uniform", "fixed")
_combo("loss", "uniform", "loss")
_combo("accuracy", "uniform", "accuracy")  # the scheduler narrows draws to the dropped tasks
_combo("surprise", "surprise", "fixed")
_combo("sure", "uniform", "fixed", storage="surprise")  # SuRe as published: surprise picks what is stored
_combo("mir", "uniform", "mir")
_combo("leitner", "leitner", "fixed")
# draws follow the excess loss predicted by a forgetting model fitted to what replays observed,
# paced by their mean over tasks (floor and cap: replay.mssr.floor, replay.mssr.cap)
_combo("mssr", "excess", "paced-excess")
# the formulation before: draws split evenly over tasks keep the task learned last from being
# starved (its samples are the freshest, highest retention, yet the next task overwrites them first)
_combo("mssr-strength", "strength", "paced", balances_tasks=True)
_combo("mssr-sampler", "strength", "fixed", balances_tasks=True)
_combo("mssr-scheduler", "uniform", "paced")
_combo("mssr-expanding", "strength", "adaptive")


@register_strategy("observed-loss")
def observed_loss(replay_cfg, settings=None) -> Strategy:
    """observed-loss: the excess sampler fed the last observed excess of each task (no model of
    forgetting over time), on the fixed schedule: the ablation of mssr's forgetting model."""
    params = replay_cfg.mssr.model_copy(update={"forgetting_model": "last-excess"})
    return Strategy("observed-loss", SAMPLERS.get("excess")(params), SCHEDULERS.get("fixed")(replay_cfg))


def reference_pass(replay_cfg, strategy: Strategy) -> bool:
    """Whether a run measures its pooled samples' reference losses: ``replay.reference_pass``,
    or when null, whether its strategy (built from ``replay_cfg``) reads them. A strategy that
    reads them cannot run without: with no reference there is no excess loss to observe, and it
    would replay blind (evenly, at the base pace) while appearing to work."""
    if replay_cfg.reference_pass is False and strategy.needs_reference:
        raise ConfigError(
            f"replay.reference_pass: false, but strategy {strategy.name!r} replays from the excess loss "
            "over each sample's reference loss; leave replay.reference_pass null (or true)"
        )
    if replay_cfg.reference_pass is not None:
        return replay_cfg.reference_pass
    return strategy.needs_reference


def build_strategy(name: str, replay_cfg) -> Strategy:
    """The strategy ``name`` (registered, or an import path) with its settings from
    ``replay_cfg.settings`` and the replay config's overrides of its parts."""
    # loading the config imports them where it is loaded; a config passed to another process
    # arrives checked, without them
    import_modules(replay_cfg.plugins, "replay.plugins")
    spec = strategy_spec(name)
    try:
        settings = spec.parse_settings(replay_cfg)
    except ValueError as e:
        raise ConfigError(f"replay.{e}") from None
    strategy = spec.make(replay_cfg, settings)
    if not isinstance(strategy, Strategy):
        raise ConfigError(f"strategy {name!r} must return an mssr.strategies.Strategy, got {type(strategy).__name__}")
    if replay_cfg.sampler:
        strategy.sampler = build_sampler(replay_cfg.sampler, replay_cfg)
    if replay_cfg.scheduler:
        strategy.scheduler = build_scheduler(replay_cfg.scheduler, replay_cfg)
    if replay_cfg.storage:
        strategy.storage = replay_cfg.storage
    _check_protocol(type(strategy.sampler), BaseSampler, "sampler of strategy", name)
    _check_protocol(type(strategy.scheduler), BaseScheduler, "scheduler of strategy", name)
    balance = strategy.balances_tasks if replay_cfg.balance_tasks is None else replay_cfg.balance_tasks
    if balance:
        strategy.sampler = TaskBalancedSampler(strategy.sampler)
    return strategy
