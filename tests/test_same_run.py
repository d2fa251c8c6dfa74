"""benchmarks/same_run.py: two runs are the same only when every matrix cell, replay count,
replay event and plan line is."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAN = float("nan")


def _run(folder: Path, loss_cell=0.5, plan='{"step": 0, "replay": [3], "probe": []}\n') -> Path:
    folder.mkdir(parents=True)
    summary = {
        "accuracy_matrix": [[NAN, NAN], [1.0, NAN], [0.5, 1.0]],
        "loss_matrix": [[NAN, NAN], [0.2, NAN], [loss_cell, 0.1]],
        "replay_samples": 4,
        "replay_events": 1,
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "plans").mkdir()
    (folder / "plans" / "rank_0.jsonl").write_text(plan)
    return folder


def _same_run(a: Path, b: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "same_run.py"), str(a), str(b)], capture_output=True, text=True
    )


def test_the_same_run_made_twice_passes(tmp_path):
    done = _same_run(_run(tmp_path / "a"), _run(tmp_path / "b"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "the same run (matrices, replay counts, replay events, plans compared)" in done.stdout


def test_the_smallest_difference_in_a_cell_or_a_plan_fails(tmp_path):
    done = _same_run(_run(tmp_path / "a"), _run(tmp_path / "b", loss_cell=0.5 + 1e-12))
    assert done.returncode == 1 and "loss_matrix: cells differ by up to 1e-12" in done.stdout
    other_plan = '{"step": 0, "replay": [4], "probe": []}\n'
    done = _same_run(_run(tmp_path / "c"), _run(tmp_path / "d", plan=other_plan))
    assert done.returncode == 1 and "plans differ: rank_0.jsonl" in done.stdout


def test_a_folder_without_a_finished_run_is_refused(tmp_path):
    done = _same_run(_run(tmp_path / "a"), tmp_path)
    assert done.returncode == 2 and "no summary.json" in done.stderr and "Traceback" not in done.stderr
