"""The online forgetting models: prequential, and right where the truth is known."""

import numpy as np
import pytest
from scipy.stats import spearmanr

from mssr.forgetting import FORGETTING_MODELS, LastExcess, RehearsalModel, TaskAge

MODELS = {name: FORGETTING_MODELS.get(name) for name in FORGETTING_MODELS.names()}


def simulated_stream(rng, rates, keep=0.3, noise=0.02, events=60, gap=4.0):
    """Tasks end one after another; each forgets at its own rate (excess per step); a replay
    of a task observes its excess (with noise) and leaves ``keep`` of it. Each event replays
    one task drawn at random among those ended. Yields (task, step, entry_step, excess)."""
    entries = {k: 10.0 * k for k in range(len(rates))}
    excess = {k: 0.0 for k in rates}
    last = dict(entries)
    for e in range(events):
        step = 10.0 * len(rates) + gap * e
        task = int(rng.integers(len(rates)))
        x = excess[task] + rates[task] * (step - last[task])
        yield task, step, entries[task], x + rng.normal(0, noise)
        excess[task], last[task] = keep * x, step


def prequential(model, stream):
    pred, actual = [], []
    for task, step, entry, x in stream:
        pred.append(model.predict(task, step, entry))
        model.observe(task, step, entry, x)
        actual.append(x)
    return np.array(pred), np.array(actual)


def test_the_rehearsal_model_learns_rates_and_what_a_replay_leaves():
    rates = {0: 0.002, 1: 0.01, 2: 0.03, 3: 0.005}
    model = RehearsalModel()
    pred, actual = prequential(model, simulated_stream(np.random.default_rng(0), rates, events=200))
    keep, fitted, _ = model._fit()
    assert keep == pytest.approx(0.3, abs=0.1)
    assert sorted(fitted, key=fitted.get) == sorted(rates, key=rates.get)  # the rates' order
    late = slice(100, None)  # once fitted, it predicts well
    assert spearmanr(pred[late], actual[late]).statistic > 0.9


def test_on_a_known_forgetting_law_the_model_beats_the_naive_predictors():
    rates = {0: 0.002, 1: 0.01, 2: 0.03, 3: 0.005, 4: 0.02}
    errors = {}
    for name, make in MODELS.items():
        pred, actual = prequential(make(), simulated_stream(np.random.default_rng(1), rates, events=150))
        errors[name] = np.abs(pred - actual)[50:].mean()
    assert errors["rehearsal"] < 0.5 * errors["last-excess"]
    assert errors["rehearsal"] < 0.5 * errors["task-age"]


def test_predictions_use_only_earlier_observations():
    """predict() before observe(): the same prediction whatever comes later."""
    rates = {0: 0.01, 1: 0.02}
    events = list(simulated_stream(np.random.default_rng(2), rates, events=40))
    for make in MODELS.values():
        full, _ = prequential(make(), events)
        cut, _ = prequential(make(), events[:20])
        assert np.allclose(full[:20], cut)


def test_naive_predictors_and_their_fallbacks():
    last = LastExcess()
    assert last.predict(0, 5.0, 0.0) == 0.0  # nothing seen
    last.observe(0, 5.0, 0.0, 0.4)
    last.observe(1, 6.0, 2.0, 0.2)
    assert last.predict(0, 9.0, 0.0) == 0.4 and last.predict(2, 9.0, 7.0) == pytest.approx(0.3)
    age = TaskAge()
    assert age.predict(0, 10.0, 4.0) == 6.0  # unscaled age before any observation
    age.observe(0, 10.0, 4.0, 0.6)  # 0.1 a step
    assert age.predict(1, 20.0, 10.0) == pytest.approx(1.0)
