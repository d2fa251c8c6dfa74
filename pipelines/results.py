"""A finished run's results: its summary (``summary.json``), the result files and MLflow
artifacts, the final model logged to MLflow, and what the console shows at the end.

    summary = finish(trained, opened, started, register=None, log=print)

The results are written to the run directory before MLflow is told: a tracking server that
is away at the end costs the run nothing but a line saying so.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Optional

from mssr import provenance
from mssr.config import Config
from mssr.diagnostics import format_summary as format_diagnostics
from mssr.diagnostics import summarise as summarise_diagnostics
from mssr.metrics import LOSS_METRICS, METRICS, all_metrics, format_matrix, format_metric, loss_metrics
from mssr.run_plan import RunPlan
from mssr.tasks import Task
from pipelines.startup import OpenedRun
from pipelines.trainer import Trained


def finish(trained: Trained, opened: OpenedRun, started: float, register: Optional[str] = None, log=print) -> dict:
    """Write, log and print a trained run's results; returns its summary."""
    from pipelines.tracking import finish_run

    cfg, plan, tasks = trained.cfg, trained.plan, trained.tasks
    run_dir, progress = opened.run_dir, trained.progress
    summary = run_summary(cfg, tasks, plan, progress, trained.stats, opened.run_id, run_dir, started)
    summary["mlflow_unlogged_entries"] = trained.unlogged
    record = trained.record
    steps = [t.steps for t in plan.tasks]
    diagnostics = summarise_diagnostics(
        record["replay_log"], record["events"], steps, plan.replay_budget, cfg.replay.mssr.forgetting_model
    )
    summary["diagnostics"] = {k: diagnostics[k] for k in ("phases", "events_per_task", "spend_by_task")}
    summary["diagnostics"]["calibration_spearman"] = diagnostics["calibration"]["spearman"]
    summary["diagnostics"]["forgetting_fit"] = diagnostics["forgetting"]
    artifacts = write_results(run_dir, summary, progress, {**diagnostics, **record})
    model_line = log_model(cfg, run_dir, opened.uri, opened.run_id, register)
    tags = provenance.tags(summary["provenance"])
    try:
        finish_run(opened.uri, opened.run_id, final_metrics(summary), artifacts, tags=tags)
    except Exception as e:  # the results are on disk: a tracking server that is away costs the run nothing
        first = str(e).splitlines()[0] if str(e) else ""
        model_line += (
            f"\nMLflow could not be reached at the end ({type(e).__name__}: {first[:160]}): the final "
            f"metrics and artifacts are in {run_dir} only, and the MLflow run is left RUNNING"
        )
    print_results(summary, diagnostics, cfg, log)
    if warning := underspent(plan, summary["replay_samples"]):
        log(warning)
    if model_line.strip():
        log(model_line.strip())
    return summary


def underspent(plan: RunPlan, replayed: int) -> Optional[str]:
    """A line when a replaying strategy spent less than half its budget: a schedule that
    stopped, or a trigger that never fired, which the final numbers alone do not show."""
    if not plan.replays or not plan.replay_budget or replayed >= plan.replay_budget / 2:
        return None
    return f"the strategy replayed {replayed} of its budget of {plan.replay_budget} samples"


def run_summary(
    cfg: Config, tasks: list[Task], plan: RunPlan, progress, stats: dict, run_id: str, run_dir: Path, started: float
) -> dict:
    """The run's summary (``summary.json``, ``--summary-json``): matrices, metrics, spend, times."""
    metrics = {**all_metrics(progress.matrix), **loss_metrics(progress.loss_matrix)}
    return {
        "strategy": cfg.replay.strategy,
        "tasks": [t.name for t in tasks],
        "accuracy_matrix": progress.matrix,
        "loss_matrix": progress.loss_matrix,
        **metrics,
        "weights_dtype": progress.weights_dtype,
        "autocast": progress.autocast,
        "eval_autocast": progress.eval_autocast,
        "eval_mode": cfg.eval.mode,
        # where and how the workers trained (mssr.provenance): commit, processor, threads,
        # versions, precisions; what decides whether two runs may be paired
        "provenance": provenance.to_dict(provenance.from_dict(progress.provenance)),
        "replay_budget": plan.replay_budget,
        "replay_samples": stats["replay_samples"],
        "replay_events": stats["replay_events"],
        "probe_samples": stats["probe_samples"],
        "tokens": {k: int(v) for k, v in progress.tokens.items()},
        "wall_seconds": round(time.time() - started, 1),
        "train_seconds": round(progress.train_seconds, 1),
        "median_step_seconds": round(statistics.median(progress.step_seconds), 4),
        "workers": cfg.train.num_workers,  # probe_seconds sums theirs; train_seconds is rank 0's
        "probe_seconds": round(progress.probe_seconds, 2),
        "reference_seconds": round(progress.reference_seconds, 2),
        "bookkeeping_seconds": round(stats["bookkeeping_seconds"], 4),
        # rank 0: training-loop wall time (evaluation aside), and its waits for batches and plans
        "pipeline_seconds": {k: round(v, 2) for k, v in progress.pipeline.items()},
        "isolation": {**progress.isolation, "mask_overlaps": progress.mask_overlaps},
        "mlflow_run_id": run_id,
        "run_dir": str(run_dir),
        "seed": cfg.seed,
        **({"earlier_provenance": progress.earlier_provenance} if progress.earlier_provenance else {}),
    }


FINAL_METRICS = (*METRICS, *LOSS_METRICS)


def final_metrics(summary: dict) -> dict[str, float]:
    """The run's final MLflow metrics, taken from its summary."""
    tokens = summary["tokens"]
    return {
        **{k: summary[k] for k in FINAL_METRICS},
        "replay_samples": summary["replay_samples"],
        "replay_events": summary["replay_events"],
        "tokens_train_new": tokens["train_new"],
        "tokens_train_replay": tokens["train_replay"],
        "tokens_eval": tokens["eval"],
        "tokens_probe": tokens["probe"],
        "probe_samples": summary["probe_samples"],
        "median_step_seconds": summary["median_step_seconds"],
        "bookkeeping_seconds": summary["bookkeeping_seconds"],
        "wall_seconds": summary["wall_seconds"],
    }


def write_results(run_dir: Path, summary: dict, progress, diagnostics: dict) -> list[Path]:
    """The run directory's result files; returns those logged to MLflow as artifacts."""
    from pipelines.artifacts import write_matrix_artifacts

    names = summary["tasks"]
    (run_dir / "diagnostics.json").write_text(json.dumps(diagnostics))
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    # every test row's score and loss after each task: what intervals over test rows resample
    rows_path = run_dir / "eval_rows.json"
    rows_path.write_text(json.dumps({"tasks": names, "scores": progress.row_scores, "losses": progress.row_losses}))
    return (
        write_matrix_artifacts(run_dir, summary["accuracy_matrix"], names)
        + write_matrix_artifacts(run_dir, summary["loss_matrix"], names, "loss")
        + [run_dir / "config.yaml", run_dir / "summary.json", rows_path, run_dir / "diagnostics.json"]
    )


def print_results(summary: dict, diagnostics: dict, cfg: Config, log) -> None:
    names, s, tokens = summary["tasks"], summary, summary["tokens"]
    log(
        "\naccuracy matrix (rows: after training task k; columns: tasks)\n" + format_matrix(s["accuracy_matrix"], names)
    )
    log("  ".join(f"{k.upper()} {format_metric(k, s[k])}" for k in METRICS))
    log("\nloss matrix (mean answer loss; lower is better)\n" + format_matrix(s["loss_matrix"], names))
    log(
        f"final loss {s['loss_final']:.3f}  loss BWT {s['loss_bwt']:+.3f}  "
        f"loss forgetting {s['loss_forgetting']:.3f}  (positive: the loss of earlier tasks rose)"
    )
    log(
        f"replayed {s['replay_samples']} samples in {s['replay_events']} events; tokens: "
        f"{tokens['train_new']} new, {tokens['train_replay']} replay, "
        f"{tokens['probe']} strategy probes, {tokens['eval']} eval; wall {s['wall_seconds']:.0f}s"
    )
    if s["replay_events"]:
        log(format_diagnostics(diagnostics))
    times, wall = s["pipeline_seconds"], s["wall_seconds"]
    log(
        f"time: training {times['train_wall']:.0f}s, evaluation {times['eval_wall']:.0f}s, start-up and the rest "
        f"{wall - times['train_wall'] - times['eval_wall']:.0f}s (rank 0; base weights {s['weights_dtype']}; "
        "bf16 autocast: training "
        f"{'on' if s['autocast'] == 'bf16' else 'off'}, evaluation "
        f"{'on' if s['eval_autocast'] == 'bf16' else 'off'}; evaluation {cfg.eval.mode})"
    )
    log(provenance.describe(s["provenance"]))


def log_model(cfg: Config, run_dir: Path, uri: str, run_id: str, register: Optional[str]) -> str:
    """The final model as an MLflow model of the run (``mlflow.log_model``); one line on what
    was logged, or why not. A failure here loses nothing: the checkpoints stay, and
    ``mssr export`` gets the model out of them."""
    if not cfg.mlflow.log_model:
        return ""
    from pipelines.export import log_mlflow_model

    try:
        model_uri = log_mlflow_model(run_dir, uri, run_id, register)
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else ""
        return f"MLflow model not logged ({type(e).__name__}: {first}); get it with: mssr export {run_dir} --out DIR"
    where = f", registered as {register!r}" if register else ""
    return f"MLflow model: {model_uri}{where} (load it with mlflow.pyfunc.load_model)"
