"""``mssr continue RUN_DIR --tasks MORE.yaml``: teach a finished run its next tasks.

    mssr continue runs/week1 --tasks week2.yaml                  # a new run: runs/week1-cont1
    mssr continue runs/week1-cont1 --tasks week3.yaml --name week3

``MORE.yaml`` gives the new tasks as a config's stream does (paths relative to the file)::

    stream:
      tasks:
        - {name: invoices, train: data/invoices_train.jsonl, test: data/invoices_test.jsonl}

Everything else is the finished run's: its config (model, training, replay settings, seed)
with the stream extended by the new tasks, and its state from its last checkpoint: the model,
the optimizer and LR schedule, the random states, the replay pool and its memory strengths,
the replay clock, scheduler and spent budget. The new tasks are first scored on the model as
the run left it (their cells of the last row), then trained as if the stream had always had
them; the matrices and metrics cover the whole stream. Their cells in the earlier rows are
not measured (NaN; FWT leaves them out).

A continuation is a new run (its own directory, checkpoints and MLflow run) that records
what it continues: ``run.json`` has ``continues`` (the run directory, MLflow run and
checkpoint), and its MLflow run the tags ``mssr.continues`` (the previous run's id) and
``mssr.lineage`` (the first run of the chain), so each week's model stays as it was and the
chain can be followed back. Checked before anything starts: the run finished, its last
checkpoint is there, its stream still loads, the new names clash with none of its tasks.

With the same config and seed, a run continued with tasks gives the matrices of one run over
the whole stream where both measure a cell, if the schedule depends on nothing the first run
could not know: a replay budget given as a fraction, and schedules derived from it (fixed
intervals, pacing), are planned over the stream a run is given, as is an LR schedule that is
not constant; a continuation re-plans them over the extended stream, from where the run
stood. The replay budget of a continuation is the extended stream's, less what was spent.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

import yaml

from mssr.config import Config, TaskSpec, config_to_dict, load_config
from mssr.errors import ConfigError, UserError
from mssr.tasks import load_stream, ordered
from pipelines.export import checkpoint_root, finished_run, task_checkpoints


def _new_tasks(path: str) -> list[TaskSpec]:
    """The ``stream.tasks`` of ``path`` (the only key it may set)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--tasks {p}: file not found")
    try:
        tree = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: not valid YAML: {e}".splitlines()[0]) from None
    extra = sorted(set(tree) - {"stream"}) if isinstance(tree, dict) else ["(not a mapping)"]
    extra += sorted(set((tree.get("stream") or {}) if isinstance(tree, dict) else {}) - {"tasks"})
    if extra:
        raise ConfigError(
            f"{p}: only stream.tasks is read (the rest of the config is the run's: same model and "
            f"settings); found {', '.join(extra)}"
        )
    if not ((tree.get("stream") or {}).get("tasks")):
        raise ConfigError(f"{p}: stream.tasks: expected at least one task to continue with")
    return load_config(p).stream.tasks


def _next_name(run_dir: Path) -> str:
    """``week1`` -> ``week1-cont1``; ``week1-cont1`` -> ``week1-cont2`` (the first free one)."""
    stem = re.sub(r"-cont\d+$", "", run_dir.name)
    n = 1
    while (run_dir.parent / f"{stem}-cont{n}").exists():
        n += 1
    return f"{stem}-cont{n}"


def plan_continuation(run_dir: str | Path, tasks_path: str, name: Optional[str] = None) -> tuple[Config, dict]:
    """The continuation's config (the run's, its stream extended) and its ``continues`` record."""
    run_dir = Path(run_dir).resolve()
    cfg, summary = finished_run(run_dir, "continue")
    record = json.loads((run_dir / "run.json").read_text())
    done = len(summary["tasks"])
    last = task_checkpoints(checkpoint_root(run_dir)).get(done)
    if last is None:
        raise UserError(f"continue: {run_dir} has no checkpoint after its last task (task {done})")
    try:
        # in the order the run trained them (built-in specs come back ordered)
        old = ordered(cfg.stream.tasks, cfg.stream.order_seed) if cfg.stream.tasks else _builtin_specs(cfg)
        load_stream(cfg.stream)
    except UserError as e:
        raise UserError(f"continue: the run's own tasks must still load: {e}") from None
    new = _new_tasks(tasks_path)
    clash = sorted({t.name for t in old} & {t.name for t in new})
    if clash:
        raise ConfigError(f"{tasks_path}: task names already in the run: {', '.join(clash)}")
    tree = config_to_dict(cfg)
    tree["stream"]["tasks"] = [t.model_dump(mode="json") for t in old + new]
    tree["stream"]["builtin"] = None
    tree["stream"]["order_seed"] = None  # the list above is the trained order, the new tasks after it
    tree["run"]["name"] = name or _next_name(run_dir)
    tree["run"]["output_dir"] = str(run_dir.parent)
    continues = {
        "run_dir": str(run_dir),
        "mlflow_run_id": record["mlflow_run_id"],
        "checkpoint": last,
        "tasks_before": done,
        "lineage": (record.get("continues") or {}).get("lineage", record["mlflow_run_id"]),
    }
    return Config.model_validate(tree), continues


def _builtin_specs(cfg: Config) -> list[TaskSpec]:
    from mssr.builtin_stream import builtin_task_specs

    return builtin_task_specs(cfg.stream)


def continue_run(
    run_dir: str | Path,
    tasks_path: str,
    name: Optional[str] = None,
    summary_json: Optional[Path] = None,
    register: Optional[str] = None,
    log=print,
) -> dict:
    """Continue the finished run in ``run_dir`` with the tasks of ``tasks_path``; the new run's summary."""
    from pipelines.run import run_stream

    cfg, continues = plan_continuation(run_dir, tasks_path, name)
    added = [t.name for t in cfg.stream.tasks[continues["tasks_before"] :]]
    log(f"continuing {continues['run_dir']} (after task {continues['tasks_before']}) with: {', '.join(added)}")
    return run_stream(cfg, summary_json=summary_json, log=log, register=register, continues=continues)
