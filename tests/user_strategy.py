"""A user-defined strategy, loaded by import path in the tests (no edit of mssr needed)."""

from mssr.samplers import UniformSampler
from mssr.schedulers import BaseScheduler
from mssr.strategies import Strategy


class EveryStep(BaseScheduler):
    """Replays at every step; the base class supplies every other hook."""

    def __init__(self, replay_cfg=None):
        pass

    def is_due(self, now, memory):
        return True


def make(replay_cfg):
    return Strategy("every-step", UniformSampler(), EveryStep())
