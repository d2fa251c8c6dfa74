"""The gate for a forgetting model: a prequential test on kept replay logs.

    .venv/bin/python benchmarks/forgetting_gate.py docs/results/long16-runs docs/results/abl16-runs
    .venv/bin/python benchmarks/forgetting_gate.py docs/results/long16-runs --json gate.json

Each finished run's ``diagnostics.json`` keeps its replay log: every replayed sample's step,
task, loss, the loss its task was learned to (``entry_loss``, the task's mean training loss
over its last quarter of steps) and what the memory model predicted for it (retention R). An
**observation** is one task at one replay event: the mean excess loss ``loss - entry_loss``
of the task's replayed samples. Going through a run's observations in step order, each
predictor (``mssr.forgetting.FORGETTING_MODELS``, and today's memory model, whose 1 - R the log holds)
predicts the observation from the earlier ones only, then is shown it. Printed per predictor,
over the runs (mean and range over runs):

* **Spearman**: rank correlation of prediction and observation over all of a run's observations;
* **within events**: the same within each replay event that drew from 3 tasks or more, averaged:
  what a sampler splitting an event's draws over tasks needs;
* **MAE**: mean absolute error in nats (not for 1 - R, which is not in nats);
* **at the end**: after the last observation, each predictor's prediction for every task at
  the run's last replay step, ranked against the rise of the task's test answer loss from
  right after its training to the end (the loss matrix's last row less its diagonal): which
  tasks the run forgot most. For 1 - R, the task's last logged value.

The excess is measured against each replayed sample's own reference loss (its loss in a
no-grad pass when its task ended) where the run measured one (``replay.reference_pass``),
else against its task's mean training loss, which leaves each sample's own difficulty in the
excess as noise; the header of each folder's table says how many samples had a reference.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mssr.forgetting import FORGETTING_MODELS, prequential, replay_observations  # noqa: E402

MODELS = FORGETTING_MODELS.names()

RETENTION = "memory model (1 - R)"


def predictions(obs: list[dict]) -> tuple[dict[str, np.ndarray], dict[str, dict[int, float]]]:
    """Each predictor's prequential prediction of every observation, and of every observed
    task at the last observation's step once it has seen them all."""
    last_step = max(o["step"] for o in obs)
    entries = {o["task"]: o["entry"] for o in obs}
    out = {RETENTION: np.array([o["forgotten"] for o in obs])}
    end = {RETENTION: {o["task"]: o["forgotten"] for o in obs}}  # each task's last value
    for name in MODELS:
        out[name], model = prequential(name, obs)
        end[name] = {task: model.predict(task, last_step, entry) for task, entry in entries.items()}
    return out, end


def loss_rise(summary: dict) -> dict[int, float]:
    """Per task but the last: its test answer loss at the end less right after its training."""
    m = np.asarray(summary["loss_matrix"], dtype=float)
    T = m.shape[1]
    return {j: float(m[T, j] - m[j + 1, j]) for j in range(T - 1)}


def end_spearman(predicted: dict[int, float], rise: dict[int, float]) -> float:
    tasks = sorted(set(predicted) & set(rise))
    p, r = [predicted[t] for t in tasks], [rise[t] for t in tasks]
    if len(tasks) < 3 or np.ptp(p) == 0:
        return float("nan")
    return float(spearmanr(p, r).statistic)


def scores(obs: list[dict], pred: np.ndarray) -> dict[str, float]:
    actual = np.array([o["excess"] for o in obs])
    steps = np.array([o["step"] for o in obs])
    within = []
    for s in np.unique(steps):
        at = steps == s
        if at.sum() >= 3 and np.ptp(pred[at]) > 0 and np.ptp(actual[at]) > 0:
            within.append(spearmanr(pred[at], actual[at]).statistic)
    return {
        "spearman": float(spearmanr(pred, actual).statistic) if np.ptp(pred) > 0 else float("nan"),
        "within": float(np.mean(within)) if within else float("nan"),
        "mae": float(np.abs(pred - actual).mean()),
    }


def gate(paths: list[str]) -> dict:
    """Per kept comparison folder: its runs' scores for every predictor."""
    result = {}
    for folder in map(Path, paths):
        runs = {}
        for diag in sorted(folder.glob("*/diagnostics.json")):
            log = json.loads(diag.read_text()).get("replay_log") or []
            obs = replay_observations(log)
            if len(obs) < 5:
                continue
            preds, end = predictions(obs)
            rise = loss_rise(json.loads((diag.parent / "summary.json").read_text()))
            referenced = sum(np.isfinite(r.get("reference_loss") or np.nan) for r in log)
            runs[diag.parent.name] = {"observations": len(obs), "samples": len(log), "referenced": int(referenced)}
            for name, pred in preds.items():
                runs[diag.parent.name][name] = {**scores(obs, pred), "end": end_spearman(end[name], rise)}
        result[folder.name] = runs
    return result


def _cell(values: list[float]) -> str:
    v = np.array([x for x in values if np.isfinite(x)])
    return f"{v.mean():+.2f} ({v.min():+.2f} to {v.max():+.2f})" if v.size else "-"


def table(result: dict) -> str:
    names = [RETENTION, *MODELS]
    lines = []
    for folder, runs in result.items():
        n_obs = sum(r["observations"] for r in runs.values())
        samples = sum(r["samples"] for r in runs.values())
        referenced = sum(r["referenced"] for r in runs.values())
        lines += [
            f"{folder}: {len(runs)} runs, {n_obs} observations (task x replay event); "
            f"excess against the sample's own reference loss for {referenced} of {samples} replayed samples, "
            "else against its task's learned level",
            "",
            "| predictor | Spearman | within events | MAE (nats) | at the end (against the test loss rise) |",
            "|---|---|---|---|---|",
        ]
        for name in names:
            rows = [r[name] for r in runs.values()]
            mae = "-" if name == RETENTION else _cell([r["mae"] for r in rows]).split(" (")[0].lstrip("+")
            cells = [_cell([r[k] for r in rows]) for k in ("spearman", "within")]
            lines.append(f"| {name} | {cells[0]} | {cells[1]} | {mae} | {_cell([r['end'] for r in rows])} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", help="folders of kept run directories (each with diagnostics.json)")
    ap.add_argument("--json", help="also write every run's scores here")
    args = ap.parse_args()
    result = gate(args.folders)
    print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
        print(f"written to {args.json}")


if __name__ == "__main__":
    main()
