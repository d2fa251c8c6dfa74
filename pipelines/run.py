"""The driver of ``mssr run``: validate, prepare data with Ray Data, train with Ray Train, log.

    from pipelines.run import run_stream
    summary = run_stream(load_config("configs/demo.yaml"))

Order of work: everything that can be wrong in the input is checked before a run directory
or an MLflow run exists (``pipelines.startup``); then the run directory, the MLflow run, the
memory actor and the ``TorchTrainer`` are created (``pipelines.trainer``); at the end the
accuracy matrix and metrics are printed, logged and written to ``summary.json`` in the run
directory (``pipelines.results``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

from mssr.config import Config, with_setting
from mssr.errors import RunFailed, UserError
from mssr.models import check_model_structure, is_hub_id, load_tokenizer, pinned_revision
from mssr.run_plan import build_plan, format_plan
from mssr.strategies import reference_pass
from mssr.tasks import Task, load_stream
from pipelines.console import quiet_env
from pipelines.startup import init_ray, new_run_dir, open_run, resume_dir, validate
from pipelines.storage import check_durable_storage


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
    cfg, run_dir, tasks = _checked_input(cfg, resume, log)

    init_ray(cfg)
    check_durable_storage(cfg)
    from pipelines.data import mix_tasks, tokenise_tasks
    from pipelines.pool import share_task_rows
    from pipelines.results import finish
    from pipelines.tracking import fail_run
    from pipelines.trainer import train

    datasets, stats = tokenise_tasks(tasks, cfg.model, cfg.stream, cfg.seed)
    task_rows = share_task_rows(datasets)  # the replay pool's rows (by id), before any mixing
    if strategy.mixes_tasks:
        datasets, stats = mix_tasks(datasets, cfg.seed)
    plan = build_plan(cfg, tasks, stats, strategy)
    log(format_plan(plan))
    if dry_run:
        return {"plan": plan}

    opened = open_run(cfg, run_dir, datasets, resume is not None, tags, log, continues)
    try:
        needs_reference = reference_pass(cfg.replay, strategy)
        trained = train(cfg, plan, tasks, datasets, task_rows, opened, needs_reference, train_callbacks, log)
        summary = finish(trained, opened, started, register, log)
    except BaseException as e:
        fail_run(opened.uri, opened.run_id)
        if isinstance(e, RunFailed) or not isinstance(e, UserError):  # a user error: resuming meets it again
            log(f"run stopped; continue it from its last checkpoint with: mssr run CONFIG --resume {run_dir}")
        raise
    if summary_json:
        Path(summary_json).parent.mkdir(parents=True, exist_ok=True)
        Path(summary_json).write_text(json.dumps(summary, indent=1))
    return summary


def _checked_input(cfg: Config, resume: Optional[str], log) -> tuple[Config, Path, list[Task]]:
    """The config (a hub model's revision pinned), the run directory (new, or the one to
    resume) and the tasks, after every check that needs no Ray: nothing is created yet."""
    from pipelines.preflight import preflight
    from pipelines.tracking import resolve_tracking_uri

    resumed = None
    if resume is not None:
        cfg, resumed = resume_dir(cfg, resume)
    if is_hub_id(cfg.model.name):  # downloaded now if needed, and the commit kept in the run's config
        cfg = with_setting(cfg, "model", revision=pinned_revision(cfg.model.name, cfg.model.revision, log))
    preflight(cfg, resolve_tracking_uri(cfg.mlflow.tracking_uri, Path(cfg.run.output_dir)))
    run_dir = resumed or new_run_dir(cfg)
    tasks = load_stream(cfg.stream)
    load_tokenizer(cfg.model)  # fail early on a broken model folder
    check_model_structure(cfg.model)  # and on LoRA targets the model does not have, before Ray starts
    return cfg, run_dir, tasks
