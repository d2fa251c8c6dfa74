"""``mssr compare``: several strategies on the same stream, seeds and budgets; tables with
paired differences and 95% intervals.

    mssr compare configs/compare.yaml --strategies none,fixed,accuracy,mssr --seeds 3 --budgets 0.05,0.1
    mssr compare configs/tiny.yaml --strategies fixed,mssr --name my-cmp train.lr=5e-4
    mssr compare configs/compare.yaml --strategies none,none+static,none+epi,mssr+epi

An entry ``STRATEGY+ISOLATION`` also sets ``isolation.method`` (mssr/isolation.py), so
replay strategies and parameter isolation are compared in one table.

Every (seed, budget, strategy) is one ordinary ``mssr run`` (same config, the strategy,
seed and budget overridden), logged as its own MLflow run tagged ``comparison_id=<name>``
(and ``budget``). With ``--budgets``, every strategy runs at every budget, and the
fixed-interval schedules (``fixed``, ``mssr-sampler``) derive their interval from the budget
so that they spend it (``replay.fixed.interval`` null); strategies that never replay
(``none``, ``joint``) run once per seed and appear at every budget. All runs are validated
before the first one starts.

For each budget the table gives the mean ± std over seeds of each strategy, then the
**paired difference** of AP, BWT, forgetting and loss forgetting against ``--reference``
(default ``fixed``) with a 95% interval from a bootstrap over seeds and test rows
(``mssr.intervals``): runs of the same seed share the data order, and every run is scored on
the same test rows, so the pairs are resampled together. An interval that contains zero is
said to. Written to ``<output_dir>/comparisons/<name>/`` (``table.md``, ``table.csv``,
``runs.csv``, ``intervals.csv``), rewritten after every run, so an interrupted comparison
keeps what it finished.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import yaml

from mssr.config import Config, config_to_dict, flatten, load_config
from mssr.errors import ConfigError, UserError
from mssr.intervals import noise_components, paired_bootstrap, rows_scale_needed, seeds_needed
from mssr.isolation import ISOLATIONS
from mssr.metrics import average_performance, backward_transfer, forgetting
from mssr.schedulers import NeverScheduler
from mssr.strategies import STRATEGIES, build_strategy
from pipelines.tables import markdown_table, write_csv

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
CONFIG_BUDGET = "config"  # the budget label of a comparison without --budgets
ANY_BUDGET = "-"  # the budget label of a strategy that never replays: it belongs to every budget
TARGET_HALF_WIDTH = 0.02  # the AP interval half width the noise summary sizes seeds and rows for


def _overhead_percent(summary: dict) -> float:
    """What a strategy spends besides training on replayed rows: its probes' and the memory
    model's seconds, as a percentage of the run's training seconds (NaN for a run that did not
    record them)."""
    train = summary.get("train_seconds") or float("nan")
    return 100 * (summary["probe_seconds"] + summary["bookkeeping_seconds"]) / train


# (column, how to read it from a run summary, format)
COLUMNS: list[tuple[str, Callable[[dict], float], str]] = [
    ("AP", lambda s: s["ap"], ".3f"),
    ("BWT", lambda s: s["bwt"], "+.3f"),
    ("FWT", lambda s: s["fwt"], "+.3f"),
    ("forgetting", lambda s: s["forgetting"], ".3f"),
    ("Avg", lambda s: s["avg"], ".3f"),
    ("final loss", lambda s: s["loss_final"], ".3f"),
    ("loss forgetting", lambda s: s["loss_forgetting"], ".3f"),
    ("replayed", lambda s: s["replay_samples"], ".0f"),
    ("events", lambda s: s["replay_events"], ".0f"),
    ("new tok", lambda s: s["tokens"]["train_new"], ".0f"),
    ("replay tok", lambda s: s["tokens"]["train_replay"], ".0f"),
    ("probe tok", lambda s: s["tokens"]["probe"], ".0f"),
    ("eval tok", lambda s: s["tokens"]["eval"], ".0f"),
    ("step s (median)", lambda s: s["median_step_seconds"], ".3f"),
    ("probe s", lambda s: s["probe_seconds"], ".1f"),
    ("bookkeeping s", lambda s: s["bookkeeping_seconds"], ".3f"),
    ("overhead %", _overhead_percent, ".2f"),
    ("wall s", lambda s: s["wall_seconds"], ".0f"),
]

SPREAD_COLUMNS = ("AP", "BWT", "FWT", "forgetting", "Avg", "final loss", "loss forgetting")

# the metrics compared pairwise: (name, which per-row results, metric of a (T+1) x T matrix)
PAIRED_METRICS: list[tuple[str, str, Callable]] = [
    ("AP", "scores", average_performance),
    ("BWT", "scores", backward_transfer),
    ("forgetting", "scores", forgetting),
    ("loss forgetting", "losses", lambda m: forgetting(m, higher_is_better=False)),
]


@dataclass(frozen=True)
class PlannedRun:
    cfg: Config
    entry: str  # "fixed", "mssr+epi", ...
    budget: str  # "0.05", CONFIG_BUDGET, or ANY_BUDGET for a strategy that never replays


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
            entry_overrides(str(entry))  # an unknown strategy name is refused with the nearest one
            tuned[str(entry)] = [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in knobs.items()]
    return tuned


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
) -> list[PlannedRun]:
    """One validated config per (seed, budget, strategy entry), seeds outermost; raises
    ConfigError before anything runs. ``tuned``: an entry's own settings (``load_tuned``),
    applied after the shared overrides (the budget's derived interval still wins)."""
    from pipelines.run import validate

    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1 (got {seeds})")
    if not strategies:
        raise ConfigError("--strategies: give at least one strategy, e.g. --strategies fixed,mssr")
    for s in strategies:
        entry_overrides(s)
    tuned = tuned or {}  # entries of strategies not run are left unused (compare says so)
    # a comparison's runs are measured, not deployed: no MLflow model unless the user asks for it
    overrides = ["mlflow.log_model=false", *overrides]
    base = load_config(config_path, overrides)
    planned = []
    for seed in range(base.seed, base.seed + seeds):
        for budget in budgets or [None]:
            for entry in strategies:
                extra = [*entry_overrides(entry), *tuned.get(entry, []), f"seed={seed}"]
                cfg = load_config(config_path, [*overrides, *extra])
                replays = not isinstance(build_strategy(cfg.replay.strategy, cfg.replay).scheduler, NeverScheduler)
                if budget is None:
                    label, run_name = CONFIG_BUDGET, f"{name}-{_safe(entry)}-s{seed}"
                elif not replays:  # its runs do not depend on the budget: once per seed
                    if budget != budgets[0]:
                        continue
                    label, run_name = ANY_BUDGET, f"{name}-{_safe(entry)}-s{seed}"
                else:  # the budget, and fixed schedules derive their interval from it
                    label, run_name = _budget_label(budget), f"{name}-{_safe(entry)}-b{_budget_label(budget)}-s{seed}"
                    extra += [f"replay.budget={budget}", "replay.fixed.interval=null"]
                cfg = load_config(config_path, [*overrides, *extra, f"run.name={run_name}"])
                validate(cfg)
                _check_same_config(cfg, name)
                planned.append(PlannedRun(cfg, entry, label))
    return planned


def budget_groups(runs: list[dict]) -> list[str]:
    """The budgets of a comparison, in first-seen order (the runs that never replay belong to all)."""
    labels = list(dict.fromkeys(r["budget"] for r in runs if r["budget"] != ANY_BUDGET))
    return labels or [ANY_BUDGET]


def runs_at(runs: list[dict], budget: str) -> list[dict]:
    return [r for r in runs if r["budget"] in (budget, ANY_BUDGET)]


def aggregate(runs: list[dict]) -> list[dict]:
    """Per strategy, in first-seen order: mean and std over seeds of every column of the run rows."""
    table = []
    for strategy in dict.fromkeys(r["strategy"] for r in runs):
        done = [r for r in runs if r["strategy"] == strategy and "error" not in r]
        row = {
            "strategy": strategy,
            "seeds": len(done),
            "failed": sum(1 for r in runs if r["strategy"] == strategy and "error" in r),
        }
        for col, _, _ in COLUMNS:
            values = np.array([r[col] for r in done], dtype=float)
            row[col] = float(values.mean()) if values.size else float("nan")
            row[col + " std"] = float(values.std(ddof=1)) if values.size > 1 else 0.0
        table.append(row)
    fixed = next((r for r in table if r["strategy"] == "fixed" and r["seeds"]), None)
    for row in table:  # MSSR's overhead claim is relative to fixed-interval replay
        row["step time / fixed"] = row["step s (median)"] / fixed["step s (median)"] if fixed else float("nan")
    return table


def per_row_results(eval_rows: dict, kind: str) -> list[np.ndarray]:
    """``eval_rows.json`` of a run -> per task j an array (T+1, N_j) of ``kind`` (scores or losses);
    a cell the run did not score (``eval.future_tasks``) is a row of NaN."""
    matrix = eval_rows[kind]  # [k][j][row]; [] where not scored
    out = []
    for j in range(len(eval_rows["tasks"])):
        n = max(len(matrix[k][j]) for k in range(len(matrix)))
        out.append(np.array([matrix[k][j] or [float("nan")] * n for k in range(len(matrix))], dtype=float))
    return out


def paired_differences(runs: list[dict], reference: str, n_boot: int = 2000) -> list[dict]:
    """For every strategy but ``reference``: the paired difference of each of PAIRED_METRICS over
    the seeds both finished, with its 95% interval."""
    done = [r for r in runs if "error" not in r]
    ref = {r["seed"]: r for r in done if r["strategy"] == reference}
    out = []
    for strategy in dict.fromkeys(r["strategy"] for r in done):
        if strategy == reference:
            continue
        mine = {r["seed"]: r for r in done if r["strategy"] == strategy}
        seeds = sorted(set(mine) & set(ref))
        if not seeds:
            continue
        row = {"strategy": strategy, "reference": reference, "seeds": len(seeds)}
        for metric, kind, fn in PAIRED_METRICS:
            a = [per_row_results(mine[s]["eval_rows"], kind) for s in seeds]
            b = [per_row_results(ref[s]["eval_rows"], kind) for s in seeds]
            diff = paired_bootstrap(a, b, fn, n_boot=n_boot, name=metric)
            row[metric] = diff
            if metric == "AP":
                row["noise"] = noise_components(a, b, fn, n_boot=n_boot)
        out.append(row)
    return out


def _noise_line(row: dict) -> str:
    """How wide the AP interval is, and what a ±TARGET_HALF_WIDTH interval would need."""
    ap, noise, seeds = row["AP"], row["noise"], row["seeds"]
    head = (
        f"{row['strategy']} - {row['reference']}: AP interval ±{(ap.high - ap.low) / 2:.3f} over "
        f"{seeds} seed{'s' if seeds > 1 else ''}"
    )
    if seeds < 2:
        return head + " (test rows only: with one seed, the noise between seeds is unknown)"
    n = seeds_needed(noise, TARGET_HALF_WIDTH)
    k = max(3, seeds)
    scale = rows_scale_needed(noise, TARGET_HALF_WIDTH, n_seeds=k)
    if n is None and scale is None:
        return f"{head}; ±{TARGET_HALF_WIDTH} would need both more seeds and more test rows: {_both_needed(noise)}"
    by_seeds = (
        f"about {n} seeds at these test rows"
        if n is not None
        else "more test rows (the test rows' noise alone is wider, whatever the seeds)"
    )
    by_rows = (
        f"about {max(scale, 1.0):.1f}x the test rows at {k} seeds"
        if scale is not None
        else f"more seeds (at {k} seeds the seeds' noise alone is wider, whatever the test rows)"
    )
    return f"{head}; ±{TARGET_HALF_WIDTH} would need {by_seeds}, or {by_rows}"


def _both_needed(noise: dict) -> str:
    """The fewest seeds that reach ±TARGET_HALF_WIDTH, at the two smallest of 2, 4, 8 and 16
    times the test rows where some number of seeds can."""
    options = []
    for factor in (2, 4, 8, 16):
        n = seeds_needed(noise, TARGET_HALF_WIDTH, rows_scale=factor)
        if n is not None:
            options.append(f"about {n} seeds at {factor}x the test rows")
    return "; ".join(options[:2]) if options else "over 16x the test rows"


def format_markdown(
    table: list[dict], seeds: list[int], diffs: Optional[list[dict]] = None, budget: str = CONFIG_BUDGET
) -> str:
    cols = [c for c, _, _ in COLUMNS]
    fmt = {c: f for c, _, f in COLUMNS}
    head = ["strategy", *cols, "step time / fixed"]
    title = "" if budget in (CONFIG_BUDGET, ANY_BUDGET) else f"budget {budget}: "
    rows = []
    for r in table:
        if not r["seeds"]:
            rows.append([r["strategy"]] + ["failed"] * (len(head) - 1))
            continue
        cells = [r["strategy"] + (f" ({r['failed']} failed)" if r["failed"] else "")]
        for c in cols:
            cell = format(r[c], fmt[c])
            if r["seeds"] > 1 and c in SPREAD_COLUMNS:
                cell += f" ± {r[c + ' std']:.3f}"
            cells.append(cell)
        rows.append([*cells, f"{r['step time / fixed']:.3f}"])
    lines = [f"{title}seeds: {', '.join(map(str, seeds))} (mean ± std over seeds)", "", *markdown_table(head, rows)]
    if diffs:
        names = [m for m, _, _ in PAIRED_METRICS]
        lines += [
            "",
            f"paired difference against {diffs[0]['reference']}, mean [95% interval] over seeds and "
            "test rows (loss forgetting: lower is better)",
            "",
            *markdown_table(
                ["strategy", "seeds", *(f"Δ {m}" for m in names)],
                [[d["strategy"], d["seeds"], *(d[m].text() for m in names)] for d in diffs],
            ),
        ]
        lines += [""] + [_noise_line(d) for d in diffs]
    return "\n".join(lines) + "\n"


CURVE_COMPUTE = ("replay tok", "probe tok", "overhead %")  # what each strategy spends, per budget


def _percent(budget: str) -> str:
    return f"{float(budget) * 100:g}%"


def format_budget_curves(groups: list[tuple[str, list[dict], list[dict]]]) -> str:
    """The comparison in one table: per strategy, its AP at each budget (mean over seeds), the
    paired AP difference against the reference with its 95% interval, and its compute at each
    budget. ``groups``: (budget label, ``aggregate`` table, ``paired_differences``) per budget,
    as ``write_outputs`` builds them; only numeric budgets (``--budgets``) make a curve."""
    groups = [g for g in groups if g[0] not in (CONFIG_BUDGET, ANY_BUDGET)]
    if not groups:
        return ""
    reference = next((d["reference"] for _, _, diffs in groups for d in diffs), None)
    head = ["strategy", "seeds"]
    for budget, _, _ in groups:
        head += [f"AP at {_percent(budget)}", f"Δ AP at {_percent(budget)}"]
    head += [f"{c} ({' / '.join(_percent(b) for b, _, _ in groups)})" for c in CURVE_COMPUTE]
    strategies = dict.fromkeys(r["strategy"] for _, table, _ in groups for r in table)
    fmt = {c: f for c, _, f in COLUMNS}
    rows = []
    for strategy in strategies:
        per_budget = [
            (
                next((r for r in table if r["strategy"] == strategy and r["seeds"]), None),
                next((d for d in diffs if d["strategy"] == strategy), None),
            )
            for _, table, diffs in groups
        ]
        seeds = max((r["seeds"] for r, _ in per_budget if r), default=0)
        cells = [strategy, str(seeds)]
        for row, diff in per_budget:
            cells.append(format(row["AP"], ".3f") if row else "-")
            cells.append("reference" if strategy == reference else diff["AP"].text() if diff else "-")
        for c in CURVE_COMPUTE:
            cells.append(" / ".join(format(row[c], fmt[c]) if row else "-" for row, _ in per_budget))
        rows.append(cells)
    against = f"paired difference against {reference}, " if reference else ""
    lines = [
        f"budget curves: AP (mean over seeds), Δ AP ({against}mean [95% interval] over seeds and test "
        "rows), and compute at each budget (overhead: probe and bookkeeping seconds as % of training)",
        "",
        *markdown_table(head, rows),
    ]
    return "\n".join(lines) + "\n"


def _run_row(summary: dict, planned: PlannedRun) -> dict:
    row = {"strategy": planned.entry, "seed": summary["seed"], "budget": planned.budget}
    row.update({col: get(summary) for col, get, _ in COLUMNS})
    # the planned directory, not the summary's run_dir: a comparison's runs can be moved
    run_dir = Path(planned.cfg.run.output_dir) / planned.cfg.run.name
    row.update(replay_budget=summary["replay_budget"], mlflow_run_id=summary["mlflow_run_id"], run_dir=str(run_dir))
    row["eval_rows"] = json.loads((run_dir / "eval_rows.json").read_text())
    return row


def write_outputs(out: Path, runs: list[dict], seeds: list[int], reference: Optional[str]) -> str:
    """Every budget's table and paired differences: table.md (returned), table.csv, runs.csv,
    intervals.csv; with --budgets also curves.md, every budget side by side (format_budget_curves)."""
    out.mkdir(parents=True, exist_ok=True)
    parts, table_rows, interval_rows, groups = [], [], [], []
    for budget in budget_groups(runs):
        group = runs_at(runs, budget)
        table = aggregate(group)
        diffs = paired_differences(group, reference) if reference else []
        groups.append((budget, table, diffs))
        parts.append(format_markdown(table, seeds, diffs, budget))
        table_rows += [{"budget": budget, **r} for r in table]
        interval_rows += [
            {
                "budget": budget,
                "strategy": d["strategy"],
                "reference": d["reference"],
                "seeds": d["seeds"],
                "metric": m,
                "mean": d[m].mean,
                "low": d[m].low,
                "high": d[m].high,
                "excludes_zero": d[m].excludes_zero,
            }
            for d in diffs
            for m, _, _ in PAIRED_METRICS
        ]
    curves = format_budget_curves(groups)
    if curves:  # the one-table summary of a budget sweep, also at the end of table.md
        (out / "curves.md").write_text(curves)
        parts.append(curves)
    markdown = "\n".join(parts)
    (out / "table.md").write_text(markdown)
    write_csv(out / "table.csv", table_rows)
    write_csv(out / "runs.csv", [{k: v for k, v in r.items() if k != "eval_rows"} for r in runs])
    if interval_rows:
        write_csv(out / "intervals.csv", interval_rows)
    return markdown


def config_differences(saved: dict, current: dict) -> list[str]:
    """The settings in which a run's saved config and ``current`` differ, as ``key: saved ->
    current``. Where a run's directory lies (``run.output_dir``) is not part of what it ran, so a
    comparison moved elsewhere keeps its finished runs; nor is a setting added to MSSR after the
    run that ``current`` leaves at its default, which keeps the behaviour from before it existed."""
    old, new, default = flatten(saved), flatten(current), flatten(config_to_dict(Config()))
    added_at_default = {k for k in set(new) - set(old) if new[k] == default.get(k)}
    keys = sorted((set(old) | set(new)) - added_at_default - {"run.output_dir"})
    pairs = [(k, old.get(k, "(not set)"), new.get(k, "(not set)")) for k in keys]
    return [f"{k}: {before} -> {after}" for k, before, after in pairs if before != after]


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
        if (run_dir / "summary.json").exists():
            log(f"{run_dir.name} finished in an earlier invocation: kept")
            return json.loads((run_dir / "summary.json").read_text())
        log(f"{run_dir.name} was cut off: continuing it from its last checkpoint")
        return run_stream(p.cfg, log=log, resume="")
    return run_stream(p.cfg, log=log, tags={"comparison_id": name, "budget": p.budget})


def compare(
    config_path: str,
    overrides: list[str],
    strategies: Optional[list[str]] = None,
    seeds: int = 1,
    name: Optional[str] = None,
    budgets: Optional[list[float]] = None,
    reference: Optional[str] = None,
    tuned: Optional[dict[str, list[str]]] = None,
    log=print,
) -> dict:
    """Run every strategy on every seed (and budget); return ``{"name", "runs", "dir", "markdown"}``.

    Run again with the same ``name`` after an interruption, it keeps the runs that finished and
    continues the one that was cut off."""
    strategies = strategies or DEFAULT_STRATEGIES
    if reference is not None and reference not in strategies:
        raise ConfigError(f"--reference {reference!r} is not among --strategies ({', '.join(strategies)})")
    reference = reference or ("fixed" if "fixed" in strategies else None)  # None: no paired differences
    name = _safe(name or f"cmp-{datetime.now():%Y%m%d-%H%M%S}")
    planned = plan_runs(config_path, overrides, strategies, seeds, name, budgets, tuned)
    unused = sorted(set(tuned or {}) - set(strategies))
    if unused:  # one file of tuned settings serves comparisons of different strategies
        log(f"--tuned: the settings for {', '.join(unused)} are not used (not in --strategies)")
    out = Path(planned[0].cfg.run.output_dir) / "comparisons" / name
    seed_list = sorted({p.cfg.seed for p in planned})
    runs: list[dict] = []
    walls: list[float] = []  # the finished runs' wall times, for the time left
    markdown = ""
    for i, p in enumerate(planned, 1):
        at = "" if p.budget in (CONFIG_BUDGET, ANY_BUDGET) else f", budget {p.budget}"
        left = time_left(walls, len(planned) - i + 1)
        log(f"\n=== comparison {name}: run {i}/{len(planned)}: strategy {p.entry}, seed {p.cfg.seed}{at} ==={left}")
        try:
            summary = _finished_or_run(p, name, log)
            runs.append(_run_row(summary, p))
            walls.append(float(summary["wall_seconds"]))
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: what finished is kept, the cut-off run resumes
            log(
                f"comparison {name} stopped in run {i}/{len(planned)}; run the same mssr compare command "
                f"again: the {i - 1} finished run(s) are kept and {p.cfg.run.name} continues from its last checkpoint"
            )
            raise
        except UserError:
            raise
        except Exception as e:  # a crashed run is reported in the table; the others still run
            log(f"run {p.cfg.run.name} failed: {type(e).__name__}: {e}")
            runs.append(
                {"strategy": p.entry, "seed": p.cfg.seed, "budget": p.budget, "error": f"{type(e).__name__}: {e}"}
            )
        markdown = write_outputs(out, runs, seed_list, reference)
    log(f"\ncomparison {name} ({len(planned)} runs, MLflow tag comparison_id={name}):\n\n{markdown}")
    log(f"written to {out.resolve()}/table.md, table.csv, runs.csv, intervals.csv")
    return {"name": name, "runs": runs, "dir": str(out.resolve()), "markdown": markdown}
