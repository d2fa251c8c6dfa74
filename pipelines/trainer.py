"""A run's training: the memory actor, the run recorder and Ray Train's ``TorchTrainer``
over the tokenised tasks, until the last task's checkpoint (``pipelines.run`` calls ``train``).

    trained = train(cfg, plan, tasks, datasets, task_rows, opened, needs_reference)
    trained.progress.matrix   # the accuracy matrix, from the last checkpoint

A worker's failure is restored from the last checkpoint by Ray Train up to
``train.max_failures`` times, then ends the run with one line (``training_failure``); an
error no restart can fix ends it at once (the worker tells the recorder, ``STOPPED_FILE``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from mssr.config import Config
from mssr.errors import RunFailed, UserError
from mssr.run_plan import RunPlan, tasks_to_train
from mssr.tasks import Task
from pipelines.startup import OpenedRun
from pipelines.storage import train_storage_path
from pipelines.unstable_ray import session_logs_dir, worker_death_errors


@dataclass
class Trained:
    """What training leaves for the results: what was trained (the config, the plan, the
    tasks), the workers' final progress (matrices, tokens, times), the memory actor's counts
    and its replay record, and the step-metric entries MLflow did not get."""

    cfg: Config
    plan: RunPlan
    tasks: list[Task]
    progress: object  # mssr.checkpoint.Progress
    stats: dict
    record: dict
    unlogged: int


def train(
    cfg: Config,
    plan: RunPlan,
    tasks: list[Task],
    datasets: list,
    task_rows: list,
    opened: OpenedRun,
    needs_reference: bool,
    train_callbacks: Optional[list] = None,
    log=print,
) -> Trained:
    """Train the stream with Ray Train, the memory actor and the run recorder."""
    import ray
    from ray.train.v2.api.exceptions import TrainingFailedError as TrainV2Failed

    from pipelines.memory_actor import MemoryActor
    from pipelines.recorder import STOPPED_FILE, RecorderActor, recorder_options

    run_dir = opened.run_dir
    actor_name = f"mssr-memory-{opened.run_id}"
    # max_restarts: a dead actor comes back empty and the restored workers reload its checkpointed state
    actor = MemoryActor.options(name=actor_name, get_if_exists=True, max_restarts=-1).remote(
        plan.replay, cfg.seed, plan.new_samples, plan.replay_steps
    )
    # what the workers record is written here, on the driver's node: they share no disk with it
    recorder_name = f"mssr-recorder-{opened.run_id}"
    recorder = RecorderActor.options(name=recorder_name, get_if_exists=True, **recorder_options()).remote(
        str(run_dir), opened.uri, opened.run_id
    )
    continues = json.loads((run_dir / "run.json").read_text()).get("continues") or {}
    continue_from = continues.get("checkpoint")
    config = loop_config(cfg, plan, tasks, task_rows, actor_name, recorder_name, needs_reference, continue_from)
    trainer = make_trainer(cfg, config, datasets, run_dir, train_callbacks)
    finished = False
    try:
        result = trainer.fit()
        finished = True
    except SystemExit:  # Ray Train's own Ctrl-C handler aborts the run, then exits
        raise KeyboardInterrupt from None
    except (ray.train.TrainingFailedError, TrainV2Failed) as e:
        raise RunFailed(training_failure(e, session_logs_dir())) from None
    finally:
        unlogged = close_recorder(recorder, log, CLOSE_WAIT_S if finished else 0)
    if (run_dir / STOPPED_FILE).is_file():  # a worker's error that no restart can fix
        stopped = json.loads((run_dir / STOPPED_FILE).read_text())
        ray.kill(actor)
        raise UserError(f"training stopped (rank {stopped['rank']}): {stopped['error']}")
    progress = final_progress(result, len(tasks))
    stats, record = ray.get(actor.stats.remote()), ray.get(actor.diagnostics.remote())
    ray.kill(actor)
    return Trained(cfg, plan, tasks, progress, stats, record, unlogged)


def loop_config(
    cfg: Config,
    plan: RunPlan,
    tasks: list[Task],
    task_rows: list,
    actor_name: str,
    recorder_name: str,
    needs_reference: bool,
    continue_from: Optional[str] = None,
):
    """What every worker gets: the config and the plan as they are, the actors' names."""
    from pipelines.train_loop import LoopConfig

    return LoopConfig(
        cfg=cfg,
        plan=plan,
        actor_name=actor_name,
        recorder_name=recorder_name,
        needs_update_norm=cfg.replay.clock == "update_norm",
        needs_reference=needs_reference,
        tasks=tasks_to_train(tasks, plan),
        task_rows=task_rows,
        continue_from=continue_from,
    )


def make_trainer(cfg: Config, loop_config, datasets, run_dir: Path, train_callbacks: Optional[list]):
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


def final_progress(result, n_tasks: int):
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


CLOSE_WAIT_S = 60  # at the end of a run, how long the step metrics wait for a tracking server that is away


def close_recorder(recorder, log, wait_s: float) -> int:
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
