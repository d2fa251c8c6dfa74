"""The replay clocks (mssr/clock.py): steps, and model time from the update's norm."""

import pytest

from mssr.clock import StepClock, UpdateNormClock


def test_update_norm_clock_runs_slower_when_the_model_moves_less():
    clock = UpdateNormClock(calibration_steps=4)
    for _ in range(4):
        clock.tick(0.02)
    assert clock.time == pytest.approx(4.0)
    for _ in range(10):
        clock.tick(0.005)  # a quarter of the calibrated step
    assert clock.time == pytest.approx(6.5)
    steps = StepClock()
    steps.tick(123.0)
    assert steps.time == 1.0
