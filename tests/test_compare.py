"""``mssr compare``: the table arithmetic, its errors, and one real comparison end to end."""

import csv
import json
import math

import numpy as np
import pyarrow.dataset as pads
import pytest

from pipelines.compare import aggregate, format_markdown, per_row_results
from tests.conftest import ROOT, run_cli


def _row(strategy, seed, ap, step=0.1):
    base = {
        "AP": ap,
        "BWT": -0.1,
        "FWT": 0.0,
        "forgetting": 0.2,
        "Avg": 0.4,
        "final loss": 1.0,
        "loss forgetting": 0.3,
        "replayed": 40,
        "events": 10,
        "new tok": 1000,
        "replay tok": 100,
        "probe tok": 0,
        "eval tok": 500,
        "step s (median)": step,
        "probe s": 0.0,
        "bookkeeping s": 0.01,
        "overhead %": 0.2,
        "wall s": 60,
    }
    return {"strategy": strategy, "seed": seed, **base}


def test_aggregate_means_stds_and_step_time_relative_to_fixed():
    runs = [
        _row("fixed", 0, 0.4, 0.10),
        _row("fixed", 1, 0.6, 0.10),
        _row("mssr", 0, 0.5, 0.11),
        _row("mssr", 1, 0.7, 0.11),
        {"strategy": "loss", "seed": 0, "error": "boom"},
    ]
    table = {r["strategy"]: r for r in aggregate(runs)}
    assert table["fixed"]["AP"] == pytest.approx(0.5) and table["fixed"]["AP std"] == pytest.approx(
        np.std([0.4, 0.6], ddof=1)
    )
    assert table["mssr"]["step time / fixed"] == pytest.approx(1.1)
    assert table["loss"]["seeds"] == 0 and table["loss"]["failed"] == 1 and math.isnan(table["loss"]["AP"])
    md = format_markdown(list(table.values()), [0, 1])
    assert "| mssr | 0.600 ± 0.141 |" in md and "| loss | failed |" in md


def test_overhead_is_probe_and_bookkeeping_seconds_as_a_share_of_training():
    from pipelines.compare import _overhead_percent

    summary = {"probe_seconds": 1.0, "bookkeeping_seconds": 0.5, "train_seconds": 100.0}
    assert _overhead_percent(summary) == pytest.approx(1.5)
    assert math.isnan(_overhead_percent({**summary, "train_seconds": None}))  # a run that did not record it


def test_per_row_results_fill_unscored_cells_with_nan():
    # two tasks of 2 and 3 test rows, three rows of the matrices; one cell was not scored
    eval_rows = {"tasks": ["a", "b"], "scores": [[[1, 0], [0, 1, 1]], [[1, 1], []], [[0, 1], [1, 0, 0]]]}
    a, b = per_row_results(eval_rows, "scores")
    assert a.tolist() == [[1, 0], [1, 1], [0, 1]]
    assert b.shape == (3, 3) and np.isnan(b[1]).all() and b[2].tolist() == [1, 0, 0]


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--strategies", "fixed,msr"], "unknown strategy 'msr'; did you mean 'mssr'"),
        (["--seeds", "0"], "--seeds must be at least 1"),
        (["--strategies", "none,mssr+epy"], "unknown isolation method 'epy'; did you mean 'epi'"),
        (["--strategies", "fixed", "train.batch_size=5"], "multiple of train.num_workers"),
    ],
)
def test_compare_refuses_bad_input_before_running_anything(tmp_path, args, fragment):
    proc = run_cli(
        "compare", str(ROOT / "configs" / "tiny.yaml"), f"run.output_dir={tmp_path / 'out'}", *args, cwd=tmp_path
    )
    assert proc.returncode == 2 and fragment in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.e2e
def test_compare_runs_every_strategy_and_writes_one_table(tmp_path):
    from mlflow import MlflowClient

    out = tmp_path / "out"
    args = ["compare", str(ROOT / "configs" / "tiny.yaml"), f"run.output_dir={out}", "replay.budget=12"]
    args += ["--strategies", "accuracy,joint", "--name", "cmp"]
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    cdir = out / "comparisons" / "cmp"
    table = list(csv.DictReader((cdir / "table.csv").open()))
    assert [r["strategy"] for r in table] == ["accuracy", "joint"]
    assert "| accuracy |" in (cdir / "table.md").read_text() and "| accuracy |" in proc.stdout
    runs = {r["strategy"]: r for r in csv.DictReader((cdir / "runs.csv").open())}

    # every run is an MLflow run tagged with the comparison id, holding the table's numbers
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    tagged = client.search_runs(client.get_experiment_by_name("mssr").experiment_id, "tags.comparison_id = 'cmp'")
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

    # the same comparison again (as after an interruption): the finished runs are kept, not rerun
    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert again.stdout.count("finished in an earlier invocation: kept") == 2
    assert list(csv.DictReader((cdir / "table.csv").open())) == table

    # moved elsewhere (another checkout, another disk), the comparison still keeps its runs
    moved = tmp_path / "moved"
    out.rename(moved)
    args[2] = f"run.output_dir={moved}"
    third = run_cli(*args, cwd=tmp_path)
    assert third.returncode == 0, third.stdout[-3000:] + third.stderr[-3000:]
    assert third.stdout.count("finished in an earlier invocation: kept") == 2
    assert list(csv.DictReader((moved / "comparisons" / "cmp" / "table.csv").open())) == table


@pytest.mark.e2e
def test_a_budget_sweep_spends_each_budget_and_pairs_the_runs(tmp_path):
    """A strategy at two budgets on the tiny model, beside one that never replays: none runs
    once, the fixed schedule spends each budget to the last sample (its interval derived from
    it), and the tables pair none with fixed at each budget (that every replaying strategy
    stays within its budget is tested on the schedulers themselves, in test_replay.py). Scored as
    a long comparison is (eval.seen_tasks=latest, future_tasks=none): each task right after its
    training and every task at the end, which every paired metric can read."""
    out = tmp_path / "out"
    proc = run_cli(
        "compare",
        str(ROOT / "configs" / "tiny.yaml"),
        f"run.output_dir={out}",
        "stream.train_size=16",
        "eval.seen_tasks=latest",
        "eval.future_tasks=none",
        "--strategies",
        "none,fixed",
        "--budgets",
        "0.1,0.25",
        "--name",
        "bud",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = list(csv.DictReader((out / "comparisons" / "bud" / "runs.csv").open()))
    assert sorted((r["strategy"], r["budget"]) for r in runs) == [
        ("fixed", "0.1"),
        ("fixed", "0.25"),
        ("none", "-"),
    ]
    for r in runs:
        spent, budget = float(r["replayed"]), r["replay_budget"]
        if r["strategy"] == "none":
            assert spent == 0
            continue
        assert spent == int(budget), r  # 5 tasks x 4 steps, 2 samples per event: the whole budget
    md = (out / "comparisons" / "bud" / "table.md").read_text()
    assert md.count("paired difference against fixed") == 3  # each budget's table, then the curves
    assert "budget 0.25: seeds: 0" in md
    curves = (out / "comparisons" / "bud" / "curves.md").read_text()
    assert "| AP at 10% | Δ AP at 10% | AP at 25% | Δ AP at 25% |" in curves and curves in md
    assert "| fixed | 1 |" in curves and "| none | 1 |" in curves
    intervals = list(csv.DictReader((out / "comparisons" / "bud" / "intervals.csv").open()))
    assert {(i["strategy"], i["budget"], i["metric"]) for i in intervals} >= {
        ("none", "0.1", "AP"),
        ("none", "0.25", "AP"),
        ("none", "0.1", "forgetting"),
        ("none", "0.25", "loss forgetting"),
    }
    assert all(math.isfinite(float(i[k])) for i in intervals for k in ("mean", "low", "high"))
    m = np.asarray(json.loads((out / "bud-fixed-b0.1-s0" / "summary.json").read_text())["accuracy_matrix"])
    lean = np.full((6, 5), False)
    lean[range(1, 6), range(5)] = True  # each task right after its training
    lean[5] = True  # every task at the end
    assert np.array_equal(~np.isnan(m), lean)


def test_strategy_plus_isolation_entries_set_both(tmp_path):
    from pipelines.compare import entry_overrides, plan_runs

    assert entry_overrides("mssr+epi") == ["replay.strategy=mssr", "isolation.method=epi"]
    assert entry_overrides("fixed") == ["replay.strategy=fixed"]
    planned = plan_runs(
        str(ROOT / "configs" / "tiny.yaml"),
        [f"run.output_dir={tmp_path}"],
        ["none", "none+static", "mssr+epi"],
        1,
        "iso",
    )
    assert [(p.cfg.replay.strategy, p.cfg.isolation.method, p.cfg.run.name) for p in planned] == [
        ("none", "none", "iso-none-s0"),
        ("none", "static", "iso-none_static-s0"),
        ("mssr", "epi", "iso-mssr_epi-s0"),
    ]


def test_budgets_run_every_replaying_strategy_at_each_budget_and_the_others_once(tmp_path):
    from pipelines.compare import parse_budgets, plan_runs

    planned = plan_runs(
        str(ROOT / "configs" / "tiny.yaml"),
        [f"run.output_dir={tmp_path}", "replay.fixed.interval=3"],
        ["none", "fixed", "mssr"],
        2,
        "bud",
        budgets=parse_budgets("0.05,0.1"),
    )
    names = [p.cfg.run.name for p in planned]
    assert names == [
        "bud-none-s0",
        "bud-fixed-b0.05-s0",
        "bud-mssr-b0.05-s0",
        "bud-fixed-b0.1-s0",
        "bud-mssr-b0.1-s0",
        "bud-none-s1",
        "bud-fixed-b0.05-s1",
        "bud-mssr-b0.05-s1",
        "bud-fixed-b0.1-s1",
        "bud-mssr-b0.1-s1",
    ]
    fixed = [p for p in planned if p.entry == "fixed"]
    # the budget is set, and the hand-set interval gives way to the one derived from the budget
    assert [(p.budget, p.cfg.replay.budget, p.cfg.replay.fixed.interval) for p in fixed[:2]] == [
        ("0.05", 0.05, None),
        ("0.1", 0.1, None),
    ]
    assert {p.budget for p in planned if p.entry == "none"} == {"-"}


def test_tuned_settings_apply_to_their_strategy_only(tmp_path):
    from pipelines.compare import load_tuned, parse_budgets, plan_runs

    (tmp_path / "a.yaml").write_text(
        "fixed: {replay.samples_per_event: 8, replay.balance_tasks: true, replay.fixed.interval: 2}\n"
        "mssr: {replay.scheduler: paced, replay.mssr.recall_margin: null}\n"
    )
    (tmp_path / "b.yaml").write_text("mssr: {replay.mssr.decay: 0.05}\n")  # a later file's entry wins
    tuned = load_tuned(f"{tmp_path / 'a.yaml'},{tmp_path / 'b.yaml'}")
    planned = plan_runs(
        str(ROOT / "configs" / "tiny.yaml"),
        [f"run.output_dir={tmp_path}"],
        ["none", "fixed", "mssr"],
        1,
        "tun",
        budgets=parse_budgets("0.1"),
        tuned=tuned,
    )
    cfg = {p.entry: p.cfg.replay for p in planned}
    assert (cfg["fixed"].samples_per_event, cfg["fixed"].balance_tasks) == (8, True)
    assert cfg["fixed"].fixed.interval is None  # the budget's derived interval still wins
    assert (cfg["mssr"].mssr.decay, cfg["mssr"].scheduler, cfg["mssr"].samples_per_event) == (0.05, None, 2)
    assert (cfg["none"].samples_per_event, cfg["none"].balance_tasks) == (2, None)


@pytest.mark.parametrize(
    "content,fragment",
    [
        ("fixd: {replay.samples_per_event: 8}\n", "fixed"),  # the nearest strategy name
        ("[1, 2]\n", "expected a mapping of strategy"),
        ("fixed: {\n", "not valid YAML"),
        ("fixed: {replay.samples_per_evnt: 8}\n", "samples_per_event"),
    ],
)
def test_bad_tuned_files_are_refused(tmp_path, content, fragment):
    from mssr.errors import ConfigError
    from pipelines.compare import load_tuned, plan_runs

    (tmp_path / "t.yaml").write_text(content)
    with pytest.raises(ConfigError, match=fragment):
        tuned = load_tuned(str(tmp_path / "t.yaml"))
        plan_runs(str(ROOT / "configs" / "tiny.yaml"), [f"run.output_dir={tmp_path}"], ["fixed"], 1, "t", tuned=tuned)
    with pytest.raises(ConfigError, match="cannot be read"):
        load_tuned(str(tmp_path / "missing.yaml"))


@pytest.mark.parametrize(
    "text,fragment", [("0.05,x", "expected numbers"), ("0.05,-1", "must be positive"), (",", "must be positive")]
)
def test_bad_budgets_are_refused(text, fragment):
    from mssr.errors import ConfigError
    from pipelines.compare import parse_budgets

    with pytest.raises(ConfigError, match=fragment):
        parse_budgets(text)


def _eval_rows(final_correct: int, n: int = 20, tasks: int = 2) -> dict:
    """Per-row results of a run: every task learned (all rows right), then task 1 keeps
    ``final_correct`` of its ``n`` rows at the end."""
    scores = [[[0.0] * n for _ in range(tasks)]]
    for k in range(1, tasks + 1):
        scores.append([[1.0] * n if j < k else [0.0] * n for j in range(tasks)])
    scores[-1][0] = [1.0] * final_correct + [0.0] * (n - final_correct)
    losses = [[[1.0 - v for v in row] for row in step] for step in scores]
    return {"tasks": [f"t{j}" for j in range(tasks)], "scores": scores, "losses": losses}


def test_paired_differences_against_the_reference_with_intervals():
    from pipelines.compare import format_markdown, paired_differences

    runs = [{"strategy": "fixed", "seed": s, "eval_rows": _eval_rows(10)} for s in (0, 1)]
    runs += [{"strategy": "mssr", "seed": s, "eval_rows": _eval_rows(16)} for s in (0, 1)]
    runs += [{"strategy": "none", "seed": 0, "eval_rows": _eval_rows(2)}, {"strategy": "loss", "seed": 0, "error": "x"}]
    diffs = {d["strategy"]: d for d in paired_differences(runs, "fixed", n_boot=500)}
    assert set(diffs) == {"mssr", "none"}  # the failed run has nothing to pair
    mssr = diffs["mssr"]
    # task 1 keeps 16 instead of 10 of 20 rows: AP +0.15, BWT and forgetting 0.3 better
    assert mssr["AP"].mean == pytest.approx(0.15) and mssr["AP"].low > 0 and mssr["AP"].excludes_zero
    assert mssr["BWT"].mean == pytest.approx(0.3) and mssr["forgetting"].mean == pytest.approx(-0.3)
    assert mssr["loss forgetting"].mean == pytest.approx(-0.3) and diffs["none"]["seeds"] == 1
    md = format_markdown([], [0, 1], list(diffs.values()), budget="0.05")
    assert md.startswith("budget 0.05: seeds: 0, 1") and "paired difference against fixed" in md
    assert "| mssr | 2 | +0.150 [" in md and "mssr - fixed: AP interval ±" in md
    assert "none - fixed: AP interval ±" in md and "over 1 seed (test rows only" in md


def test_the_noise_line_sizes_seeds_and_rows_together_when_neither_alone_reaches_the_target():
    import re

    from mssr.intervals import PairedDifference, projected_half_width
    from pipelines.compare import TARGET_HALF_WIDTH, _noise_line

    # the row part alone (2e-4) and the seed part at 3 seeds (0.01 / 3) are each wider than ±0.02
    noise = {"seed_var": 0.01, "row_var": 2e-4, "n_seeds": 3, "rows_per_task": 100.0}
    ap = PairedDifference("AP", 0.0, -0.1, 0.1, 0.95, 3, 500)
    row = {"strategy": "mssr", "reference": "fixed", "seeds": 3, "noise": noise, "AP": ap}
    line = _noise_line(row)
    assert "would need both more seeds and more test rows" in line
    options = re.findall(r"about (\d+) seeds at (\d+)x the test rows", line)
    assert [int(f) for _, f in options] == [2, 4]
    for n, factor in ((int(n), int(f)) for n, f in options):  # each is the fewest seeds at its rows
        assert projected_half_width(noise, n, factor) <= TARGET_HALF_WIDTH < projected_half_width(noise, n - 1, factor)
    # with little seed noise, more seeds alone suffice and the line says how many
    quiet = {**noise, "seed_var": 1e-4, "row_var": 1e-5}
    assert re.search(r"would need about \d+ seeds at these test rows", _noise_line({**row, "noise": quiet}))


def test_a_kept_run_must_hold_the_same_config_but_may_lack_settings_added_at_their_default(tmp_path):
    """A comparison continued with a newer MSSR keeps its finished runs when the only change is
    a setting added since, left at its default; any other change is refused, naming it."""
    import yaml

    from mssr.config import config_to_dict
    from mssr.errors import ConfigError
    from pipelines.compare import config_differences, plan_runs

    def plan(*overrides):
        args = [f"run.output_dir={tmp_path}", *overrides]
        return plan_runs(str(ROOT / "configs" / "tiny.yaml"), args, ["fixed"], 1, "k")[0].cfg

    cfg = plan()
    saved = config_to_dict(cfg)
    del saved["eval"]["seen_tasks"]  # a run from before the setting existed
    saved["run"]["output_dir"] = "/elsewhere"  # and moved since
    (tmp_path / cfg.run.name).mkdir()
    (tmp_path / cfg.run.name / "config.yaml").write_text(yaml.safe_dump(saved))
    assert config_differences(saved, config_to_dict(cfg)) == []
    plan()  # kept
    with pytest.raises(ConfigError, match=r"eval.seen_tasks: \(not set\) -> latest"):
        plan("eval.seen_tasks=latest")
    with pytest.raises(ConfigError, match="replay.samples_per_event: 2 -> 4"):
        plan("replay.samples_per_event=4")


def test_time_left_is_the_mean_finished_run_times_the_runs_left():
    from pipelines.compare import time_left

    assert time_left([], 5) == ""
    assert time_left([600.0, 900.0], 0) == ""
    assert time_left([600.0, 900.0], 10) == " (about 2h05m left: 10 runs at the 12.5 min a finished run took)"


def test_one_tuned_file_serves_comparisons_of_fewer_strategies(tmp_path):
    from pipelines.compare import load_tuned, plan_runs

    (tmp_path / "t.yaml").write_text("fixed: {replay.samples_per_event: 8}\nloss: {replay.loss.z: 1.5}\n")
    planned = plan_runs(
        str(ROOT / "configs" / "tiny.yaml"),
        [f"run.output_dir={tmp_path}"],
        ["fixed"],
        1,
        "t",
        tuned=load_tuned(str(tmp_path / "t.yaml")),
    )
    assert [(p.entry, p.cfg.replay.samples_per_event) for p in planned] == [("fixed", 8)]


def test_budget_curves_put_every_budget_of_a_strategy_on_one_row():
    from pipelines.compare import ANY_BUDGET, aggregate, format_budget_curves, paired_differences

    def run(strategy, seed, budget, kept, replay_tok):
        row = _row(strategy, seed, ap=kept / 20)
        return {**row, "budget": budget, "replay tok": replay_tok, "eval_rows": _eval_rows(kept)}

    runs = [run("none", s, ANY_BUDGET, 4, 0) for s in (0, 1)]
    for budget, fixed_kept, mssr_kept in (("0.05", 10, 16), ("0.1", 12, 8)):
        runs += [run("fixed", s, budget, fixed_kept, 100 if budget == "0.05" else 200) for s in (0, 1)]
        runs += [run("mssr", s, budget, mssr_kept, 90) for s in (0, 1)]
    groups = []
    for budget in ("0.05", "0.1"):
        group = [r for r in runs if r["budget"] in (budget, ANY_BUDGET)]
        groups.append((budget, aggregate(group), paired_differences(group, "fixed", n_boot=200)))
    md = format_budget_curves(groups)
    lines = {line.split(" | ")[0].strip("| "): line for line in md.splitlines() if line.startswith("| ")}
    assert "| AP at 5% | Δ AP at 5% | AP at 10% | Δ AP at 10% | replay tok (5% / 10%) |" in lines["strategy"]
    assert lines["fixed"].startswith("| fixed | 2 | 0.500 | reference | 0.600 | reference | 100 / 200 |")
    # mssr keeps 16 then 8 of task 1's 20 rows against fixed's 10 then 12: +0.15 then -0.10 AP
    assert lines["mssr"].startswith("| mssr | 2 | 0.800 | +0.150 [") and "| 0.400 | -0.100 [" in lines["mssr"]
    assert "| 90 / 90 |" in lines["mssr"] and lines["none"].startswith("| none | 2 | 0.200 | -0.150 [")
    assert format_budget_curves([("config", aggregate(runs[:2]), [])]) == ""  # no --budgets: no curve
