"""``mssr report``: an HTML page across the runs of a comparison, read back from a real MLflow store."""

import json
import re

import pytest

from mssr.errors import ConfigError
from pipelines.artifacts import write_matrix_artifacts
from pipelines.report import build_report
from pipelines.tracking import fail_run, finish_run, start_run
from tests.conftest import ROOT, run_cli

TASKS = ["alpha", "beta", "gamma"]


def _matrix(drop):
    return [[0.0, 0.0, 0.0], [0.8, 0.1, 0.0], [0.8 - drop, 0.7, 0.1], [0.8 - 2 * drop, 0.7 - drop, 0.9]]


def _artifacts(d, m):
    """The accuracy and loss matrices, and 10 test rows per task whose means are ``m``."""
    rows = [[[1.0] * round(10 * v) + [0.0] * (10 - round(10 * v)) for v in row] for row in m]
    losses = [[[1.0 - x for x in task] for task in row] for row in rows]
    (d / "eval_rows.json").write_text(json.dumps({"tasks": TASKS, "scores": rows, "losses": losses}))
    loss_matrix = [[1.0 - v for v in row] for row in m]
    return (
        write_matrix_artifacts(d, m, TASKS)
        + write_matrix_artifacts(d, loss_matrix, TASKS, kind="loss")
        + [d / "eval_rows.json"]
    )


def _store(tmp_path, budgets=("-",), name="cmp"):
    """A comparison (fixed and mssr+epi, 2 seeds each, at each budget, one failed run) and a sweep "sw"."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for budget in budgets:
        for strategy, iso, drop in (("fixed", "none", 0.2), ("mssr", "epi", 0.1)):
            for seed in (0, 1):
                d = tmp_path / f"{name}-{strategy}-{seed}-{budget}"
                d.mkdir()
                m = _matrix(drop + 0.1 * seed)
                run_id = start_run(
                    uri,
                    "mssr",
                    f"{name}-{strategy}-b{budget}-s{seed}",
                    {"seed": seed, "replay.strategy": strategy, "isolation.method": iso},
                    tags={"comparison_id": name, "strategy": strategy, "budget": budget},
                )
                finish_run(
                    uri,
                    run_id,
                    {"ap": sum(m[-1]) / 3, "bwt": -drop, "fwt": 0.0, "forgetting": drop, "replay_samples": 48},
                    _artifacts(d, m),
                )
    failed = start_run(uri, "mssr", f"{name}-loss-s0", {"seed": 0}, tags={"comparison_id": name, "strategy": "loss"})
    fail_run(uri, failed)
    start_run(uri, "mssr", "sw", {}, tags={"sweep_id": "sw", "kind": "sweep"})
    return uri


def test_report_of_a_comparison(tmp_path):
    uri = _store(tmp_path)
    index = build_report("cmp", uri, tmp_path / "report")
    page = index.read_text()
    for name in ("cmp-fixed-b--s0", "cmp-fixed-b--s1", "cmp-mssr-b--s0", "cmp-mssr-b--s1"):
        assert f"<td>{name}</td>" in page
    assert "<td>mssr+epi</td>" in page and "<td>fixed</td>" in page
    assert "cmp-loss-s0 (FAILED)" in page  # listed, not drawn
    pngs = sorted(p.name for p in (tmp_path / "report").glob("*.png"))
    assert pngs == [
        "bars.png",
        "curve_00.png",
        "curve_01.png",
        "curve_02.png",
        "heatmap_000.png",
        "heatmap_001.png",
        "heatmap_002.png",
        "heatmap_003.png",
        "loss_heatmap_000.png",
        "loss_heatmap_001.png",
        "loss_heatmap_002.png",
        "loss_heatmap_003.png",
    ]
    assert all(f"src='{p}'" in page or f'src="{p}"' in page for p in pngs)
    # mssr+epi forgets 0.1 less of each earlier task: AP +0.1 ((0.2 + 0.1) / 3), paired against fixed
    # the cells: the primary metric (final loss) first, then AP
    row = re.search(r"<tr><td>mssr\+epi</td><td>2</td>(.*?)</tr>", page).group(1)
    assert "<h3>Against fixed</h3>" in page and re.findall(r"<td>(.*?)</td>", row)[1].startswith("+0.100 [")
    assert "budgets.png" not in page  # one budget: no curve


def test_report_of_a_budget_sweep_draws_budget_curves(tmp_path):
    uri = _store(tmp_path, budgets=("0.05", "0.1"), name="bud")
    page = build_report("bud", uri, tmp_path / "report").read_text()
    assert (tmp_path / "report" / "budgets.png").stat().st_size > 10_000 and "budgets.png" in page
    assert "<h3>Against fixed (budget 0.05)</h3>" in page and "<h3>Against fixed (budget 0.1)</h3>" in page


def test_unknown_id_and_a_sweep_without_finished_trials(tmp_path):
    uri = _store(tmp_path)
    with pytest.raises(ConfigError, match="no comparison, sweep or experiment"):
        build_report("nope", uri, tmp_path / "r1")
    with pytest.raises(ConfigError, match="no comparison, sweep or experiment"):  # only the sweep's parent run
        build_report("sw", uri, tmp_path / "r2")


def test_report_command(tmp_path):
    _store(tmp_path)
    proc = run_cli("report", "cmp", "--output-dir", str(tmp_path), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "reports" / "cmp" / "index.html").is_file()
    missing = run_cli("report", "cmp", "--output-dir", str(tmp_path / "nowhere"), cwd=ROOT)
    assert missing.returncode == 2 and "no MLflow store" in missing.stderr
