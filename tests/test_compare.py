"""``mssr compare``: the table arithmetic, its errors, and one real comparison end to end."""

import csv
import json
import math

import numpy as np
import pyarrow.dataset as pads
import pytest

from pipelines.compare import aggregate, format_markdown
from tests.conftest import ROOT, run_cli


def _row(strategy, seed, ap, step=0.1):
    base = {"AP": ap, "BWT": -0.1, "FWT": 0.0, "forgetting": 0.2, "Avg": 0.4, "replayed": 40, "events": 10,
            "new tok": 1000, "replay tok": 100, "probe tok": 0, "eval tok": 500, "step s (median)": step,
            "probe s": 0.0, "bookkeeping s": 0.01, "wall s": 60}
    return {"strategy": strategy, "seed": seed, **base}


def test_aggregate_means_stds_and_step_time_relative_to_fixed():
    runs = [_row("fixed", 0, 0.4, 0.10), _row("fixed", 1, 0.6, 0.10), _row("mssr", 0, 0.5, 0.11),
            _row("mssr", 1, 0.7, 0.11), {"strategy": "loss", "seed": 0, "error": "boom"}]
    table = {r["strategy"]: r for r in aggregate(runs)}
    assert table["fixed"]["AP"] == pytest.approx(0.5) and table["fixed"]["AP std"] == pytest.approx(np.std([.4, .6], ddof=1))
    assert table["mssr"]["step time / fixed"] == pytest.approx(1.1)
    assert table["loss"]["seeds"] == 0 and table["loss"]["failed"] == 1 and math.isnan(table["loss"]["AP"])
    md = format_markdown(list(table.values()), [0, 1])
    assert "| mssr | 0.600 ± 0.141 |" in md and "| loss | failed |" in md


@pytest.mark.parametrize("args,fragment", [
    (["--strategies", "fixed,msr"], "unknown strategy 'msr'; did you mean 'mssr'"),
    (["--seeds", "0"], "--seeds must be at least 1"),
    (["--strategies", "none,mssr+epy"], "unknown isolation method 'epy'; did you mean 'epi'"),
    (["--strategies", "fixed", "train.batch_size=5"], "multiple of train.num_workers"),
])
def test_compare_refuses_bad_input_before_running_anything(tmp_path, args, fragment):
    proc = run_cli("compare", str(ROOT / "configs" / "tiny.yaml"), f"run.output_dir={tmp_path / 'out'}", *args,
                   cwd=tmp_path)
    assert proc.returncode == 2 and fragment in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.e2e
def test_compare_runs_every_strategy_and_writes_one_table(tmp_path):
    from mlflow import MlflowClient

    out = tmp_path / "out"
    proc = run_cli("compare", str(ROOT / "configs" / "tiny.yaml"), f"run.output_dir={out}", "replay.budget=12",
                   "--strategies", "accuracy,joint", "--name", "cmp", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    cdir = out / "comparisons" / "cmp"
    table = list(csv.DictReader((cdir / "table.csv").open()))
    assert [r["strategy"] for r in table] == ["accuracy", "joint"]
    assert "| accuracy |" in (cdir / "table.md").read_text() and "| accuracy |" in proc.stdout
    runs = {r["strategy"]: r for r in csv.DictReader((cdir / "runs.csv").open())}

    # every run is an MLflow run tagged with the comparison id, holding the table's numbers
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    tagged = client.search_runs(client.get_experiment_by_name("mssr").experiment_id,
                                "tags.comparison_id = 'cmp'")
    assert sorted(r.data.tags["strategy"] for r in tagged) == ["accuracy", "joint"]
    for r in tagged:
        assert r.data.metrics["ap"] == pytest.approx(float(runs[r.data.tags["strategy"]]["AP"]))

    # the accuracy trigger probes past tasks (its own evaluation cost) and stays in budget
    acc = json.loads((out / "cmp-accuracy-s0" / "summary.json").read_text())
    assert acc["probe_samples"] > 0 and acc["tokens"]["probe"] > 0 and acc["replay_samples"] <= 12
    plans = [json.loads(line) for line in (out / "cmp-accuracy-s0" / "plans" / "rank_0.jsonl").open()]
    assert sum(len(p["probe"]) for p in plans) == acc["probe_samples"]

    # joint trains on a mix: the first segment holds rows of every task, and nothing is replayed
    joint = json.loads((out / "cmp-joint-s0" / "summary.json").read_text())
    assert joint["replay_samples"] == 0 and joint["tokens"]["probe"] == 0
    ids = pads.dataset(str(out / "cmp-joint-s0" / "tokens" / "task_00")).to_table().column("sample_id").to_numpy()
    assert len(set((ids >> 32).tolist())) == 5


def test_strategy_plus_isolation_entries_set_both(tmp_path):
    from pipelines.compare import entry_overrides, plan_runs

    assert entry_overrides("mssr+epi") == ["replay.strategy=mssr", "isolation.method=epi"]
    assert entry_overrides("fixed") == ["replay.strategy=fixed"]
    cfgs = plan_runs(str(ROOT / "configs" / "tiny.yaml"), [f"run.output_dir={tmp_path}"],
                     ["none", "none+static", "mssr+epi"], 1, "iso")
    assert [(c.replay.strategy, c.isolation.method, c.run.name) for c in cfgs] == [
        ("none", "none", "iso-none-s0"), ("none", "static", "iso-none_static-s0"), ("mssr", "epi", "iso-mssr_epi-s0")]
