"""The replay clock: what "time" means to the memory model and the schedulers.

* ``steps`` (default): time is the number of optimizer steps taken.
* ``update_norm``: "model time" (FOREVER, arXiv 2601.03938), the cumulative norm of the
  optimizer's parameter updates, in units of a typical step: each step advances time by
  ``||delta theta|| / reference``, the reference being the mean update norm of the run's
  first ``calibration_steps`` steps. Intervals and strengths keep their step-like units, but
  time runs slower when the model barely moves (a decayed learning rate, an easy task) and
  faster when it moves a lot, so forgetting is measured by how far the weights travelled.

    clock = build_clock(cfg.replay)
    clock.tick(update_norm=0.02)   # after each optimizer step
    clock.time                      # the time at the start of the next step
"""

from __future__ import annotations


class StepClock:
    """Time = optimizer steps taken."""

    needs_update_norm = False

    def __init__(self):
        self.time = 0.0

    def tick(self, update_norm: float = 0.0) -> None:
        self.time += 1.0

    def state_dict(self) -> dict:
        return {"time": self.time}

    def load_state_dict(self, s: dict) -> None:
        self.time = float(s["time"])


class UpdateNormClock:
    """Time = cumulative update norm / mean update norm of the first ``calibration_steps`` steps."""

    needs_update_norm = True

    def __init__(self, calibration_steps: int = 8):
        self.calibration_steps = calibration_steps
        self.time = 0.0
        self.calibrated = 0  # steps counted into the reference so far
        self.reference = 0.0

    def tick(self, update_norm: float = 0.0) -> None:
        norm = max(0.0, float(update_norm))
        if self.calibrated < self.calibration_steps:  # running mean until calibration ends
            self.calibrated += 1
            self.reference += (norm - self.reference) / self.calibrated
        self.time += norm / self.reference if self.reference > 0 else 1.0

    def state_dict(self) -> dict:
        return {"time": self.time, "calibrated": self.calibrated, "reference": self.reference}

    def load_state_dict(self, s: dict) -> None:
        self.time, self.calibrated, self.reference = float(s["time"]), int(s["calibrated"]), float(s["reference"])


def build_clock(replay_cfg):
    if replay_cfg.clock == "update_norm":
        return UpdateNormClock(replay_cfg.clock_calibration_steps)
    return StepClock()
