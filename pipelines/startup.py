"""A run's start-up and checks: the input validated, Ray started or joined, the run
directory and its MLflow run created or reopened (``pipelines.run`` calls them in order).

    strategy = validate(cfg)            # before anything is created
    init_ray(cfg)
    opened = open_run(cfg, new_run_dir(cfg), datasets, resume=False, tags=None, log=print)
    opened.run_dir, opened.uri, opened.run_id   # the run directory, the tracking URI, the MLflow run
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Optional

import yaml

from mssr.config import Config, config_differences, config_to_dict, flatten, with_setting
from mssr.errors import ConfigError
from mssr.strategies import Strategy, build_strategy, reference_pass
from pipelines.console import quiet_library_warnings
from pipelines.storage import train_storage_path

HUB_ENV = ("HF_TOKEN", "HF_ENDPOINT", "HF_HUB_OFFLINE")  # a private model, a mirror, offline


@dataclass(frozen=True)
class OpenedRun:
    """Where a run records: its directory and its MLflow run."""

    run_dir: Path
    uri: str  # the tracking URI
    run_id: str  # the MLflow run id


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
    reference_pass(cfg.replay, strategy)  # a strategy that reads reference losses without them -> ConfigError
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


def resume_dir(cfg: Config, resume: str) -> tuple[Config, Path]:
    """The run directory to resume, checked: it exists, is unfinished, and was started with
    this config (keys under ``run`` aside); and the config, where a hub model's revision left
    unset takes the commit the run pinned."""
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
        cfg = with_setting(cfg, "model", revision=saved["model.revision"])
    differ = config_differences(saved, config_to_dict(cfg), ignore=("run.",))
    if differ:
        raise ConfigError(
            f"--resume: {run_dir} was started with a different config: {differ[0]}"
            + (f" (and {len(differ) - 1} more keys)" if len(differ) > 1 else "")
        )
    return cfg, run_dir


def new_run_dir(cfg: Config) -> Path:
    name = cfg.run.name or f"{cfg.replay.strategy}-{datetime.now():%Y%m%d-%H%M%S}"
    run_dir = (Path(cfg.run.output_dir) / name).resolve()
    if run_dir.exists():
        raise ConfigError(
            f"run.name: {run_dir} already exists; choose another run.name (or continue it with --resume {run_dir})"
        )
    return run_dir


def open_run(
    cfg: Config, run_dir: Path, datasets, resume: bool, tags: Optional[dict], log, continues: Optional[dict] = None
) -> OpenedRun:
    """The run's directory and MLflow run: reopened on ``resume``, else created (the input is
    valid by now: from here on the run directory and the MLflow run exist)."""
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
        return OpenedRun(run_dir, uri, run_id)
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
    return OpenedRun(run_dir, uri, run_id)
