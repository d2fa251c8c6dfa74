"""``mssr tune``: a Ray Tune sweep of a search space, each trial an ordinary ``mssr run``.

    mssr tune configs/demo.yaml --space tune_spaces/mssr.yaml --num-samples 8
    mssr tune configs/tiny.yaml --space tune_spaces/fixed.yaml --num-samples 2 --scheduler fifo --metric bwt
    mssr tune configs/demo.yaml --space tune_spaces/mssr.yaml --name my-sweep --resume   # after Ctrl-C

The Ray Train V2 pattern: every trial is a Tune function that builds and fits one
``TorchTrainer`` (through ``pipelines.run.run_stream``, the code path of ``mssr run``), with
Tune's ``TuneReportCallback`` on it, so each task-boundary report of the training workers
(the metrics of the tasks seen so far, with ``tasks_done``) reaches Tune. ASHA uses
``tasks_done`` as its time: a trial whose score after a few tasks is in the bottom half of
its rung is stopped there. On one machine, ``--max-concurrent`` trials share the CPUs: each
trial takes a small slice for its Tune function and its workers get the rest in fractions.

MLflow: a parent run for the sweep (the space, the best trial's metrics, the trial table
and the best config as artifacts) and one nested run per trial, logged by the same code as
``mssr run`` (params, loss and per-task score curves, the accuracy matrix and heatmap), so a
trial's run in the UI looks like any other run. Outputs in ``<output_dir>/sweeps/<name>/``:
``trials.md`` and ``trials.csv`` (one row per trial, best first), ``best.yaml`` (the whole
config of the best finished trial, ready for ``mssr run``), and Tune's own state under
``tune/``, from which ``--resume`` continues an interrupted sweep (finished trials are kept,
a trial cut off mid-run continues from its last task-boundary checkpoint).

The trials run on ``stream.split=tune``, the tune part of every task's prompts
(``mssr/splits.py``): set by the sweep when the config leaves the split at ``all``, refused
when it says ``eval``. ``best_params.yaml`` keeps the trials' stream settings under
``tuned_on``, so that a comparison can check that none of its test prompts was seen here.
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Optional

import yaml

from mssr.config import Config, config_to_dict, load_config
from mssr.errors import ConfigError
from mssr.metrics import METRICS as METRIC_DIRECTIONS
from mssr.metrics import format_metric
from mssr.search_space import SearchSpace, load_space, trial_overrides
from mssr.tasks import load_stream
from pipelines.tables import markdown_table, write_csv

# what a sweep may optimise, and in which direction: the accuracy metrics, and the mean final
# answer loss that comparisons lead with (every report after a task carries it)
METRICS = {name: "max" if higher else "min" for name, higher in {**METRIC_DIRECTIONS, "loss_final": False}.items()}
TRIAL_CPU = 0.05  # the Tune function of a trial only waits on its TorchTrainer


def to_ray(space: SearchSpace) -> dict:
    """The Tune ``param_space`` of a search space (randint's high bound included, as documented)."""
    from ray import tune

    make = {
        "choice": tune.choice,
        "grid": tune.grid_search,
        "value": lambda v: v[0],
        "uniform": lambda v: tune.uniform(*v),
        "loguniform": lambda v: tune.loguniform(*v),
        "randint": lambda v: tune.randint(v[0], v[1] + 1),
    }
    return {key: make[p.kind](p.values) for key, p in space.params.items()}


def worker_cpus(total_cpus: float, max_concurrent: int, num_workers: int) -> float:
    """CPUs per training worker so that ``max_concurrent`` trials fit on ``total_cpus``.

    >>> worker_cpus(2, 2, 2)   # 2 trials x (0.05 + 2 x 0.47) <= 2 CPUs
    0.47
    """
    share = total_cpus / max_concurrent - TRIAL_CPU
    return math.floor(100 * share / num_workers) / 100


def trial_run_name(sweep: str, trial_id: str) -> str:
    """The run name (and run directory) of one trial of a sweep."""
    return f"{sweep}-{trial_id}"


def sweep_split(cfg: Config) -> Optional[str]:
    """The override that puts a sweep on the tune part of every task's prompts: ``stream.split=tune``
    when ``cfg`` leaves the split at ``all``, None when it already says ``tune``; a config that
    asks for ``eval`` (the part kept for evaluation) is refused."""
    if cfg.stream.split == "eval":
        raise ConfigError(
            "stream.split=eval: a sweep never runs on the evaluation prompts; leave stream.split out "
            "(the sweep sets tune) or set it to tune"
        )
    return "stream.split=tune" if cfg.stream.split == "all" else None


def _trial_config(
    config_path: str, overrides: list[str], params: dict, extra: list[str] = (), defaults: list[str] = ()
) -> Config:
    """A trial's config: ``defaults`` (the user's overrides win over them), the user's overrides,
    the trial's sampled values, then ``extra`` (the trial's own settings)."""
    return load_config(config_path, [*defaults, *overrides, *trial_overrides(params), *extra])


def _run_trial(
    params: dict, *, config_path: str, overrides: list[str], sweep: str, cpus: float, parent_run_id: str
) -> None:
    """One trial (a Tune function): an ``mssr run`` of the base config with ``params`` applied."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from pipelines.run import run_stream

    trial_id = ray.tune.get_context().get_trial_id()
    cfg = _trial_config(
        config_path,
        overrides,
        params,
        [
            f"run.name={trial_run_name(sweep, trial_id)}",
            f"train.cpus_per_worker={cpus}",
            "train.checkpoint_every=0",  # task-boundary reports only: each one carries the metrics ASHA reads
        ],
        # a trial's model is not wanted (the best config is run again); set mlflow.log_model=true to log it
        defaults=["mlflow.log_model=false"],
    )
    run_dir = Path(cfg.run.output_dir).resolve() / cfg.run.name
    if (run_dir / "summary.json").exists():  # finished before an interruption of the sweep
        summary = json.loads((run_dir / "summary.json").read_text())
        ray.tune.report({"tasks_done": len(summary["tasks"]), **{k: summary[k] for k in METRICS}})
        return
    resume = "" if (run_dir / "run.json").exists() else None  # cut off mid-run: continue its checkpoint
    run_stream(
        cfg,
        resume=resume,
        train_callbacks=[TuneReportCallback()],
        tags={"sweep_id": sweep, "mlflow.parentRunId": parent_run_id, "trial_id": trial_id},
    )


def _rows(results, params_keys: list[str], metric: str, tasks: int) -> list[dict]:
    rows = []
    for r in results:
        m = r.metrics or {}
        done = int(m.get("tasks_done", 0))
        status = "error" if r.error else ("finished" if done == tasks else f"stopped after {done} tasks")
        rows.append(
            {
                "trial": m.get("trial_id", Path(r.path).name if r.path else "?"),
                "status": status,
                "tasks done": done,
                **{k: m.get(k, float("nan")) for k in METRICS},
                **{k: r.config.get(k) for k in params_keys},
            }
        )
    sign = -1 if METRICS[metric] == "max" else 1
    # finished trials first, best first; then the stopped ones by how far they got
    rows.sort(
        key=lambda row: (
            row["status"] != "finished",
            -row["tasks done"],
            sign * row[metric] if not math.isnan(row[metric]) else math.inf,
        )
    )
    return rows


def _format_rows(rows: list[dict], params_keys: list[str], metric: str) -> str:
    cells = [
        [
            row["trial"],
            row["status"],
            *(format_metric(k, row[k]) for k in METRICS),
            *(f"{v:.4g}" if isinstance(v, float) else str(v) for v in (row[k] for k in params_keys)),
        ]
        for row in rows
    ]
    table = markdown_table(["trial", "status", *METRICS, *params_keys], cells)
    return f"sorted by {metric} ({METRICS[metric]}imised), finished trials first\n\n" + "\n".join(table) + "\n"


@dataclass(frozen=True)
class Sweep:
    """A sweep as asked for on the command line."""

    config_path: str
    overrides: list[str]
    space_path: str
    num_samples: int
    max_concurrent: int
    scheduler: str
    metric: str
    name: str

    def check(self) -> None:
        if self.metric not in METRICS:
            raise ConfigError(f"--metric: expected one of {', '.join(METRICS)} (got {self.metric!r})")
        if self.scheduler not in ("asha", "fifo"):
            raise ConfigError(f"--scheduler: expected asha or fifo (got {self.scheduler!r})")
        if self.num_samples < 1 or self.max_concurrent < 1:
            raise ConfigError("--num-samples and --max-concurrent must be at least 1")

    def describe(self, space: SearchSpace, cpus: float) -> str:
        grid = f" x {space.grid_size()} grid points" if space.grid_size() > 1 else ""
        return (
            f"sweep {self.name}: {self.space_path} ({len(space.params)} keys), {self.num_samples} samples{grid}, "
            f"{self.scheduler}, {self.metric} {METRICS[self.metric]}imised, {self.max_concurrent} concurrent, "
            f"{cpus} CPU per worker"
        )

    def record(self, parent_run_id: str, uri: str) -> dict:
        """``sweep.json``: what ``--resume`` finds the sweep's MLflow run by."""
        return {
            "mlflow_run_id": parent_run_id,
            "tracking_uri": uri,
            "config": self.config_path,
            "overrides": self.overrides,
            "space": self.space_path,
            "metric": self.metric,
            "scheduler": self.scheduler,
            "num_samples": self.num_samples,
        }


def tune_sweep(
    config_path: str,
    overrides: list[str],
    space_path: str,
    num_samples: int = 8,
    max_concurrent: int = 2,
    scheduler: str = "asha",
    metric: str = "ap",
    name: Optional[str] = None,
    resume: bool = False,
    log=print,
) -> dict:
    """Run (or ``resume``) a sweep; returns ``{"name", "dir", "rows", "best_config"}``."""
    if resume and not name:
        raise ConfigError("--resume needs the --name of the sweep to continue")
    name = name or f"sweep-{datetime.now():%Y%m%d-%H%M%S}"
    Sweep(config_path, overrides, space_path, num_samples, max_concurrent, scheduler, metric, name).check()
    given = overrides
    split = sweep_split(load_config(config_path, overrides))
    if split:  # the trials (and best.yaml) run on the tune part of the prompts, never the eval part
        overrides = [*overrides, split]
    sweep = Sweep(config_path, overrides, space_path, num_samples, max_concurrent, scheduler, metric, name)
    base = load_config(config_path, overrides)
    space = load_space(space_path, config_path, overrides)
    sweep_dir = _sweep_dir(base, sweep.name, resume)
    from pipelines.console import quiet_env
    from pipelines.startup import init_ray

    _check_corners(config_path, overrides, space, space_path)
    if split:
        log("stream.split=tune: the trials train and test on the tune part of every task's prompts (docs/sweeps.md)")
    tasks = len(load_stream(base.stream))  # bad rows, or a task the split leaves empty: refused before the sweep
    quiet_env()
    init_ray(base)
    import ray

    from pipelines.placement_groups import removing_orphaned_placement_groups
    from pipelines.tracking import fail_run, redact, resolve_tracking_uri

    uri = resolve_tracking_uri(base.mlflow.tracking_uri, Path(base.run.output_dir))
    parent = _parent_run(sweep, space, base, uri, sweep_dir, resume)
    cpus = worker_cpus(ray.cluster_resources().get("CPU", 1), max_concurrent, base.train.num_workers)
    if cpus <= 0:
        raise ConfigError(f"--max-concurrent {max_concurrent}: too many trials for this machine's CPUs")
    log(f"{sweep.describe(space, cpus)}\nMLflow parent run {parent} in {redact(uri)}; results in {sweep_dir}")
    tuner = _tuner(sweep, space, base, uri, parent, cpus, tasks, sweep_dir, resume)
    try:
        with removing_orphaned_placement_groups():  # frees the CPUs of the trials ASHA stops
            grid, interrupted = _fit_noting_interrupt(tuner)
    except KeyboardInterrupt:
        interrupted = True
    if interrupted:
        fail_run(uri, parent)
        log(
            f"sweep interrupted; continue it with: mssr tune {config_path} {' '.join(given)} "
            f"--space {space_path} --name {sweep.name} --resume".replace("  ", " ")
        )
        raise KeyboardInterrupt
    return _finish(sweep, space, base, list(grid), tasks, uri, parent, sweep_dir, log)


def _check_corners(config_path: str, overrides: list[str], space, space_path: str) -> None:
    """The run-level checks (strategy, batch split, GPU) of every corner of the space, and no
    trial off the tune part of the prompts, before the sweep starts."""
    from pipelines.startup import validate

    for values in _corner_trials(space):
        corner = _trial_config(config_path, overrides, values)
        if corner.stream.split != "tune":
            raise ConfigError(
                f"{space_path}: stream.split: a sweep runs on stream.split=tune; leave it out of the space"
            )
        validate(corner)


def _sweep_dir(base: Config, name: str, resume: bool) -> Path:
    sweep_dir = (Path(base.run.output_dir) / "sweeps" / name).resolve()
    if resume and not (sweep_dir / "sweep.json").exists():
        raise ConfigError(f"--resume: no sweep {name!r} in {sweep_dir.parent}")
    if not resume and sweep_dir.exists():
        raise ConfigError(f"--name: {sweep_dir} already exists; choose another name, or continue it with --resume")
    return sweep_dir


def _parent_run(sweep: Sweep, space: SearchSpace, base: Config, uri: str, sweep_dir: Path, resume: bool) -> str:
    """The sweep's MLflow run: reopened on ``resume``, else started (and ``sweep.json`` written)."""
    from pipelines.tracking import redact, reopen_run, start_run

    if resume:
        parent = json.loads((sweep_dir / "sweep.json").read_text())["mlflow_run_id"]
        reopen_run(uri, parent)
        return parent
    sweep_dir.mkdir(parents=True)
    params = {
        **{f"space.{k}": f"{p.kind} {p.values}" for k, p in space.params.items()},
        "metric": sweep.metric,
        "scheduler": sweep.scheduler,
        "num_samples": sweep.num_samples,
        "config": sweep.config_path,
        "overrides": " ".join(sweep.overrides),
    }
    parent = start_run(
        uri,
        base.mlflow.experiment,
        sweep.name,
        params,
        tags={"sweep_id": sweep.name, "kind": "sweep"},
        artifact_location=base.mlflow.artifact_location,
    )
    (sweep_dir / "sweep.json").write_text(json.dumps(sweep.record(parent, redact(uri)), indent=1))
    return parent


def _tuner(
    sweep: Sweep,
    space: SearchSpace,
    base: Config,
    uri: str,
    parent: str,
    cpus: float,
    tasks: int,
    sweep_dir: Path,
    resume: bool,
):
    """The Tune ``Tuner``: restored from ``sweep_dir/tune`` on ``resume``, else a new one."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    # a trial runs in its own working directory: every path it gets is absolute, and it logs
    # to the sweep's MLflow store (an environment-given URI reaches it through the environment)
    every_trial = [*sweep.overrides, f"run.output_dir={Path(base.run.output_dir).resolve()}"]
    if not base.mlflow.tracking_uri and not os.environ.get("MLFLOW_TRACKING_URI"):
        every_trial.append(f"mlflow.tracking_uri={uri}")
    trainable = tune.with_resources(
        tune.with_parameters(
            _run_trial,
            config_path=str(Path(sweep.config_path).resolve()),
            overrides=every_trial,
            sweep=sweep.name,
            cpus=cpus,
            parent_run_id=parent,
        ),
        {"CPU": TRIAL_CPU},
    )
    if resume and tune.Tuner.can_restore(str(sweep_dir / "tune")):
        return tune.Tuner.restore(str(sweep_dir / "tune"), trainable=trainable, resume_errored=True)
    # max_t one past the stream: ASHA stops a trial that reaches max_t, and Tune kills it then,
    # before its run could write its summary and artifacts; its rungs (1, 2, 4, ... tasks) stay
    asha = ASHAScheduler(time_attr="tasks_done", max_t=tasks + 1, grace_period=1, reduction_factor=2)
    return tune.Tuner(
        trainable,
        param_space=to_ray(space),
        tune_config=tune.TuneConfig(
            metric=sweep.metric,
            mode=METRICS[sweep.metric],
            num_samples=sweep.num_samples,
            max_concurrent_trials=sweep.max_concurrent,
            scheduler=asha if sweep.scheduler == "asha" else None,
            # the generator itself limits the running trials: with a search algorithm given,
            # Tune leaves max_concurrent_trials to it
            search_alg=BasicVariantGenerator(max_concurrent=sweep.max_concurrent, random_state=base.seed),
        ),
        run_config=tune.RunConfig(
            name="tune", storage_path=str(sweep_dir), verbose=1, failure_config=tune.FailureConfig(max_failures=0)
        ),
    )


def _finish(
    sweep: Sweep, space: SearchSpace, base: Config, grid: list, tasks: int, uri: str, parent: str, sweep_dir: Path, log
) -> dict:
    """The trial table, ``best.yaml`` and the parent run's metrics and artifacts, after the sweep."""
    from pipelines.tracking import finish_run

    keys = [k for k, p in space.params.items() if p.kind != "value"]
    rows = _rows(grid, keys, sweep.metric, tasks)
    _close_stopped_trials(uri, base, sweep.name, rows)
    markdown = _format_rows(rows, keys, sweep.metric)
    (sweep_dir / "trials.md").write_text(markdown)
    write_csv(sweep_dir / "trials.csv", rows)
    finished = [r for r in rows if r["status"] == "finished"]
    artifacts = [sweep_dir / "trials.md", sweep_dir / "trials.csv"]
    best_config = None
    if finished:
        best_config = _write_best(sweep, space, grid, finished[0], sweep_dir / "best.yaml")
        tuned_on = config_to_dict(_best_trial_config(sweep, space, grid, finished[0]))["stream"]
        artifacts += [
            best_config,
            _write_best_params(base, space, grid, finished[0], sweep_dir / "best_params.yaml", tuned_on),
        ]
    best_metrics = {f"best_{k}": finished[0][k] for k in METRICS} if finished else {}
    finish_run(uri, parent, {**best_metrics, "trials": len(rows), "trials_finished": len(finished)}, artifacts)
    log(f"\nsweep {sweep.name}: {len(rows)} trials, {len(finished)} finished\n\n{markdown}")
    log(
        f"written to {sweep_dir}/trials.md, trials.csv"
        + (f", best.yaml\nrun the best config with: mssr run {best_config}" if best_config else "")
    )
    return {"name": sweep.name, "dir": str(sweep_dir), "rows": rows, "best_config": str(best_config or "")}


def _best_trial_config(sweep: Sweep, space: SearchSpace, grid: list, best_row: dict) -> Config:
    """The best finished trial's config (its sampled values applied; not its per-trial settings)."""
    best = next(r for r in grid if (r.metrics or {}).get("trial_id") == best_row["trial"])
    return _trial_config(sweep.config_path, sweep.overrides, {k: best.config[k] for k in space.params})


def _write_best(sweep: Sweep, space: SearchSpace, grid: list, best_row: dict, path: Path) -> Path:
    """The best finished trial's whole config, ready for ``mssr run`` (a fresh run name each time)."""
    tree = config_to_dict(_best_trial_config(sweep, space, grid, best_row))
    tree["run"]["name"] = None
    path.write_text(
        f"# best trial {best_row['trial']} of sweep {sweep.name}: {sweep.metric} "
        f"{best_row[sweep.metric]:.4f}\n#   mssr run {path}\n" + yaml.safe_dump(tree, sort_keys=False)
    )
    return path


def _plain(value):
    """A plain Python value: Tune may sample NumPy scalars, which YAML cannot write."""
    return value.item() if hasattr(value, "item") else value


def _write_best_params(
    base: Config, space: SearchSpace, grid: list, best_row: dict, path: Path, tuned_on: Optional[dict] = None
) -> Path:
    """The best trial's swept settings only, under its strategy's name: the format of
    ``mssr compare --tuned`` (several sweeps' files give each strategy its own); and, under
    ``tuned_on``, the stream settings the trials ran on (``config_to_dict(cfg)["stream"]``,
    split included), so that a comparison can check that it never scores a prompt the sweep saw
    (``mssr.splits.check_disjoint``)."""
    best = next(r for r in grid if (r.metrics or {}).get("trial_id") == best_row["trial"])
    swept = {k: _plain(best.config[k]) for k, p in space.params.items() if p.kind != "value"}
    strategy = best.config.get("replay.strategy", base.replay.strategy)
    tree = {strategy: swept}
    if tuned_on is not None:
        tree["tuned_on"] = tuned_on
    path.write_text(
        f"# the swept settings of the best trial ({best_row['trial']}); for mssr compare --tuned {path}\n"
        + yaml.safe_dump(tree, sort_keys=False)
    )
    return path


def _fit_noting_interrupt(tuner):
    """``tuner.fit()``, and whether it ended on Ctrl-C.

    On the first SIGINT Tune stops the trials, saves its state and returns normally; its
    handler puts back the SIGINT handler it replaced. So: install ours before ``fit()``; if
    it is back in place afterwards, the sweep was interrupted.
    """
    if threading.current_thread() is not threading.main_thread():  # Tune installs no handler there
        return tuner.fit(), False
    previous = signal.getsignal(signal.SIGINT)

    def ours(sig, frame):  # a second Ctrl-C (or Tune's handler disabled): stop at once
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, ours)
    try:
        grid = tuner.fit()
        return grid, signal.getsignal(signal.SIGINT) is ours
    finally:
        signal.signal(signal.SIGINT, previous)


def _corner_trials(space: SearchSpace) -> list[dict]:
    """Every key at its first value, then each key at each of its values (cheap, covers every bound)."""
    first = {k: p.values[0] for k, p in space.params.items()}
    return [first] + [{**first, k: v} for k, p in space.params.items() for v in p.values[1:]]


def _close_stopped_trials(uri: str, base: Config, sweep: str, rows: list[dict]) -> None:
    """Mark the MLflow runs of trials that ASHA stopped (their process was ended mid-run) KILLED."""
    from pipelines.tracking import mlflow_client

    client = mlflow_client(uri)
    for row in rows:
        if row["status"] == "finished":
            continue
        record = Path(base.run.output_dir).resolve() / trial_run_name(sweep, row["trial"]) / "run.json"
        if record.exists():
            run_id = json.loads(record.read_text())["mlflow_run_id"]
            if client.get_run(run_id).info.status == "RUNNING":
                client.set_tag(run_id, "stopped_early", row["status"])
                client.set_terminated(run_id, status="KILLED")
