"""benchmarks/grid_tune.py: every strategy of the long-stream comparison gets the same grid,
and the tuned file it writes is what `mssr compare --tuned` reads."""

import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from grid_tune import grid_trials, write_results  # noqa: E402

from mssr.errors import ConfigError  # noqa: E402
from pipelines.compare import load_tuned, tuned_on_streams  # noqa: E402

SPACES = ["fixed-grid", "mssr", "observed-loss", "mir", "leitner", "sure"]


@pytest.mark.parametrize("space", SPACES)
def test_every_arm_of_the_comparison_gets_six_trials(space):
    trials = grid_trials(str(ROOT / "tune_spaces" / f"{space}.yaml"), str(ROOT / "configs" / "long.yaml"), [])
    assert len(trials) == 6 and len({tuple(sorted(t.items())) for t in trials}) == 6
    assert {t["replay.samples_per_event"] for t in trials} == {2, 4, 8}


def test_a_space_that_samples_is_refused(tmp_path):
    space = tmp_path / "s.yaml"
    space.write_text("replay.strategy: fixed\nreplay.samples_per_event: {choice: [2, 4]}\n")
    with pytest.raises(ConfigError, match="only grid axes"):
        grid_trials(str(space), str(ROOT / "configs" / "tiny.yaml"), [])


def test_the_tuned_file_holds_each_strategys_best_trial_for_compare(tmp_path):
    def trial(name, strategy, spe, loss):
        summary = {"loss_final": loss, "ap": 0.3, "train_seconds": 100.0, "probe_seconds": 2.0}
        summary |= {"bookkeeping_seconds": 0.1, "workers": 2}
        return {"name": name, "strategy": strategy, "swept": {"replay.samples_per_event": spe}, "summary": summary}

    trials = [trial("a", "fixed", 2, 0.9), trial("b", "fixed", 8, 0.7), trial("c", "mssr", 4, 0.8)]
    trials.append({"name": "d", "strategy": "mssr", "swept": {"replay.samples_per_event": 8}})  # not run yet
    write_results(tmp_path, trials, tuned_on={"split": "tune", "builtin": "reasoning-gym-long"})
    tuned = yaml.safe_load((tmp_path / "tuned.yaml").read_text())
    assert tuned["fixed"] == {"replay.samples_per_event": 8} and tuned["mssr"] == {"replay.samples_per_event": 4}
    path = str(tmp_path / "tuned.yaml")
    assert load_tuned(path) == {"fixed": ["replay.samples_per_event=8"], "mssr": ["replay.samples_per_event=4"]}
    assert tuned_on_streams(path)[path]["split"] == "tune"
    table = (tmp_path / "trials.md").read_text()
    assert table.index("| b |") < table.index("| c |") < table.index("| a |")  # by loss_final, lower first
    # overhead: the probe seconds per worker (the summary sums both) and the bookkeeping, of training
    assert "| 100 | 1.10 |" in table
