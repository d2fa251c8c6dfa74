"""The sweep search-space vocabulary: every shipped space loads; every mistake names file:line."""

from pathlib import Path

import pytest

from mssr.errors import ConfigError
from mssr.search_space import Param, load_space, trial_overrides

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("space", sorted((ROOT / "tune_spaces").glob("*.yaml")), ids=lambda p: p.stem)
@pytest.mark.parametrize("config", ["demo.yaml", "tiny.yaml"])
def test_every_shipped_space_loads(space, config):
    s = load_space(space, ROOT / "configs" / config)
    assert s.params and all(
        p.kind in ("value", "choice", "uniform", "loguniform", "randint", "grid") for p in s.params.values()
    )


def test_the_vocabulary(tmp_path):
    f = tmp_path / "space.yaml"
    f.write_text(
        "replay.strategy: mssr\n"
        "replay.mssr.decay: {loguniform: [0.005, 0.1]}\n"
        "replay.mssr.growth: {uniform: [1.1, 3]}\n"
        "replay.mssr.initial_interval: {randint: [1, 6]}\n"
        "replay.mssr.kappa: {choice: [1.0, 2.0]}\n"
        "replay.samples_per_event: {grid: [2, 4, 8]}\n"
        "train.lr: {grid: [0.001, 0.0005]}\n"
    )
    s = load_space(f)
    assert s.params["replay.strategy"] == Param("value", ["mssr"])
    assert s.params["replay.mssr.decay"] == Param("loguniform", [0.005, 0.1])
    assert s.params["replay.mssr.initial_interval"] == Param("randint", [1, 6])
    assert s.grid_size() == 6
    assert trial_overrides({"replay.strategy": "fixed", "train.lr": 0.001}) == [
        'replay.strategy="fixed"',
        "train.lr=0.001",
    ]


@pytest.mark.parametrize(
    "text, fragment",
    [
        (
            "replay.mssr.decy: {uniform: [0.01, 0.1]}\n",
            "space.yaml:1: replay.mssr.decy: 0.01 is not accepted: "
            "unknown key 'replay.mssr.decy'; did you mean 'decay'?",
        ),
        (
            "replay.strategy: mssr\nreplay.mssr.decay: {unifrom: [0.01, 0.1]}\n",
            "space.yaml:2: replay.mssr.decay: unknown distribution 'unifrom'; did you mean 'uniform'?",
        ),
        ("replay.mssr.growth: {uniform: [3, 1.5]}\n", "space.yaml:1: replay.mssr.growth: uniform needs low < high"),
        ("replay.mssr.decay: {loguniform: [0, 0.1]}\n", "loguniform needs low > 0"),
        ("replay.mssr.initial_interval: {randint: [1.5, 4]}\n", "randint needs two integers"),
        ("replay.mssr.decay: {uniform: [-0.1, 0.1]}\n", "-0.1 is not accepted: replay.mssr.decay"),
        ("replay.strategy: {choice: [fixed, mssr, bogus]}\n", '"bogus" is not accepted'),
        ("replay.mssr.kappa: [1, 2]\n", "a list needs a distribution, e.g. {choice: [1, 2]}"),
        ("replay.mssr.kappa: {choice: []}\n", "choice needs a non-empty list"),
        ("replay.mssr.kappa: {choice: [1], grid: [2]}\n", "expected one distribution"),
        ("", "expected a mapping of config keys"),
        ("- a\n- b\n", "expected a mapping of config keys"),
        ("a: [\n", "not valid YAML"),
    ],
)
def test_mistakes_are_named_with_file_and_line(tmp_path, text, fragment):
    f = tmp_path / "space.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_space(f)
    assert fragment in str(e.value)


def test_values_are_checked_together_with_the_rest_of_the_space(tmp_path):
    """isolation.ratio is only valid once isolation.method is set, in the same space."""
    f = tmp_path / "space.yaml"
    f.write_text("isolation.method: epi\nisolation.ratio: {uniform: [0.05, 0.3]}\n")
    assert load_space(f).params["isolation.ratio"].kind == "uniform"
    f.write_text("isolation.ratio: {uniform: [0.05, 0.3]}\n")
    with pytest.raises(ConfigError, match="not used by isolation method 'none'"):
        load_space(f)


def test_missing_space_file(tmp_path):
    with pytest.raises(ConfigError, match="search space file not found"):
        load_space(tmp_path / "nope.yaml")
