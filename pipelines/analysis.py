"""The tables of a comparison, from its finished runs: what ``mssr compare`` writes after every
run, and what ``mssr analyse`` recomputes from run directories kept anywhere.

    mssr analyse docs/results/long16-runs --reference fixed --primary loss_final --allow-mixed
    mssr analyse runs/comparisons/my-cmp/.. --detect 0.1      # every run directory below runs/

A **block** is one (seed, task order): every strategy runs once in every block, and each
strategy is paired with the reference within its block. For each budget the tables give the
mean ± std over blocks of every strategy's metrics and costs, then the paired difference of
the **primary metric** (named before the comparison runs, ``--primary``, default the mean
final answer loss), AP and the other metrics against the reference, each with a 95% t
interval over blocks that folds in the test rows' shared noise (``mssr.intervals``). A
difference whose interval contains zero is "no difference resolved", and the line under the
table says the smallest difference these blocks detect at 80% power (and with ``--detect D``
how many blocks detecting D would take).

Runs whose processor kind or precision differ (``mssr.provenance.pairing_key``) give other
floats for the same seed, so a pair of them measures the machines as much as the
strategies: they are refused unless ``allow_mixed``, and then counted in a ``mixed`` column.
This module has no Ray import: it reads files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import yaml

from mssr.errors import UserError
from mssr.intervals import PairedDifference, blocks_needed, paired_interval
from mssr.metrics import METRIC_SPECS, metric_spec
from mssr.provenance import pairing_key, summary_provenance
from pipelines.tables import markdown_table, write_csv

CONFIG_BUDGET = "config"  # the budget label of a comparison without --budgets
ANY_BUDGET = "-"  # the budget label of a strategy that never replays: it belongs to every budget
DEFAULT_PRIMARY = "loss_final"  # the mean final answer loss: far less noisy than AP (docs/comparing.md)
# the metrics compared pairwise after the primary one, in this order (AP always among them)
SECONDARY = ("ap", "loss_final", "loss_anytime", "bwt", "forgetting", "loss_forgetting")


def overhead_percent(summary: dict) -> float:
    """What a strategy spends besides training on replayed rows: its probes' seconds per worker
    (``probe_seconds`` sums the workers') and the memory model's, as a percentage of the run's
    training seconds (rank 0's, less the probes run within its steps; NaN for a run that did
    not record them)."""
    train = summary.get("train_seconds") or float("nan")
    return 100 * (summary["probe_seconds"] / summary.get("workers", 1) + summary["bookkeeping_seconds"]) / train


# (column, how to read it from a run summary, format)
COLUMNS: list[tuple[str, Callable[[dict], float], str]] = [
    ("AP", lambda s: s["ap"], ".3f"),
    ("BWT", lambda s: s["bwt"], "+.3f"),
    ("FWT", lambda s: s["fwt"], "+.3f"),
    ("forgetting", lambda s: s["forgetting"], ".3f"),
    ("Avg", lambda s: s["avg"], ".3f"),
    ("final loss", lambda s: s["loss_final"], ".3f"),
    ("anytime loss", lambda s: s.get("loss_anytime", float("nan")), ".3f"),
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
    ("overhead %", overhead_percent, ".2f"),
    ("wall s", lambda s: s["wall_seconds"], ".0f"),
]
SPREAD_COLUMNS = ("AP", "BWT", "FWT", "forgetting", "Avg", "final loss", "anytime loss", "loss forgetting")
CURVE_COMPUTE = ("replay tok", "probe tok", "overhead %")  # what each strategy spends, per budget


def paired_metrics(primary: str) -> list[str]:
    """The metrics compared pairwise: the primary first, then the others (AP among them)."""
    metric_spec(primary)  # an unknown name: ConfigError with the nearest
    return [primary, *(m for m in SECONDARY if m != primary)]


def label(metric: str) -> str:
    return METRIC_SPECS[metric].label


# ---------------------------------------------------------------------------------------
# Runs


def run_row(summary: dict, entry: str, budget: str, run_dir: Path, order: Optional[int]) -> dict:
    """One finished run as a row of the tables (its per-row results under ``eval_rows``)."""
    row = {"strategy": entry, "seed": summary["seed"], "order": order, "budget": budget}
    row.update({col: get(summary) for col, get, _ in COLUMNS})
    row.update(replay_budget=summary["replay_budget"], mlflow_run_id=summary["mlflow_run_id"], run_dir=str(run_dir))
    row["machine"] = " / ".join(pairing_key(summary_provenance(summary)))
    row["eval_rows"] = json.loads((run_dir / "eval_rows.json").read_text())
    return row


def block_of(run: dict) -> tuple:
    """The block of a run: its seed and task order (None: the listed order)."""
    return (run["seed"], run.get("order"))


def block_label(block: tuple) -> str:
    seed, order = block
    return f"seed {seed}" + ("" if order is None else f", order {order}")


def blocks_text(runs: list[dict]) -> str:
    """``seeds 0, 1, 2`` or ``seeds 0, 1 x orders listed, 1``: what the blocks are; where they
    ran on more than one machine, how many ran on each (``; machines: AMD EPYC / fp32 / fp32
    7 blocks, ...``; ``mixed``: a block whose runs ran on different machines)."""
    seeds = sorted({r["seed"] for r in runs})
    orders = sorted({r.get("order") for r in runs}, key=lambda o: -1 if o is None else o)
    text = f"seeds {', '.join(map(str, seeds))}"
    if orders != [None]:
        text += f" x orders {', '.join('listed' if o is None else str(o) for o in orders)}"
    machines: dict[tuple, set] = {}
    for r in runs:
        machines.setdefault(block_of(r), set()).add(r.get("machine", ""))
    counts: dict[str, int] = {}
    for kinds in machines.values():
        where = next(iter(kinds)) if len(kinds) == 1 else "mixed"
        counts[where] = counts.get(where, 0) + 1
    if len(counts) > 1:
        text += "; machines: " + ", ".join(
            f"{m or 'unknown'} {n} block{'s' if n > 1 else ''}" for m, n in sorted(counts.items())
        )
    return text


def budget_groups(runs: list[dict]) -> list[str]:
    """The budgets of a comparison, in first-seen order (the runs that never replay belong to all)."""
    labels = list(dict.fromkeys(r["budget"] for r in runs if r["budget"] != ANY_BUDGET))
    return labels or [ANY_BUDGET]


def runs_at(runs: list[dict], budget: str) -> list[dict]:
    return [r for r in runs if r["budget"] in (budget, ANY_BUDGET)]


def aggregate(runs: list[dict]) -> list[dict]:
    """Per strategy, in first-seen order: mean and std over blocks of every column of the run rows."""
    table = []
    for strategy in dict.fromkeys(r["strategy"] for r in runs):
        done = [r for r in runs if r["strategy"] == strategy and "error" not in r]
        row = {
            "strategy": strategy,
            "seeds": len(done),
            "failed": sum(1 for r in runs if r["strategy"] == strategy and "error" in r),
        }
        for col, _, _ in COLUMNS:
            values = np.array([r.get(col, np.nan) for r in done], dtype=float)
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


# ---------------------------------------------------------------------------------------
# Paired differences


class MixedPairs(UserError):
    """Runs of one block ran on different processor kinds or precisions."""


def _check_pair(a: dict, b: dict, allow_mixed: bool) -> bool:
    """True when the pair is mixed (and allowed); raises MixedPairs when it is not allowed."""
    if a.get("machine", "") == b.get("machine", ""):
        return False
    if not allow_mixed:
        raise MixedPairs(
            f"{block_label(block_of(a))}: {a['strategy']} ran on {a['machine']} and {b['strategy']} on "
            f"{b['machine']} (processor kind / train / eval precision); the same seed gives other floats "
            "there, so the pair would measure the machines too: rerun one of them on the other's kind, "
            "or pass --allow-mixed to pair them anyway (counted in the table's mixed column)"
        )
    return True


def _interval(a: dict, b: dict, names: list, metric: str) -> Optional[PairedDifference]:
    """``a``/``b``: per matrix kind, the blocks' per-row results (parsed once for every metric)."""
    spec = METRIC_SPECS[metric]
    diff = paired_interval(a[spec.matrix], b[spec.matrix], spec.fn, name=spec.label, task_names=names)
    return None if np.isnan(diff.mean) else diff  # None: the runs did not score the cells it reads


def _per_row(runs: list[dict]) -> dict[str, list]:
    return {kind: [per_row_results(r["eval_rows"], kind) for r in runs] for kind in ("scores", "losses")}


def paired_differences(runs: list[dict], reference: str, metrics: list[str], allow_mixed: bool = False) -> list[dict]:
    """For every strategy but ``reference``: each metric's paired difference over the blocks
    both finished, with its 95% interval (None where the runs did not score its cells)."""
    done = [r for r in runs if "error" not in r]
    ref = {block_of(r): r for r in done if r["strategy"] == reference}
    out = []
    for strategy in dict.fromkeys(r["strategy"] for r in done):
        if strategy == reference:
            continue
        mine = {block_of(r): r for r in done if r["strategy"] == strategy}
        blocks = sorted(set(mine) & set(ref), key=lambda k: (k[0], -1 if k[1] is None else k[1]))
        if not blocks:
            continue
        a, b = [mine[k] for k in blocks], [ref[k] for k in blocks]
        mixed = sum(_check_pair(x, y, allow_mixed) for x, y in zip(a, b))
        row = {"strategy": strategy, "reference": reference, "seeds": len(blocks), "mixed": mixed}
        rows_a, rows_b, names = _per_row(a), _per_row(b), [r["eval_rows"]["tasks"] for r in a]
        row.update({m: _interval(rows_a, rows_b, names, m) for m in metrics})
        out.append(row)
    return out


def _cell(diff: Optional[PairedDifference]) -> str:
    return "-" if diff is None else diff.text()


def resolution_line(row: dict, metric: str, detect: Optional[float] = None) -> str:
    """What the blocks can say about the difference in ``metric``: resolved or not, the smallest
    difference they detect at 80% power, and (``detect``) the blocks that D would take."""
    d: Optional[PairedDifference] = row.get(metric)
    head = f"{row['strategy']} - {row['reference']}, {label(metric)}"
    if d is None:
        return f"{head}: not measured (the runs did not score the cells it reads)"
    verdict = "resolved" if d.excludes_zero else "no difference resolved"
    n = d.n_blocks
    if d.rows_only:
        return f"{head}: {verdict} over 1 block (the interval holds the test rows' noise only)"
    out = (
        f"{head}: {verdict} ({d.text().split(' (')[0]}, {n} blocks, t with {d.df:.1f} df); "
        f"{n} blocks detect a difference of {d.detectable():.3f} at 80% power"
    )
    if detect is not None:
        needed = blocks_needed(d, detect)
        out += (
            f"; detecting {detect:g} takes about {needed} blocks"
            if needed is not None
            else f"; no number of blocks detects {detect:g} at these test rows (their shared noise is wider)"
        )
    return out


# ---------------------------------------------------------------------------------------
# Tables


def format_markdown(
    table: list[dict],
    blocks: str,
    diffs: Optional[list[dict]] = None,
    budget: str = CONFIG_BUDGET,
    primary: str = DEFAULT_PRIMARY,
    detect: Optional[float] = None,
) -> str:
    """One budget's tables: every strategy's mean ± std over blocks (the primary metric's
    column first), then the paired differences and the resolution of the primary metric."""
    first = label(primary)
    cols = [first, *(c for c, _, _ in COLUMNS if c != first)]
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
            cell = "-" if np.isnan(r[c]) else format(r[c], fmt[c])
            if r["seeds"] > 1 and c in SPREAD_COLUMNS and not np.isnan(r[c]):
                cell += f" ± {r[c + ' std']:.3f}"
            cells.append(cell)
        rows.append([*cells, f"{r['step time / fixed']:.3f}"])
    lines = [f"{title}blocks: {blocks} (mean ± std over blocks)", "", *markdown_table(head, rows)]
    if diffs:
        metrics = paired_metrics(primary)
        mixed = any(d["mixed"] for d in diffs)
        lines += [
            "",
            f"paired difference against {diffs[0]['reference']} (primary metric: {first}), mean [95% t "
            "interval over blocks and test rows]; lower is better for losses and forgetting",
            "",
            *markdown_table(
                ["strategy", "blocks", *(["mixed"] if mixed else []), *(f"Δ {label(m)}" for m in metrics)],
                [
                    [d["strategy"], d["seeds"], *([d["mixed"]] if mixed else []), *(_cell(d.get(m)) for m in metrics)]
                    for d in diffs
                ],
            ),
            "",
            *(resolution_line(d, primary, detect) for d in diffs),
        ]
        if mixed:
            lines.append("mixed: blocks whose pair ran on different processor kinds or precisions (--allow-mixed)")
    return "\n".join(lines) + "\n"


def _percent(budget: str) -> str:
    return f"{float(budget) * 100:g}%"


def format_budget_curves(groups: list[tuple[str, list[dict], list[dict]]], primary: str = DEFAULT_PRIMARY) -> str:
    """The comparison in one table: per strategy, at each budget its primary metric and AP (mean
    over blocks) beside their paired differences against the reference, then its compute at
    each budget. ``groups``: (budget label, ``aggregate`` table, ``paired_differences``) per
    budget; only numeric budgets (``--budgets``) make a curve."""
    groups = [g for g in groups if g[0] not in (CONFIG_BUDGET, ANY_BUDGET)]
    if not groups:
        return ""
    shown = [primary] if primary == "ap" else [primary, "ap"]
    reference = next((d["reference"] for _, _, diffs in groups for d in diffs), None)
    head = ["strategy", "blocks"]
    for budget, _, _ in groups:
        for m in shown:
            head += [f"{label(m)} at {_percent(budget)}", f"Δ {label(m)} at {_percent(budget)}"]
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
        cells = [strategy, str(max((r["seeds"] for r, _ in per_budget if r), default=0))]
        for row, diff in per_budget:
            for m in shown:
                cells.append(format(row[label(m)], fmt[label(m)]) if row else "-")
                cells.append("reference" if strategy == reference else _cell(diff[m]) if diff else "-")
        for c in CURVE_COMPUTE:
            cells.append(" / ".join(format(row[c], fmt[c]) if row else "-" for row, _ in per_budget))
        rows.append(cells)
    against = f"paired difference against {reference}, " if reference else ""
    lines = [
        f"budget curves: {' and '.join(label(m) for m in shown)} (mean over blocks), Δ ({against}mean [95% t "
        "interval over blocks and test rows]), and compute at each budget (overhead: probe and bookkeeping "
        "seconds as % of training)",
        "",
        *markdown_table(head, rows),
    ]
    return "\n".join(lines) + "\n"


def write_outputs(
    out: Path,
    runs: list[dict],
    reference: Optional[str],
    primary: str = DEFAULT_PRIMARY,
    detect: Optional[float] = None,
    allow_mixed: bool = False,
) -> str:
    """Every budget's table and paired differences: table.md (returned), table.csv, runs.csv,
    intervals.csv; with --budgets also curves.md, every budget side by side."""
    out.mkdir(parents=True, exist_ok=True)
    metrics = paired_metrics(primary)
    blocks = blocks_text([r for r in runs if "error" not in r] or runs)
    parts, table_rows, interval_rows, groups = [], [], [], []
    for budget in budget_groups(runs):
        group = runs_at(runs, budget)
        table = aggregate(group)
        diffs = paired_differences(group, reference, metrics, allow_mixed) if reference else []
        groups.append((budget, table, diffs))
        parts.append(format_markdown(table, blocks, diffs, budget, primary, detect))
        table_rows += [{"budget": budget, **r} for r in table]
        interval_rows += [
            {
                "budget": budget,
                "strategy": d["strategy"],
                "reference": d["reference"],
                "blocks": d["seeds"],
                "mixed": d["mixed"],
                "metric": label(m),
                "primary": m == primary,
                "mean": d[m].mean,
                "low": d[m].low,
                "high": d[m].high,
                "df": d[m].df,
                "block_var": d[m].block_var,
                "row_var": d[m].row_var,
                "detectable_80": d[m].detectable(),
                "excludes_zero": d[m].excludes_zero,
            }
            for d in diffs
            for m in metrics
            if d[m] is not None
        ]
    curves = format_budget_curves(groups, primary)
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


# ---------------------------------------------------------------------------------------
# mssr analyse: the tables of run directories kept anywhere


def find_run_dirs(paths: list[str]) -> list[Path]:
    """Every finished run directory at or below ``paths`` (as ``mssr provenance`` finds them)
    that kept its per-row results (``eval_rows.json``), sorted; one line of error for a path
    that does not exist or holds none."""
    from pipelines.provenance_table import find_runs

    found = [d for _, d in find_runs(paths) if (d / "eval_rows.json").is_file()]
    if not found:
        raise UserError(f"{', '.join(paths)}: no finished run with eval_rows.json (a run's per-row results)")
    return sorted(dict.fromkeys(found))


def _replays(strategy: str) -> bool:
    from mssr.config import ReplayConfig
    from mssr.strategies import build_strategy

    try:
        return build_strategy(strategy, ReplayConfig()).replays
    except Exception:  # a strategy that no longer exists, or a user's class not importable here
        return True


def kept_run_row(run_dir: Path) -> dict:
    """The table row of a finished run directory, its entry and budget read from its own
    config.yaml (not validated: a kept run may come from an older version)."""
    summary = json.loads((run_dir / "summary.json").read_text())
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    replay, isolation = cfg.get("replay") or {}, (cfg.get("isolation") or {}).get("method", "none")
    entry = replay.get("strategy", summary["strategy"]) + (f"+{isolation}" if isolation != "none" else "")
    budget = replay.get("budget")
    if not _replays(replay.get("strategy", summary["strategy"])):
        label_ = ANY_BUDGET
    else:
        label_ = CONFIG_BUDGET if budget is None else f"{budget:g}"
    order = (cfg.get("stream") or {}).get("order_seed")
    return run_row(summary, entry, label_, run_dir, order)


def analyse(
    paths: list[str],
    out: Path,
    reference: str = "fixed",
    primary: str = DEFAULT_PRIMARY,
    detect: Optional[float] = None,
    allow_mixed: bool = False,
) -> str:
    """The comparison tables of the finished runs at or below ``paths``, written to ``out``
    (table.md, table.csv, runs.csv, intervals.csv, curves.md); returns table.md's text."""
    paired_metrics(primary)
    if detect is not None and detect <= 0:
        raise UserError(f"--detect: the difference to detect must be positive (got {detect:g})")
    runs = [kept_run_row(d) for d in find_run_dirs(paths)]
    strategies = {r["strategy"] for r in runs}
    if reference not in strategies:
        raise UserError(f"--reference {reference!r}: no such strategy among the runs ({', '.join(sorted(strategies))})")
    runs.sort(key=lambda r: r["strategy"] != reference)  # the reference's rows first, the rest by name
    return write_outputs(out, runs, reference, primary, detect, allow_mixed)
