"""``mssr compare``: the table arithmetic, its errors, and one real comparison end to end."""

import csv
import json
import math

import numpy as np
import pyarrow.dataset as pads
import pytest

from mssr.sample_ids import task_of
from pipelines.analysis import aggregate, format_markdown, per_row_results
from tests.conftest import ROOT, run_cli


def _row(strategy, seed, ap, step=0.1):
    base = {
        "AP": ap,
        "BWT": -0.1,
        "FWT": 0.0,
        "forgetting": 0.2,
        "Avg": 0.4,
        "final loss": 1.0,
        "anytime loss": 0.8,
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
    md = format_markdown(list(table.values()), "seeds 0, 1", primary="ap")
    assert "| mssr | 0.600 ± 0.141 |" in md and "| loss | failed |" in md
    assert md.splitlines()[2].startswith("| strategy | AP | BWT |")  # the primary metric leads
    md = format_markdown(list(table.values()), "seeds 0, 1")
    assert md.splitlines()[2].startswith("| strategy | final loss | AP |")


def test_overhead_is_probe_and_bookkeeping_seconds_as_a_share_of_training():
    from pipelines.analysis import overhead_percent

    summary = {"probe_seconds": 1.0, "bookkeeping_seconds": 0.5, "train_seconds": 100.0}
    assert overhead_percent(summary) == pytest.approx(1.5)
    assert math.isnan(overhead_percent({**summary, "train_seconds": None}))  # a run that did not record it


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
    assert len({task_of(int(i)) for i in ids}) == 5

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


def _check_paired_within_blocks(intervals: list[dict], summaries: dict) -> None:
    """The budget sweep's intervals: every paired metric but the anytime loss, finite, and the
    mean of none - fixed in each order (block), not across orders."""
    assert {(i["strategy"], i["budget"], i["metric"]) for i in intervals} >= {
        ("none", "0.1", "AP"),
        ("none", "0.25", "final loss"),
        ("none", "0.1", "forgetting"),
        ("none", "0.25", "loss forgetting"),
    }
    assert not any(i["metric"] == "anytime loss" for i in intervals)  # its cells were not scored
    assert all(math.isfinite(float(i[k])) for i in intervals for k in ("mean", "low", "high"))
    # paired within blocks: the mean of none - fixed in each order, not across orders
    for budget in ("0.1", "0.25"):
        (row,) = [i for i in intervals if (i["budget"], i["metric"]) == (budget, "final loss")]
        per_block = [
            summaries[f"bud-none-s0-o{o}"]["loss_final"] - summaries[f"bud-fixed-b{budget}-s0-o{o}"]["loss_final"]
            for o in (0, 1)
        ]
        assert row["blocks"] == "2" and float(row["mean"]) == pytest.approx(np.mean(per_block))


@pytest.mark.e2e
def test_a_budget_sweep_over_two_task_orders_spends_each_budget_and_pairs_within_blocks(tmp_path):
    """A strategy at two budgets on the tiny model, beside one that never replays, in two task
    orders of seed 0 (two blocks): none runs once a block, the fixed schedule spends each budget
    to the last sample (its interval derived from it), and the tables pair none with fixed
    within each block at each budget (that every replaying strategy stays within its budget is
    tested on the schedulers themselves, in test_replay.py). Scored as a long comparison is
    (eval.seen_tasks=latest, future_tasks=none): each task right after its training and every
    task at the end, which every paired metric but the anytime loss can read."""
    out = tmp_path / "out"
    scored = ["stream.train_size=16", "eval.seen_tasks=latest", "eval.future_tasks=none"]
    sweep = ["--strategies", "none,fixed", "--budgets", "0.1,0.25", "--seeds", "1", "--orders", "2", "--detect", "0.5"]
    config = str(ROOT / "configs" / "tiny.yaml")
    proc = run_cli("compare", config, f"run.output_dir={out}", *scored, *sweep, "--name", "bud", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = list(csv.DictReader((out / "comparisons" / "bud" / "runs.csv").open()))
    assert sorted((r["strategy"], r["budget"], r["order"]) for r in runs) == [
        ("fixed", "0.1", ""),
        ("fixed", "0.1", "1"),
        ("fixed", "0.25", ""),
        ("fixed", "0.25", "1"),
        ("none", "-", ""),
        ("none", "-", "1"),
    ]
    for r in runs:
        spent, budget = float(r["replayed"]), r["replay_budget"]
        if r["strategy"] == "none":
            assert spent == 0
            continue
        assert spent == int(budget), r  # 5 tasks x 4 steps, 2 samples per event: the whole budget
    summaries = {d.name: json.loads((d / "summary.json").read_text()) for d in out.glob("bud-*")}
    listed, shuffled = summaries["bud-none-s0-o0"]["tasks"], summaries["bud-none-s0-o1"]["tasks"]
    assert sorted(listed) == sorted(shuffled) and listed != shuffled  # two orders of the same tasks
    assert summaries["bud-fixed-b0.1-s0-o1"]["tasks"] == shuffled
    md = (out / "comparisons" / "bud" / "table.md").read_text()
    assert md.count("paired difference against fixed") == 3  # each budget's table, then the curves
    assert "budget 0.25: blocks: seeds 0 x orders listed, 1" in md
    assert "none - fixed, final loss: " in md
    assert "detecting 0.5 takes" in md or "no number of blocks detects 0.5" in md
    curves = (out / "comparisons" / "bud" / "curves.md").read_text()
    assert "| final loss at 10% | Δ final loss at 10% | AP at 10% | Δ AP at 10% | final loss at 25% |" in curves
    assert curves in md and "| fixed | 2 |" in curves and "| none | 2 |" in curves
    _check_paired_within_blocks(list(csv.DictReader((out / "comparisons" / "bud" / "intervals.csv").open())), summaries)
    m = np.asarray(summaries["bud-fixed-b0.1-s0-o0"]["accuracy_matrix"])
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
    from pipelines.analysis import format_markdown, paired_differences, paired_metrics

    runs = [{"strategy": "fixed", "seed": s, "eval_rows": _eval_rows(10 - s)} for s in (0, 1, 2)]
    runs += [{"strategy": "mssr", "seed": s, "eval_rows": _eval_rows(16 - s)} for s in (0, 1, 2)]
    runs += [{"strategy": "none", "seed": 0, "eval_rows": _eval_rows(2)}, {"strategy": "loss", "seed": 0, "error": "x"}]
    metrics = paired_metrics("loss_final")
    diffs = {d["strategy"]: d for d in paired_differences(runs, "fixed", metrics)}
    assert set(diffs) == {"mssr", "none"}  # the failed run has nothing to pair
    mssr = diffs["mssr"]
    # task 1 keeps 6 more of its 20 rows in every block: AP +0.15, final loss -0.15, BWT and forgetting 0.3 better
    assert mssr["ap"].mean == pytest.approx(0.15) and mssr["ap"].excludes_zero
    assert mssr["loss_final"].mean == pytest.approx(-0.15) and mssr["loss_final"].high < 0
    assert mssr["bwt"].mean == pytest.approx(0.3) and mssr["forgetting"].mean == pytest.approx(-0.3)
    assert mssr["loss_forgetting"].mean == pytest.approx(-0.3) and diffs["none"]["seeds"] == 1
    assert mssr["loss_anytime"].mean == pytest.approx(-0.15 / 2)  # the last of task 1's two evaluations
    md = format_markdown([], "seeds 0, 1, 2", list(diffs.values()), budget="0.05")
    assert md.startswith("budget 0.05: blocks: seeds 0, 1, 2") and "paired difference against fixed" in md
    assert "| Δ final loss | Δ AP | Δ anytime loss |" in md and "| mssr | 3 | -0.150 [" in md
    assert "mssr - fixed, final loss: resolved (-0.150 [" in md and "3 blocks detect a difference of" in md
    assert "none - fixed, final loss: resolved over 1 block (the interval holds the test rows" in md
    assert "mixed" not in md


def test_pairs_across_processors_or_precisions_are_refused_unless_allowed():
    from mssr.errors import UserError
    from pipelines.analysis import MixedPairs, format_markdown, paired_differences

    amd, xeon = "AMD EPYC / fp32 / bf16-autocast", "Intel Xeon / fp32 / fp32"
    runs = [{"strategy": "fixed", "seed": s, "machine": amd, "eval_rows": _eval_rows(10)} for s in (0, 1)]
    runs += [
        {"strategy": "mssr", "seed": s, "machine": m, "eval_rows": _eval_rows(16)} for s, m in ((0, amd), (1, xeon))
    ]
    with pytest.raises(MixedPairs, match="seed 1: mssr ran on Intel Xeon / fp32 / fp32 and fixed on AMD EPYC"):
        paired_differences(runs, "fixed", ["ap"])
    assert issubclass(MixedPairs, UserError)  # one line on the command line, exit 2
    (row,) = paired_differences(runs, "fixed", ["ap"], allow_mixed=True)
    assert row["mixed"] == 1
    md = format_markdown([], "seeds 0, 1", [row], primary="ap")
    assert "| strategy | blocks | mixed | Δ AP |" in md and "| mssr | 2 | 1 |" in md


def test_blocks_pair_by_seed_and_task_order():
    """Runs of one seed in two task orders are two blocks; each pairs with its own order's
    reference, and a task's rows are matched by its name whatever its position."""
    from pipelines.analysis import blocks_text, paired_differences

    def reordered(rows):
        return {k: (v[::-1] if k == "tasks" else [[step[1], step[0]] for step in v]) for k, v in rows.items()}

    runs = []
    for order, shift in ((None, 0), (1, 1)):
        for strategy, kept in (("fixed", 10), ("mssr", 16)):
            rows = _eval_rows(kept - 2 * shift)
            runs.append({"strategy": strategy, "seed": 0, "order": order, "eval_rows": rows if order is None else rows})
    (row,) = paired_differences(runs, "fixed", ["ap"])
    assert row["seeds"] == 2 and row["ap"].mean == pytest.approx(0.3 / 2)
    assert blocks_text(runs) == "seeds 0 x orders listed, 1"
    amd, xeon = "AMD EPYC / fp32 / fp32", "Intel Xeon / fp32 / fp32"  # blocks on two machines are counted
    ran = [{**r, "machine": amd if r["order"] is None else xeon} for r in runs]
    assert blocks_text(ran) == f"seeds 0 x orders listed, 1; machines: {amd} 1 block, {xeon} 1 block"
    ran[-1]["machine"] = amd
    assert blocks_text(ran) == f"seeds 0 x orders listed, 1; machines: {amd} 1 block, mixed 1 block"
    # the second block trains the tasks the other way round: the same data, laid out reversed
    moved = runs[:2] + [{**r, "eval_rows": reordered(r["eval_rows"])} for r in runs[2:]]
    (again,) = paired_differences(moved, "fixed", ["loss_final"])
    (same,) = paired_differences(runs, "fixed", ["loss_final"])
    assert (again["loss_final"].mean, again["loss_final"].row_var) == pytest.approx(
        (same["loss_final"].mean, same["loss_final"].row_var)
    )


def test_the_resolution_line_says_what_the_blocks_detect_and_what_a_difference_needs():
    from mssr.intervals import PairedDifference, blocks_needed
    from pipelines.analysis import resolution_line

    d = PairedDifference("final loss", -0.082, -0.248, 0.083, 0.95, 3, 0.072**2, 0.011**2, 2.3, 3.0)
    row = {"strategy": "mssr", "reference": "fixed", "loss_final": d}
    line = resolution_line(row, "loss_final", detect=0.1)
    assert line.startswith("mssr - fixed, final loss: no difference resolved (-0.082 [-0.248, +0.083], 3 blocks")
    assert f"3 blocks detect a difference of {d.detectable():.3f} at 80% power" in line
    assert line.endswith(f"detecting 0.1 takes about {blocks_needed(d, 0.1)} blocks")
    assert "no number of blocks detects 0.01" in resolution_line(row, "loss_final", detect=0.01)
    assert resolution_line({**row, "loss_final": None}, "loss_final").endswith(
        "not measured (the runs did not score the cells it reads)"
    )


def test_a_kept_run_must_hold_the_same_config_but_may_lack_settings_added_at_their_default(tmp_path):
    """A comparison continued with a newer MSSR keeps its finished runs when the only change is
    a setting added since, left at its default; any other change is refused, naming it."""
    import yaml

    from mssr.config import config_differences, config_to_dict
    from mssr.errors import ConfigError
    from pipelines.compare import plan_runs

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
    from pipelines.analysis import ANY_BUDGET, aggregate, format_budget_curves, paired_differences, paired_metrics

    def run(strategy, seed, budget, kept, replay_tok):
        row = _row(strategy, seed, ap=kept / 20)
        row["final loss"] = 1 - kept / 20
        return {**row, "budget": budget, "replay tok": replay_tok, "eval_rows": _eval_rows(kept + seed)}

    runs = [run("none", s, ANY_BUDGET, 4, 0) for s in (0, 1)]
    for budget, fixed_kept, mssr_kept in (("0.05", 10, 16), ("0.1", 12, 8)):
        runs += [run("fixed", s, budget, fixed_kept, 100 if budget == "0.05" else 200) for s in (0, 1)]
        runs += [run("mssr", s, budget, mssr_kept, 90) for s in (0, 1)]
    groups = []
    for budget in ("0.05", "0.1"):
        group = [r for r in runs if r["budget"] in (budget, ANY_BUDGET)]
        groups.append((budget, aggregate(group), paired_differences(group, "fixed", paired_metrics("ap"))))
    md = format_budget_curves(groups, primary="ap")
    lines = {line.split(" | ")[0].strip("| "): line for line in md.splitlines() if line.startswith("| ")}
    assert "| AP at 5% | Δ AP at 5% | AP at 10% | Δ AP at 10% | replay tok (5% / 10%) |" in lines["strategy"]
    assert lines["fixed"].startswith("| fixed | 2 | 0.500 | reference | 0.600 | reference | 100 / 200 |")
    # mssr keeps 16 then 8 of task 1's 20 rows against fixed's 10 then 12: +0.15 then -0.10 AP
    assert lines["mssr"].startswith("| mssr | 2 | 0.800 | +0.150 [") and "| 0.400 | -0.100 [" in lines["mssr"]
    assert "| 90 / 90 |" in lines["mssr"] and lines["none"].startswith("| none | 2 | 0.200 | -0.150 [")
    # the default primary metric leads, AP beside it
    loss_groups = [
        (b, t, paired_differences(runs_at_budget(runs, b), "fixed", paired_metrics("loss_final"))) for b, t, _ in groups
    ]
    head = format_budget_curves(loss_groups).splitlines()[2]
    assert head.startswith("| strategy | blocks | final loss at 5% | Δ final loss at 5% | AP at 5% | Δ AP at 5% |")
    assert format_budget_curves([("config", aggregate(runs[:2]), [])]) == ""  # no --budgets: no curve


def runs_at_budget(runs, budget):
    from pipelines.analysis import runs_at

    return runs_at(runs, budget)


def test_analyse_recomputes_the_tables_of_kept_run_directories(tmp_path):
    """mssr analyse on run directories: the entry and budget from each run's config.yaml, the
    block from its seed and order; bad paths are one-line errors."""
    import shutil

    kept = ROOT / "docs" / "results" / "abl16-runs"
    for d in sorted(kept.glob("abl16-*-s[01]")):
        if "sampler" not in d.name and "scheduler" not in d.name:
            shutil.copytree(d, tmp_path / "runs" / d.name)
    proc = run_cli("analyse", str(tmp_path / "runs"), "--out", str(tmp_path / "an"), "--primary", "ap", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    intervals = list(csv.DictReader((tmp_path / "an" / "intervals.csv").open()))
    ap = next(i for i in intervals if i["metric"] == "AP")
    summaries = {d.name: json.loads((d / "summary.json").read_text()) for d in (tmp_path / "runs").iterdir()}
    per_block = [summaries[f"abl16-mssr-b0.1-s{s}"]["ap"] - summaries[f"abl16-fixed-b0.1-s{s}"]["ap"] for s in (0, 1)]
    assert (ap["strategy"], ap["budget"], ap["blocks"]) == ("mssr", "0.1", "2")
    assert float(ap["mean"]) == pytest.approx(np.mean(per_block))
    assert "budget 0.1: blocks: seeds 0, 1" in proc.stdout
    missing = run_cli("analyse", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert missing.returncode == 2 and "no such directory" in missing.stderr and "Traceback" not in missing.stderr


def test_a_comparison_whose_test_prompts_a_sweep_saw_is_refused_before_anything_runs(tmp_path):
    """--tuned files record the stream they were tuned on; a comparison scoring a prompt among
    that stream's rows is refused in one line, and one on the evaluation part is not."""
    import yaml

    from mssr.config import config_to_dict, load_config
    from mssr.errors import ConfigError
    from pipelines.compare import _evaluation_part, check_tuning_disjoint, tuned_on_streams

    tiny = str(ROOT / "configs" / "tiny.yaml")
    swept = config_to_dict(load_config(tiny, ["stream.split=tune"]))["stream"]
    (tmp_path / "best.yaml").write_text(yaml.safe_dump({"fixed": {"replay.samples_per_event": 4}, "tuned_on": swept}))
    tuned_on = tuned_on_streams(str(tmp_path / "best.yaml"))
    assert tuned_on == {str(tmp_path / "best.yaml"): swept}
    said = []
    assert _evaluation_part(tiny, [], said.append) == ["stream.split=eval"] and "stream.split=eval" in said[0]
    check_tuning_disjoint(tuned_on, load_config(tiny, ["stream.split=eval"]), said.append)  # disjoint: accepted
    with pytest.raises(ConfigError, match=r"--tuned: the sweep's rows include \d+ of \w+'s \d+ test prompts"):
        check_tuning_disjoint(tuned_on, load_config(tiny, ["stream.split=all"]), said.append)
    with pytest.raises(ConfigError, match="a comparison scores the evaluation part"):
        _evaluation_part(tiny, ["stream.split=tune"], said.append)
    check_tuning_disjoint({"old.yaml": None}, load_config(tiny), said.append)
    assert said[-1] == "--tuned old.yaml: it does not record the stream it was tuned on, so its rows cannot be checked"

    out = tmp_path / "out"
    proc = run_cli(
        "compare", tiny, f"run.output_dir={out}", "stream.split=all", "--strategies", "fixed",
        "--tuned", str(tmp_path / "best.yaml"), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2 and "test prompts" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not out.exists()


def test_a_kept_run_from_another_processor_kind_is_refused_before_anything_runs(tmp_path):
    import yaml

    from mssr.config import config_to_dict
    from pipelines.analysis import MixedPairs
    from pipelines.compare import check_kept_runs_pair, plan_runs, this_machine

    def plan():
        return plan_runs(
            str(ROOT / "configs" / "tiny.yaml"), [f"run.output_dir={tmp_path}"], ["none", "fixed"], 1, "mx"
        )

    kept = plan()[1].cfg  # fixed, seed 0: finished earlier on another machine
    (tmp_path / kept.run.name).mkdir()
    (tmp_path / kept.run.name / "config.yaml").write_text(yaml.safe_dump(config_to_dict(kept)))
    provenance = {"processor_kind": "Other CPU", "train_precision": "fp32", "eval_precision": "fp32"}
    (tmp_path / kept.run.name / "summary.json").write_text(json.dumps({"provenance": provenance}))
    said = []
    assert this_machine(kept).count(" / ") == 2
    with pytest.raises(MixedPairs, match="seed 0: its runs would pair different processor kinds or precisions"):
        check_kept_runs_pair(plan(), False, said.append)
    check_kept_runs_pair(plan(), True, said.append)
    assert "mixes processor kinds or precisions (--allow-mixed)" in said[-1]

    # made by another version of the code: said, not refused
    from pipelines.compare import note_kept_commits

    said.clear()
    note_kept_commits(plan(), said.append, commit="b" * 40)
    assert said == []  # the kept run's provenance names no commit
    provenance["commit"] = "a" * 40
    (tmp_path / kept.run.name / "summary.json").write_text(json.dumps({"provenance": provenance}))
    note_kept_commits(plan(), said.append, commit="a" * 40)
    assert said == []  # the same commit
    note_kept_commits(plan(), said.append, commit="b" * 40)
    (line,) = said
    assert line.startswith("kept runs made by other code than this (bbbbbbb): 1 at aaaaaaa;"), line
