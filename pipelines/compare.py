"""``mssr compare``: several strategies on the same stream, blocks (seeds x task orders) and
budgets; tables with paired differences, 95% intervals and what the blocks can detect.

    mssr compare configs/compare.yaml --strategies none,fixed,accuracy,mssr --seeds 3 --budgets 0.05,0.1
    mssr compare configs/tiny.yaml --strategies fixed,mssr --seeds 2 --orders 2 --primary loss_final
    mssr compare configs/compare.yaml --strategies none,none+static,none+epi,mssr+epi --detect 0.1

An entry ``STRATEGY+ISOLATION`` also sets ``isolation.method`` (mssr/isolation.py), so
replay strategies and parameter isolation are compared in one table.

Every (block, budget, strategy) is one ordinary ``mssr run`` (same config, the strategy,
seed, task order and budget overridden), logged as its own MLflow run tagged
``comparison_id=<name>`` (and ``budget``). A block is one seed and one task order:
``--seeds N --orders K`` runs N x K blocks, order 0 the stream's listed order and order o
``stream.order_seed=o``, so a claim rests on several orders, not one. With ``--budgets``,
every strategy runs at every budget, and the fixed-interval schedules (``fixed``,
``mssr-sampler``) derive their interval from the budget so that they spend it
(``replay.fixed.interval`` null); strategies that never replay (``none``, ``joint``) run
once per block and appear at every budget. All runs are validated before the first starts.

The tables (``pipelines.analysis``): per budget, the mean ± std over blocks of every
strategy, then the paired difference against ``--reference`` (default ``fixed``) of the
**primary metric** named up front (``--primary``, default ``loss_final``, the mean final
answer loss), AP and the others, each with a 95% t interval over blocks that folds in the
test rows' shared noise (``mssr.intervals``); "no difference resolved" where it contains
zero, with the smallest difference these blocks detect at 80% power (``--detect D``: the
blocks D would take). Pairs whose runs ran on different processor kinds or precisions are
refused unless ``--allow-mixed``. With ``--tuned`` files written by ``mssr tune``, the
comparison runs on the stream's evaluation part (``stream.split=eval``) and refuses to start
when one of its test prompts was among the sweep's rows. Written to
``<output_dir>/comparisons/<name>/`` (``table.md``, ``table.csv``, ``runs.csv``,
``intervals.csv``), rewritten after every run, so an interrupted comparison keeps what it
finished.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Optional

import numpy as np
import yaml

from mssr.config import Config, config_differences, config_to_dict, load_config
from mssr.errors import ConfigError, UserError
from mssr.isolation import ISOLATIONS
from mssr.strategies import STRATEGIES, build_strategy
from pipelines.analysis import (
    ANY_BUDGET,
    CONFIG_BUDGET,
    DEFAULT_PRIMARY,
    MixedPairs,
    block_label,
    paired_metrics,
    run_row,
    write_outputs,
)

DEFAULT_STRATEGIES = [
    "none",
    "joint",
    "fixed",
    "loss",
    "accuracy",
    "surprise",
    "mssr",
    "mssr-sampler",
    "mssr-scheduler",
]


@dataclass(frozen=True)
class PlannedRun:
    cfg: Config
    entry: str  # "fixed", "mssr+epi", ...
    budget: str  # "0.05", CONFIG_BUDGET, or ANY_BUDGET for a strategy that never replays
    order: Optional[int] = None  # stream.order_seed of its block (None: the listed order)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def entry_overrides(entry: str) -> list[str]:
    """``"mssr+epi"`` -> ``["replay.strategy=mssr", "isolation.method=epi"]``; ``"fixed"`` -> the strategy only."""
    strategy, plus, isolation = entry.partition("+")
    if ":" not in strategy:
        STRATEGIES.get(strategy)  # unknown name -> ConfigError with the nearest one
    if not plus:
        return [f"replay.strategy={strategy}"]
    if ":" not in isolation:
        ISOLATIONS.get(isolation)
    return [f"replay.strategy={strategy}", f"isolation.method={isolation}"]


def load_tuned(paths: Optional[str]) -> dict[str, list[str]]:
    """``--tuned a.yaml,b.yaml``: each file maps a strategy entry to its tuned settings (dotted
    config keys), as ``mssr tune`` writes them in ``best_params.yaml``::

        fixed: {replay.samples_per_event: 8, replay.balance_tasks: true}
        mssr: {replay.scheduler: paced, replay.mssr.decay: 0.01}

    Returns entry -> ``key=value`` overrides; a later file's entry replaces an earlier one's."""
    tuned: dict[str, list[str]] = {}
    for path in [p.strip() for p in (paths or "").split(",") if p.strip()]:
        try:
            tree = yaml.safe_load(Path(path).read_text())
        except OSError as e:
            raise ConfigError(f"--tuned {path}: cannot be read ({e.strerror})") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"--tuned {path}: not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(tree, dict) or not all(isinstance(v, dict) for v in tree.values()):
            raise ConfigError(f"--tuned {path}: expected a mapping of strategy -> {{config.key: value}}")
        for entry, knobs in tree.items():
            if entry == TUNED_ON:  # the sweep's stream, for tuned_on_streams
                continue
            entry_overrides(str(entry))  # an unknown strategy name is refused with the nearest one
            tuned[str(entry)] = [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in knobs.items()]
    return tuned


TUNED_ON = "tuned_on"  # the key under which mssr tune records the stream it tuned on


def tuned_on_streams(paths: Optional[str]) -> dict[str, Optional[dict]]:
    """Each ``--tuned`` file's ``tuned_on`` stream settings (None for a file that does not
    record them: written by hand, or by a sweep older than the record)."""
    out: dict[str, Optional[dict]] = {}
    for path in [p.strip() for p in (paths or "").split(",") if p.strip()]:
        tree = yaml.safe_load(Path(path).read_text()) or {}  # load_tuned has checked the file
        out[path] = tree.get(TUNED_ON) if isinstance(tree, dict) else None
    return out


def check_tuning_disjoint(tuned_on: dict[str, Optional[dict]], cfg: Config, log) -> None:
    """Refuse (one line) a comparison one of whose test prompts a sweep of ``--tuned`` saw; say
    which files cannot be checked."""
    from mssr.splits import check_disjoint

    for path, stream in tuned_on.items():
        if stream is None:
            log(f"--tuned {path}: it does not record the stream it was tuned on, so its rows cannot be checked")
            continue
        try:
            check_disjoint(stream, cfg.stream)
        except ConfigError as e:
            raise ConfigError(f"{e} ({path})") from None


def parse_budgets(text: Optional[str]) -> Optional[list[float]]:
    """``"0.02,0.05"`` -> ``[0.02, 0.05]`` (fractions of the new samples, or whole sample counts)."""
    if not text:
        return None
    try:
        budgets = [float(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise ConfigError(f"--budgets: expected numbers separated by commas, e.g. 0.05,0.1 (got {text!r})") from None
    if not budgets or any(b <= 0 for b in budgets):
        raise ConfigError(f"--budgets: every budget must be positive (got {text!r})")
    return budgets


def _budget_label(budget: float) -> str:
    return f"{budget:g}"


def plan_runs(
    config_path: str,
    overrides: list[str],
    strategies: list[str],
    seeds: int,
    name: str,
    budgets: Optional[list[float]] = None,
    tuned: Optional[dict[str, list[str]]] = None,
    orders: int = 1,
) -> list[PlannedRun]:
    """One validated config per (block, budget, strategy entry), blocks outermost (seeds, then
    orders); raises ConfigError before anything runs. ``tuned``: an entry's own settings
    (``load_tuned``), applied after the shared overrides (the budget's derived interval still
    wins). ``orders``: order 0 is the listed order, order o >= 1 ``stream.order_seed=o``; run
    names gain ``-o<o>`` when there are several."""
    from pipelines.startup import validate

    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1 (got {seeds})")
    if orders < 1:
        raise ConfigError(f"--orders must be at least 1 (got {orders})")
    if not strategies:
        raise ConfigError("--strategies: give at least one strategy, e.g. --strategies fixed,mssr")
    for s in strategies:
        entry_overrides(s)
    tuned = tuned or {}  # entries of strategies not run are left unused (compare says so)
    # a comparison's runs are measured, not deployed: no MLflow model unless the user asks for it
    overrides = ["mlflow.log_model=false", *overrides]
    base = load_config(config_path, overrides)
    if orders > 1 and base.stream.order_seed is not None:
        raise ConfigError("--orders: the config fixes stream.order_seed; leave it null to compare over orders")
    planned = []
    blocks = [(seed, order) for seed in range(base.seed, base.seed + seeds) for order in range(orders)]
    for seed, order in blocks:
        order_seed = order or None  # order 0: the listed order
        suffix = f"-o{order}" if orders > 1 else ""
        for budget in budgets or [None]:
            for entry in strategies:
                extra = [*entry_overrides(entry), *tuned.get(entry, []), f"seed={seed}"]
                if orders > 1:
                    extra.append(f"stream.order_seed={'null' if order_seed is None else order_seed}")
                cfg = load_config(config_path, [*overrides, *extra])
                replays = build_strategy(cfg.replay.strategy, cfg.replay).replays
                if budget is None:
                    label, run_name = CONFIG_BUDGET, f"{name}-{_safe(entry)}-s{seed}{suffix}"
                elif not replays:  # its runs do not depend on the budget: once per block
                    if budget != budgets[0]:
                        continue
                    label, run_name = ANY_BUDGET, f"{name}-{_safe(entry)}-s{seed}{suffix}"
                else:  # the budget, and fixed schedules derive their interval from it
                    at = _budget_label(budget)
                    label, run_name = at, f"{name}-{_safe(entry)}-b{at}-s{seed}{suffix}"
                    extra += [f"replay.budget={budget}", "replay.fixed.interval=null"]
                cfg = load_config(config_path, [*overrides, *extra, f"run.name={run_name}"])
                validate(cfg)
                _check_same_config(cfg, name)
                planned.append(PlannedRun(cfg, entry, label, order_seed if orders > 1 else cfg.stream.order_seed))
    return planned


def _check_same_config(cfg: Config, name: str) -> None:
    """A run directory left by an earlier invocation of this comparison must hold this config."""
    run_dir = Path(cfg.run.output_dir) / cfg.run.name
    if not run_dir.exists():
        return
    saved = run_dir / "config.yaml"
    differences = (
        ["config.yaml missing"]
        if not saved.exists()
        else config_differences(yaml.safe_load(saved.read_text()), config_to_dict(cfg))
    )
    if differences:
        raise ConfigError(
            f"--name {name}: {run_dir} exists with another config ({'; '.join(differences[:3])}); "
            "choose another --name for this comparison"
        )


def time_left(walls: list[float], runs_left: int) -> str:
    """`` (about 2h05m left: 9 runs at the 13.9 min a finished run took)``, from the wall times of
    the finished runs (kept ones included); empty before the first has finished."""
    if not walls or runs_left <= 0:
        return ""
    each = float(np.mean(walls))
    left = int(round(each * runs_left / 60))
    pace = f"{runs_left} runs at the {each / 60:.1f} min a finished run took"
    return f" (about {left // 60}h{left % 60:02d}m left: {pace})"


def _finished_or_run(p: PlannedRun, name: str, log) -> dict:
    """The run's summary: kept from an earlier invocation of the same comparison when it
    finished, continued from its last checkpoint when it was cut off, else a new run."""
    from pipelines.run import run_stream

    run_dir = Path(p.cfg.run.output_dir) / p.cfg.run.name
    if run_dir.exists():  # the same config (checked by plan_runs)
        if (summary := _kept_summary(p)) is not None:
            log(f"{run_dir.name} finished in an earlier invocation: kept")
            return summary
        log(f"{run_dir.name} was cut off: continuing it from its last checkpoint")
        return run_stream(p.cfg, log=log, resume="")
    return run_stream(p.cfg, log=log, tags={"comparison_id": name, "budget": p.budget})


def this_machine(cfg: Config) -> Optional[str]:
    """The ``machine`` a run of ``cfg`` started here would record (processor kind / train / eval
    precision, as ``pipelines.analysis`` pairs runs); None for GPU workers, whose kind only the
    workers' node knows."""
    if cfg.train.use_gpu:
        return None
    from mssr.models import resolve_dtype
    from mssr.optim import resolve_autocast
    from mssr.provenance import pairing_key, precisions, processor_kind, processor_model

    train, evaluation = precisions(
        resolve_dtype(cfg.model, "cpu"),
        resolve_autocast(cfg.train.autocast, "cpu"),
        resolve_autocast(cfg.eval.autocast, "cpu", "eval"),
        cfg.model.finetune,
    )
    key = {"processor_kind": processor_kind(processor_model()), "train_precision": train, "eval_precision": evaluation}
    return " / ".join(pairing_key(key))


def _kept_summary(p: PlannedRun) -> Optional[dict]:
    """The summary of a planned run that an earlier invocation finished, else None."""
    path = Path(p.cfg.run.output_dir) / p.cfg.run.name / "summary.json"
    return json.loads(path.read_text()) if path.exists() else None


def check_kept_runs_pair(planned: list[PlannedRun], allow_mixed: bool, log) -> None:
    """Before anything runs: a block whose kept runs (from an earlier invocation, perhaps on
    another machine) and the runs still to make here would differ in processor kind or
    precision is refused unless ``allow_mixed``."""
    from mssr.provenance import pairing_key, summary_provenance

    here = this_machine(planned[0].cfg)
    machines: dict[tuple, dict[str, str]] = {}
    for p in planned:
        if (summary := _kept_summary(p)) is not None:
            machine = " / ".join(pairing_key(summary_provenance(summary)))
        elif here is not None:
            machine = here
        else:
            continue
        machines.setdefault((p.cfg.seed, p.order), {})[p.cfg.run.name] = machine
    for block, runs in machines.items():
        if len(set(runs.values())) > 1:
            where = "; ".join(f"{name}: {m}" for name, m in runs.items())
            if not allow_mixed:
                raise MixedPairs(
                    f"{block_label(block)}: its runs would pair different processor kinds or precisions ({where}); "
                    "run the comparison where its kept runs ran, or pass --allow-mixed (counted in the table)"
                )
            log(f"{block_label(block)} mixes processor kinds or precisions (--allow-mixed): {where}")


def note_kept_commits(planned: list[PlannedRun], log, commit: Optional[str] = None) -> None:
    """One line when runs kept from an earlier invocation were made at another commit than
    this code's (``commit``, default the checkout's): a setting added since at its default
    leaves their config unchanged, yet may change what a strategy does, so a comparison's runs
    are best made by one version of the code (run it from a checkout of theirs)."""
    from mssr.provenance import git_state

    commit = commit or git_state()[0]
    kept: dict[str, int] = {}
    for p in planned:
        if (summary := _kept_summary(p)) is not None:
            made_at = summary.get("provenance", {}).get("commit")
            if made_at and commit and made_at != commit:
                kept[made_at] = kept.get(made_at, 0) + 1
    if kept:
        at = ", ".join(f"{n} at {c[:7]}" for c, n in kept.items())
        log(f"kept runs made by other code than this ({commit[:7]}): {at}; the runs still to make use this code")


def compare(
    config_path: str,
    overrides: list[str],
    strategies: Optional[list[str]] = None,
    seeds: int = 1,
    name: Optional[str] = None,
    budgets: Optional[list[float]] = None,
    reference: Optional[str] = None,
    tuned: Optional[dict[str, list[str]]] = None,
    tuned_on: Optional[dict[str, Optional[dict]]] = None,
    orders: int = 1,
    primary: str = DEFAULT_PRIMARY,
    detect: Optional[float] = None,
    allow_mixed: bool = False,
    log=print,
) -> dict:
    """Run every strategy in every block (and budget); return ``{"name", "runs", "dir", "markdown"}``.

    ``tuned_on``: the stream each ``--tuned`` file was tuned on (``tuned_on_streams``): the
    comparison then scores the evaluation part of the prompts and checks that no sweep saw one
    of its test prompts. Run again with the same ``name`` after an interruption, it keeps the
    runs that finished and continues the one that was cut off."""
    strategies = strategies or DEFAULT_STRATEGIES
    reference = _checked_reference(strategies, reference, primary, detect)
    name = _safe(name or f"cmp-{datetime.now():%Y%m%d-%H%M%S}")
    if tuned_on:
        overrides = [*_evaluation_part(config_path, overrides, log), *overrides]
    planned = plan_runs(config_path, overrides, strategies, seeds, name, budgets, tuned, orders)
    if tuned_on:
        check_tuning_disjoint(tuned_on, planned[0].cfg, log)
    check_kept_runs_pair(planned, allow_mixed, log)
    note_kept_commits(planned, log)
    unused = sorted(set(tuned or {}) - set(strategies))
    if unused:  # one file of tuned settings serves comparisons of different strategies
        log(f"--tuned: the settings for {', '.join(unused)} are not used (not in --strategies)")
    out = Path(planned[0].cfg.run.output_dir) / "comparisons" / name
    runs: list[dict] = []
    walls: list[float] = []  # the finished runs' wall times, for the time left
    markdown = ""
    for i, p in enumerate(planned, 1):
        at = "" if p.budget in (CONFIG_BUDGET, ANY_BUDGET) else f", budget {p.budget}"
        block = block_label((p.cfg.seed, p.order))
        left = time_left(walls, len(planned) - i + 1)
        log(f"\n=== comparison {name}: run {i}/{len(planned)}: strategy {p.entry}, {block}{at} ==={left}")
        runs.append(_run_row(p, name, f"{i}/{len(planned)}", log))
        if "error" not in runs[-1]:
            walls.append(float(runs[-1]["wall s"]))
        markdown = write_outputs(out, runs, reference, primary, detect, allow_mixed)
    log(f"\ncomparison {name} ({len(planned)} runs, MLflow tag comparison_id={name}):\n\n{markdown}")
    log(f"written to {out.resolve()}/table.md, table.csv, runs.csv, intervals.csv")
    return {"name": name, "runs": runs, "dir": str(out.resolve()), "markdown": markdown}


def _checked_reference(strategies: list[str], reference: Optional[str], primary: str, detect: Optional[float]):
    """The strategy the others are paired against (``fixed`` when compared, else none), once
    ``--reference``, ``--primary`` and ``--detect`` are checked, before anything runs."""
    if reference is not None and reference not in strategies:
        raise ConfigError(f"--reference {reference!r} is not among --strategies ({', '.join(strategies)})")
    paired_metrics(primary)  # an unknown --primary: refused
    if detect is not None and detect <= 0:
        raise ConfigError(f"--detect: the difference to detect must be positive (got {detect:g})")
    return reference or ("fixed" if "fixed" in strategies else None)  # None: no paired differences


def _run_row(p: PlannedRun, name: str, position: str, log) -> dict:
    """One planned run, kept or run now, as its row of the tables; a run that crashed is a row
    with its error, and the comparison goes on. Ctrl-C (or SIGTERM) stops the comparison:
    what finished is kept, and the run cut off resumes when the command is run again."""
    try:
        summary = _finished_or_run(p, name, log)
        run_dir = Path(p.cfg.run.output_dir) / p.cfg.run.name  # planned, not summary's: runs can move
        return run_row(summary, p.entry, p.budget, run_dir, p.order)
    except KeyboardInterrupt:
        done = int(position.split("/")[0]) - 1
        log(
            f"comparison {name} stopped in run {position}; run the same mssr compare command again: "
            f"the {done} finished run(s) are kept and {p.cfg.run.name} continues from its last checkpoint"
        )
        raise
    except UserError:
        raise
    except Exception as e:
        log(f"run {p.cfg.run.name} failed: {type(e).__name__}: {e}")
        error = f"{type(e).__name__}: {e}"
        return {"strategy": p.entry, "seed": p.cfg.seed, "order": p.order, "budget": p.budget, "error": error}


def _evaluation_part(config_path: str, overrides: list[str], log) -> list[str]:
    """With tuned settings, the comparison scores the prompts' evaluation part: ``stream.split``
    ``all`` becomes ``eval`` (said in one line); ``tune`` is refused."""
    split = load_config(config_path, overrides).stream.split
    if split == "tune":
        raise ConfigError(
            "stream.split=tune: a comparison scores the evaluation part of the prompts; use eval (or leave it out)"
        )
    if split == "all":
        log("--tuned: scoring the evaluation part of each task's prompts (stream.split=eval), which no sweep tunes on")
        return ["stream.split=eval"]
    return []
