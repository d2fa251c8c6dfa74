"""A user's own strategy with its own settings, loaded by import path (no edit of mssr needed):

    replay:
      strategy: tests.user_strategy:EVERY_K
      settings:
        every-k: {every: 3}     # checked against EveryKSettings when the config is loaded

``EveryStep`` is a scheduler alone, for ``replay.scheduler=tests.user_strategy:EveryStep``.
"""

from pydantic import BaseModel, ConfigDict, Field

from mssr.samplers import UniformSampler
from mssr.schedulers import BaseScheduler
from mssr.strategies import Strategy, StrategySpec


class EveryStep(BaseScheduler):
    """Replays at every step; the base class supplies every other hook."""

    def __init__(self, replay_cfg=None):
        pass

    def is_due(self, now, memory):
        return True


class EveryKSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    every: int = Field(2, gt=0)
    """steps between replay events."""


class EveryK(BaseScheduler):
    """Replays every ``every`` steps of a task, counted from its start."""

    def __init__(self, every: int):
        self.every = every
        self.task_start = 0.0

    def on_task_start(self, task_index, now):
        self.task_start = now

    def is_due(self, now, memory):
        return (now - self.task_start) % self.every == self.every - 1


def make_every_k(replay_cfg, settings: EveryKSettings) -> Strategy:
    return Strategy("every-k", UniformSampler(), EveryK(settings.every))


EVERY_K = StrategySpec("every-k", make_every_k, EveryKSettings)
