"""The driver of ``mssr run``: validate, prepare data with Ray Data, train with Ray Train, log.

    from pipelines.run import run_stream
    summary = run_stream(load_config("configs/demo.yaml"))

Order of work: everything that can be wrong in the input is checked before a run directory
or an MLflow run exists; then the run directory, the MLflow run, the memory actor and the
``TorchTrainer`` are created; at the end the accuracy matrix and metrics are printed, logged
and written to ``summary.json`` in the run directory.
"""

from __future__ import annotations

import json
import logging
import math
import os
import statistics
import time
from datetime import datetime
from pathlib import Path
from typing import Optional

import yaml

from mssr import provenance
from mssr.config import Config, config_to_dict, flatten
from mssr.diagnostics import format_summary as format_diagnostics
from mssr.diagnostics import summarise as summarise_diagnostics
from mssr.errors import ConfigError, RunFailed, UserError
from mssr.metrics import LOSS_METRICS, METRICS, all_metrics, format_matrix, format_metric, loss_metrics
from mssr.models import check_model_structure, is_hub_id, load_tokenizer, pinned_revision
from mssr.run_plan import build_plan, format_plan
from mssr.strategies import Strategy, build_strategy, reference_pass
from mssr.tasks import Task, load_stream
from pipelines.console import quiet_env, quiet_library_warnings
from pipelines.storage import check_durable_storage, train_storage_path
from pipelines.unstable_ray import session_logs_dir, worker_death_errors

HUB_ENV = ("HF_TOKEN", "HF_ENDPOINT", "HF_HUB_OFFLINE")  # a private model, a mirror, offline


def init_ray(cfg: Config) -> None:
    """Connect to ``$RAY_ADDRESS`` if set, else start a local Ray sized for the workers."""
    import ray

    quiet_library_warnings()  # again: importing Ray put its deprecation filter in front

    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            # a cluster's workers do not inherit this shell: pass what reaches the Hugging Face Hub
            hub_env = {k: os.environ[k] for k in HUB_ENV if k in os.environ}
            ray.init(
                address=os.environ["RAY_ADDRESS"], logging_level=logging.WARNING, runtime_env={"env_vars": hub_env}
            )
        else:
            # its processes inherit this environment (HF_HUB_OFFLINE, MSSR_CACHE, ...); no
            # dashboard on a laptop; Ray's own processes log errors only (without the dashboard,
            # Ray Train's placement-group cleaner warns every second that the State API is absent)
            cpus = max(os.cpu_count() or 1, math.ceil(cfg.train.num_workers * cfg.train.cpus_per_worker))
            # one machine has no nodes to drain: Ray Train's preemption watcher would only add a
            # resident process and an error line about its restart arguments to the console
            os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
            # a run's dozen short-lived processes (Ray Data tasks, actors, workers) on a 2-core
            # laptop set off the raylet's "worker processes have been started" warning, which
            # is about clusters of thousands of tasks: its threshold is a multiple of this
            os.environ.setdefault("RAY_worker_maximum_startup_concurrency", str(max(8, cpus)))
            ray.init(
                num_cpus=cpus,
                include_dashboard=False,
                logging_level=logging.WARNING,
                logging_config=ray.LoggingConfig(encoding="TEXT", log_level="ERROR"),
            )
    _configure_ray_data()


def _configure_ray_data() -> None:
    """Deterministic ingest and a quiet console.

    ``preserve_order`` makes the streaming split hand the same rows to the same rank in the
    same order on every run (Ray Train copies it from this context); without it the split
    may follow locality and timing, and the same seed would not give the same run.
    """
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def validate(cfg: Config) -> Strategy:
    """Checks that need more than one field, done before anything is created; returns the strategy."""
    if cfg.train.batch_size % cfg.train.num_workers:
        raise ConfigError(
            f"train.batch_size={cfg.train.batch_size} must be a multiple of "
            f"train.num_workers={cfg.train.num_workers} (each worker takes an equal share)"
        )
    strategy = build_strategy(cfg.replay.strategy, cfg.replay)  # unknown strategy/sampler/scheduler -> ConfigError
    # a local run needs its GPU here; on a cluster ($RAY_ADDRESS) the driver may run on a CPU
    # head node, and Ray places the GPU workers on GPU nodes (the autoscaler starts them)
    local = not os.environ.get("RAY_ADDRESS")
    if cfg.model.finetune == "qlora":
        from mssr.models import qlora_problem

        if local and (problem := qlora_problem()):
            raise ConfigError(problem)
        if not cfg.train.use_gpu:
            raise ConfigError("model.finetune=qlora needs train.use_gpu=true: the 4-bit weights live on the GPU")
    return strategy


def _resume_dir(cfg: Config, resume: str) -> Path:
    """The run directory to resume, checked: it exists, is unfinished, and was started with
    this config (keys under ``run`` aside). A hub model's revision left unset takes the commit
    the run pinned (``cfg.model.revision`` is set to it)."""
    if resume:
        run_dir = Path(resume).resolve()
    elif cfg.run.name:
        run_dir = (Path(cfg.run.output_dir) / cfg.run.name).resolve()
    else:
        raise ConfigError("--resume: give the run directory (mssr run CONFIG --resume runs/NAME) or set run.name")
    if not (run_dir / "run.json").is_file():
        raise ConfigError(f"--resume: {run_dir} is not a run directory (no run.json)")
    if (run_dir / "summary.json").exists():
        raise ConfigError(f"--resume: {run_dir} already finished (summary.json exists)")
    saved = flatten(yaml.safe_load((run_dir / "config.yaml").read_text()))
    if cfg.model.revision is None and saved.get("model.revision"):
        cfg.model.revision = saved["model.revision"]
    given = flatten(config_to_dict(cfg))
    differ = [k for k in sorted(set(saved) | set(given)) if not k.startswith("run.") and saved.get(k) != given.get(k)]
    if differ:
        k = differ[0]
        raise ConfigError(
            f"--resume: {run_dir} was started with a different config: {k} was {saved.get(k)!r}, "
            f"now {given.get(k)!r}" + (f" (and {len(differ) - 1} more keys)" if len(differ) > 1 else "")
        )
    return run_dir


def run_stream(
    cfg: Config,
    dry_run: bool = False,
    summary_json: Optional[Path] = None,
    log=print,
    tags: Optional[dict] = None,
    resume: Optional[str] = None,
    train_callbacks: Optional[list] = None,
    register: Optional[str] = None,
    continues: Optional[dict] = None,
) -> dict:
    """Run (or with ``dry_run`` only plan) continual fine-tuning of ``cfg``'s stream.

    ``tags`` are added to the MLflow run (``mssr compare`` tags its runs with a comparison id).
    ``train_callbacks``: Ray Train callbacks (``mssr tune`` passes Tune's report callback).
    ``resume``: continue an interrupted run from its last checkpoint, in the same run
    directory and the same MLflow run ("" for ``run.output_dir/run.name``, else the directory).
    ``register``: the name under which the final model (``mlflow.log_model``) is registered.
    ``continues``: the finished run this one continues (``pipelines.continuation``), recorded
    in ``run.json`` and as MLflow tags; training starts from its last checkpoint.
    """
    quiet_env()
    started = time.time()
    strategy = validate(cfg)
    if register and not cfg.mlflow.log_model:
        raise UserError("--register: the run logs no model (mlflow.log_model=false); drop one of the two")
    from pipelines.preflight import preflight
    from pipelines.tracking import resolve_tracking_uri

    resumed = _resume_dir(cfg, resume) if resume is not None else None
    if is_hub_id(cfg.model.name):  # downloaded now if needed, and the commit kept in the run's config
        cfg.model.revision = pinned_revision(cfg.model.name, cfg.model.revision, log)
    preflight(cfg, resolve_tracking_uri(cfg.mlflow.tracking_uri, Path(cfg.run.output_dir)))
    run_dir = resumed or _new_run_dir(cfg)
    tasks = load_stream(cfg.stream)
    load_tokenizer(cfg.model)  # fail early on a broken model folder
    check_model_structure(cfg.model)  # and on LoRA targets the model does not have, before Ray starts

    init_ray(cfg)
    check_durable_storage(cfg)
    from pipelines.data import mix_tasks, tokenise_tasks
    from pipelines.pool import share_task_rows
    from pipelines.tracking import fail_run

    datasets, stats = tokenise_tasks(tasks, cfg.model, cfg.stream, cfg.seed)
    task_rows = share_task_rows(datasets)  # the replay pool's rows (by id), before any mixing
    if strategy.mixes_tasks:
        datasets, stats = mix_tasks(datasets, cfg.seed)
    plan = build_plan(cfg, tasks, stats, strategy)
    log(format_plan(plan))
    if dry_run:
        return {"plan": plan}

    uri, run_id = _open_run(cfg, run_dir, datasets, resume is not None, tags, log, continues)
    try:
        summary = _fit(
            cfg, tasks, datasets, task_rows, plan, run_dir, uri, run_id, started, log, train_callbacks, register
        )
    except BaseException as e:
        fail_run(uri, run_id)
        if isinstance(e, RunFailed) or not isinstance(e, UserError):  # a user error: resuming meets it again
            log(f"run stopped; continue it from its last checkpoint with: mssr run CONFIG --resume {run_dir}")
        raise
    if summary_json:
        Path(summary_json).parent.mkdir(parents=True, exist_ok=True)
        Path(summary_json).write_text(json.dumps(summary, indent=1))
    return summary


def _new_run_dir(cfg: Config) -> Path:
    name = cfg.run.name or f"{cfg.replay.strategy}-{datetime.now():%Y%m%d-%H%M%S}"
    run_dir = (Path(cfg.run.output_dir) / name).resolve()
    if run_dir.exists():
        raise ConfigError(
            f"run.name: {run_dir} already exists; choose another run.name (or continue it with --resume {run_dir})"
        )
    return run_dir


def _open_run(
    cfg: Config, run_dir: Path, datasets, resume: bool, tags: Optional[dict], log, continues: Optional[dict] = None
) -> tuple[str, str]:
    """The run's directory and MLflow run: reopened on ``resume``, else created (the input is
    valid by now: from here on the run directory and the MLflow run exist). Returns the
    tracking URI and the MLflow run id."""
    from pipelines.data import write_tokens
    from pipelines.tracking import redact, reopen_run, resolve_tracking_uri, start_run

    if resume:  # the same directory, checkpoints and MLflow run
        record = json.loads((run_dir / "run.json").read_text())
        uri, run_id = resolve_tracking_uri(cfg.mlflow.tracking_uri, run_dir.parent), record["mlflow_run_id"]
        if redact(uri) != record["tracking_uri"]:
            raise ConfigError(
                f"--resume: the run logs to {record['tracking_uri']}, but this config and "
                f"environment give {redact(uri)}; set mlflow.tracking_uri or MLFLOW_TRACKING_URI"
            )
        reopen_run(uri, run_id)
        log(f"resuming {run_dir}\nMLflow run {run_id} in {redact(uri)}")
        return uri, run_id
    run_dir.mkdir(parents=True)
    resolved = config_to_dict(cfg)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    write_tokens(datasets, run_dir)
    uri = resolve_tracking_uri(cfg.mlflow.tracking_uri, Path(cfg.run.output_dir))
    tags = {"strategy": cfg.replay.strategy, **(tags or {})}
    if continues:  # the lineage: the run it continues, and the first run of the chain
        tags |= {"mssr.continues": continues["mlflow_run_id"], "mssr.lineage": continues["lineage"]}
    run_id = start_run(
        uri,
        cfg.mlflow.experiment,
        run_dir.name,
        flatten(resolved),
        tags=tags,
        artifact_location=cfg.mlflow.artifact_location,
    )
    record = {
        "mlflow_run_id": run_id,
        "tracking_uri": redact(uri),
        "checkpoints": f"{train_storage_path(cfg, run_dir)}/train",
    }
    if continues:
        record["continues"] = continues
    (run_dir / "run.json").write_text(json.dumps(record))
    log(f"run directory {run_dir}\nMLflow run {run_id} in {redact(uri)}")
    return uri, run_id


def _loop_config(
    cfg: Config,
    tasks: list[Task],
    plan: dict,
    task_rows: list,
    actor_name: str,
    recorder_name: str,
    continue_from: Optional[str] = None,
):
    from pipelines.train_loop import LoopConfig, TaskToTrain

    return LoopConfig(
        cfg=config_to_dict(cfg),
        total_steps=plan["total_steps"],
        actor_name=actor_name,
        recorder_name=recorder_name,
        needs_update_norm=cfg.replay.clock == "update_norm",
        needs_reference=reference_pass(cfg.replay),
        tasks=[
            TaskToTrain(t.name, t.scorer, p["steps"], [(e.prompt, e.answer) for e in t.test])
            for t, p in zip(tasks, plan["tasks"])
        ],
        task_rows=task_rows,
        continue_from=continue_from,
    )


def _trainer(cfg: Config, loop_config, datasets, run_dir: Path, train_callbacks: Optional[list]):
    """The Ray Train ``TorchTrainer`` of a run: one worker per ``train.num_workers``, each task's
    tokenised split streamed to them, checkpoints under ``train_storage_path``."""
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from pipelines.train_loop import train_loop

    resources = {"CPU": cfg.train.cpus_per_worker}
    if cfg.train.use_gpu:
        resources["GPU"] = 1
    return TorchTrainer(
        train_loop,
        train_loop_config={"loop": loop_config},
        scaling_config=ScalingConfig(
            num_workers=cfg.train.num_workers, use_gpu=cfg.train.use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name="train",
            storage_path=train_storage_path(cfg, run_dir),
            failure_config=FailureConfig(max_failures=cfg.train.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            # a worker's failure reaches the console as one line (RunFailed, or the restore's
            # "resumed from checkpoint" line), not as Ray Train's pasted tracebacks; the full
            # tracebacks stay in the Ray session's log files, whatever this level
            logging_config=LoggingConfig(log_level="CRITICAL"),
            callbacks=train_callbacks,
        ),
        datasets={f"train_{k}": ds for k, ds in enumerate(datasets)},
        dataset_config=DataConfig(datasets_to_split="all"),
    )


def _final_progress(result, n_tasks: int):
    """The workers' progress in Ray Train's last checkpoint; KeyboardInterrupt when the run was
    stopped (Ctrl-C) before the last task's checkpoint."""
    from mssr.checkpoint import load_progress

    if result.error is not None:
        raise result.error
    if result.checkpoint is None:
        raise KeyboardInterrupt
    with result.checkpoint.as_directory() as d:
        progress = load_progress(Path(d))
    if progress.next_task < n_tasks:
        raise KeyboardInterrupt
    return progress


def training_failure(error: Exception, logs: str) -> str:
    """One line for a failed ``trainer.fit()``: the failing rank's error (its type and the last
    line of its message: the worker's own exception), and where the full logs are."""
    failures = getattr(error, "worker_failures", None) or {}
    # a rank whose process died is the cause; the others' errors are its echo (a collective's
    # peer closed the connection)
    died = worker_death_errors()
    rank = next((r for r in sorted(failures) if isinstance(failures[r], died)), min(failures, default=None))
    cause = failures[rank] if failures else getattr(error, "controller_failure", error)
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    where = f"rank {rank}: " if failures else ""
    return (
        f"training failed after train.max_failures restarts ({where}{type(cause).__name__}: "
        f"{lines[-1] if lines else 'no message'}); full logs in {logs}"
    )


def _fit(
    cfg: Config,
    tasks: list[Task],
    datasets,
    task_rows: list,
    plan: dict,
    run_dir: Path,
    uri: str,
    run_id: str,
    started: float,
    log,
    train_callbacks: Optional[list] = None,
    register: Optional[str] = None,
) -> dict:
    """Train the stream with Ray Train, the memory actor and the run recorder, then write, log
    and print the results."""
    import ray
    from ray.train.v2.api.exceptions import TrainingFailedError as TrainV2Failed

    from pipelines.memory_actor import MemoryActor
    from pipelines.recorder import STOPPED_FILE, RecorderActor, recorder_options
    from pipelines.tracking import finish_run

    actor_name = f"mssr-memory-{run_id}"
    # max_restarts: a dead actor comes back empty and the restored workers reload its checkpointed state
    actor = MemoryActor.options(name=actor_name, get_if_exists=True, max_restarts=-1).remote(
        cfg.replay, cfg.seed, plan["new_samples"], plan["replay_steps"]
    )
    # what the workers record is written here, on the driver's node: they share no disk with it
    recorder_name = f"mssr-recorder-{run_id}"
    recorder = RecorderActor.options(name=recorder_name, get_if_exists=True, **recorder_options()).remote(
        str(run_dir), uri, run_id
    )
    continues = json.loads((run_dir / "run.json").read_text()).get("continues") or {}
    loop_config = _loop_config(cfg, tasks, plan, task_rows, actor_name, recorder_name, continues.get("checkpoint"))
    trainer = _trainer(cfg, loop_config, datasets, run_dir, train_callbacks)
    finished = False
    try:
        result = trainer.fit()
        finished = True
    except SystemExit:  # Ray Train's own Ctrl-C handler aborts the run, then exits
        raise KeyboardInterrupt from None
    except (ray.train.TrainingFailedError, TrainV2Failed) as e:
        raise RunFailed(training_failure(e, session_logs_dir())) from None
    finally:
        unlogged = _close_recorder(recorder, log, CLOSE_WAIT_S if finished else 0)
    if (run_dir / STOPPED_FILE).is_file():  # a worker's error that no restart can fix
        stopped = json.loads((run_dir / STOPPED_FILE).read_text())
        ray.kill(actor)
        raise UserError(f"training stopped (rank {stopped['rank']}): {stopped['error']}")
    progress = _final_progress(result, len(tasks))
    stats = ray.get(actor.stats.remote())
    record = ray.get(actor.diagnostics.remote())
    ray.kill(actor)

    summary = _summary(cfg, tasks, plan, progress, stats, run_id, run_dir, started)
    summary["mlflow_unlogged_entries"] = unlogged
    diagnostics = summarise_diagnostics(
        record["replay_log"],
        record["events"],
        [t["steps"] for t in plan["tasks"]],
        plan["replay_budget"],
        cfg.replay.mssr.forgetting_model,
    )
    summary["diagnostics"] = {k: diagnostics[k] for k in ("phases", "events_per_task", "spend_by_task")}
    summary["diagnostics"]["calibration_spearman"] = diagnostics["calibration"]["spearman"]
    summary["diagnostics"]["forgetting_fit"] = diagnostics["forgetting"]
    artifacts = _write_results(run_dir, summary, progress, {**diagnostics, **record})
    model_line = _log_model(cfg, run_dir, uri, run_id, register)
    try:
        finish_run(uri, run_id, final_metrics(summary), artifacts, tags=provenance.tags(summary["provenance"]))
    except Exception as e:  # the results are on disk: a tracking server that is away costs the run nothing
        first = str(e).splitlines()[0] if str(e) else ""
        model_line += (
            f"\nMLflow could not be reached at the end ({type(e).__name__}: {first[:160]}): the final "
            f"metrics and artifacts are in {run_dir} only, and the MLflow run is left RUNNING"
        )
    _print_results(summary, diagnostics, cfg, log)
    if model_line.strip():
        log(model_line.strip())
    return summary


def _log_model(cfg: Config, run_dir: Path, uri: str, run_id: str, register: Optional[str]) -> str:
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


CLOSE_WAIT_S = 60  # at the end of a run, how long the step metrics wait for a tracking server that is away


def _close_recorder(recorder, log, wait_s: float) -> int:
    """Flush the recorder (its last MLflow metrics, waiting up to ``wait_s`` for a tracking
    server that is away) and stop it; says what could not be logged. Returns the number of
    step-metric entries MLflow did not get."""
    import ray

    try:
        waiting = ray.get(recorder.flush.remote(force=True), timeout=60)
        if waiting:
            log(f"MLflow is not answering: {waiting} step-metric entries wait; trying for up to {wait_s:.0f} s")
        outcome = ray.get(recorder.close.remote(wait_s=wait_s), timeout=wait_s + 60)
    except Exception as e:  # the results do not depend on it: say so and go on
        log(f"the run recorder did not answer ({type(e).__name__}); some step metrics may be missing in MLflow")
        return 0
    finally:
        ray.kill(recorder)
    if outcome["unlogged"]:
        log(
            f"MLflow could not be reached ({outcome['error']}): {outcome['unlogged']} step-metric entries "
            "were not logged; they are in unlogged_metrics.jsonl in the run directory"
        )
    return outcome["unlogged"]


def _summary(
    cfg: Config, tasks: list[Task], plan: dict, progress, stats: dict, run_id: str, run_dir: Path, started: float
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
        "replay_budget": plan["replay_budget"],
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


def _write_results(run_dir: Path, summary: dict, progress, diagnostics: dict) -> list[Path]:
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


def _print_results(summary: dict, diagnostics: dict, cfg: Config, log) -> None:
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
