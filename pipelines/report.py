"""``mssr report``: a static HTML report across the runs of a comparison, a sweep or an experiment.

    mssr report cmp-s2                         # the runs tagged comparison_id=cmp-s2
    mssr report cmp-s2 --reference mssr        # paired differences against mssr instead of fixed
    mssr report my-sweep --out /tmp/report     # the trials of a sweep (tag sweep_id)
    mssr report mssr                           # every run of the MLflow experiment "mssr"

Everything is read back from MLflow (any tracking URI: the local sqlite store by default),
so the report shows what the dashboard holds: a table of the runs, AP and BWT bars (mean and
std over seeds of each strategy or trial), the paired difference of every strategy against
the reference strategy with its 95% t interval over blocks and test rows (per budget), budget
curves (AP and loss forgetting against the replay budget, one line per strategy, the
intervals as bands) when the comparison has several budgets, one forgetting curve per task,
and every run's accuracy and loss heatmaps. Written as ``index.html`` with its PNGs in
``--out`` (default ``<output_dir>/reports/<ID>``); open it in any browser, no server.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Optional

import numpy as np

from mssr.errors import ConfigError
from mssr.intervals import mean_interval
from mssr.metrics import average_performance, forgetting
from pipelines.analysis import (
    ANY_BUDGET,
    DEFAULT_PRIMARY,
    budget_groups,
    label,
    paired_differences,
    paired_metrics,
    per_row_results,
    runs_at,
)

COLUMNS = ["ap", "bwt", "fwt", "forgetting", "loss_final", "loss_forgetting", "replay_samples"]


def find_runs(client, ident: str) -> tuple[str, list]:
    """The runs of comparison or sweep ``ident`` (any experiment), or of the experiment named ``ident``."""
    exps = [e.experiment_id for e in client.search_experiments()]
    if not exps:
        raise ConfigError("no MLflow experiments in this tracking store")
    for tag, kind in (("comparison_id", "comparison"), ("sweep_id", "sweep")):
        runs = client.search_runs(exps, f"tags.{tag} = '{ident}'", max_results=5000)
        runs = [r for r in runs if r.data.tags.get("kind") != "sweep"]  # the sweep's own parent run
        if runs:
            return kind, runs
    exp = client.get_experiment_by_name(ident)
    if exp is not None:
        return "experiment", client.search_runs([exp.experiment_id], max_results=5000)
    raise ConfigError(f"{ident!r}: no comparison, sweep or experiment of that name in this tracking store")


def _label(run) -> str:
    """Strategy (+ isolation method) for comparison runs, the trial for sweeps, else the run name."""
    tags, params = run.data.tags, run.data.params
    if "trial_id" in tags:
        return tags["trial_id"]
    strategy = tags.get("strategy") or params.get("replay.strategy") or run.info.run_name
    iso = params.get("isolation.method", "none")
    return strategy + (f"+{iso}" if iso != "none" else "")


def _order(param) -> Optional[int]:
    """The run's ``stream.order_seed`` as logged (None, "None" or absent: the listed order)."""
    return int(param) if param not in (None, "", "None") else None


def _artifact(client, run, name: str, tmp: Path, out: Optional[Path] = None):
    """A run's artifact: parsed JSON, or (with ``out``) copied there; None if the run has none."""
    try:
        path = Path(client.download_artifacts(run.info.run_id, name, str(tmp)))
    except Exception:  # an unfinished or failed run has no matrices
        return None
    if out is None:
        return json.loads(path.read_text())
    shutil.copy(path, out)
    return out.name


def collect_runs(client, runs, out: Path) -> tuple[list[dict], list[tuple[str, str]]]:
    """One row per finished run (matrices, per-row results, heatmaps copied into ``out``), and
    the (name, status) of the runs without an accuracy matrix."""
    rows, skipped = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i, run in enumerate(sorted(runs, key=lambda r: r.info.start_time or 0)):
            where = Path(tmp) / str(i)
            m = _artifact(client, run, "accuracy_matrix.json", where)
            if m is None:
                skipped.append((run.info.run_name, run.info.status))
                continue
            seed = run.data.params.get("seed", "")
            rows.append(
                {
                    "name": run.info.run_name,
                    "label": _label(run),
                    "strategy": _label(run),
                    "run_id": run.info.run_id,
                    "seed": int(seed) if str(seed).lstrip("-").isdigit() else seed,
                    "budget": run.data.tags.get("budget", ANY_BUDGET),
                    "order": _order(run.data.params.get("stream.order_seed")),
                    "matrix": m,
                    "loss_matrix": _artifact(client, run, "loss_matrix.json", where),
                    "eval_rows": _artifact(client, run, "eval_rows.json", where),
                    "heatmap": _artifact(client, run, "accuracy_matrix.png", where, out / f"heatmap_{i:03d}.png") or "",
                    "loss_heatmap": _artifact(client, run, "loss_matrix.png", where, out / f"loss_heatmap_{i:03d}.png")
                    or "",
                    **{c: run.data.metrics.get(c, float("nan")) for c in COLUMNS},
                }
            )
    return rows, skipped


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_bars(rows: list[dict], labels: list[str], path: Path) -> None:
    """AP and BWT bars: mean and std over the runs of each label (seeds)."""
    plt = _plt()
    by_label = defaultdict(list)
    for r in rows:
        by_label[r["label"]].append(r)
    fig, axes = plt.subplots(1, 2, figsize=(2 * max(5.0, 0.6 * len(labels) + 2), 4))
    for ax, metric in zip(axes, ("ap", "bwt")):
        means = [np.mean([r[metric] for r in by_label[lb]]) for lb in labels]
        stds = [np.std([r[metric] for r in by_label[lb]], ddof=1) if len(by_label[lb]) > 1 else 0 for lb in labels]
        ax.bar(range(len(labels)), means, yerr=stds, capsize=3, color="tab:blue" if metric == "ap" else "tab:orange")
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        ax.set_title(metric.upper() + " (mean ± std over runs)")
        ax.axhline(0, color="black", lw=0.5)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_forgetting_curves(rows: list[dict], labels: list[str], out: Path) -> list[str]:
    """Each task's score after each training task, one line per label (mean over its runs)."""
    plt = _plt()
    tasks = rows[0]["matrix"]["tasks"]
    names = []
    for j, task in enumerate(tasks):
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for lb in labels:
            same = [r["matrix"]["matrix"] for r in rows if r["label"] == lb and r["matrix"]["tasks"] == tasks]
            if same:
                scores = np.mean([[row[j] for row in mat] for mat in same], axis=0)
                ax.plot(range(len(scores)), scores, marker="o", label=lb)
        ax.axvline(j + 1, color="grey", lw=0.8, ls="--")  # the task's own training ends here
        ax.set_xticks(
            range(len(tasks) + 1), ["start"] + [f"after {t}" for t in tasks], rotation=30, ha="right", fontsize=7
        )
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("score")
        ax.set_title(f"task {j + 1}: {task}")
        ax.legend(fontsize=7)
        fig.tight_layout()
        names.append(f"curve_{j:02d}.png")
        fig.savefig(out / names[-1], dpi=100)
        plt.close(fig)
    return names


def plot_budget_curves(rows: list[dict], labels: list[str], path: Path) -> bool:
    """AP and loss forgetting against the replay budget, one line per label, its 95% interval
    over blocks and test rows as a band; strategies that never replay as flat lines. False
    (nothing drawn) unless the runs span two budgets or more."""
    budgets = [b for b in budget_groups(rows) if b != ANY_BUDGET]
    if len(budgets) < 2 or any(r["eval_rows"] is None for r in rows):
        return False
    plt = _plt()
    xs = sorted(float(b) for b in budgets)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, (title, kind, metric) in zip(
        axes,
        (
            ("AP", "scores", average_performance),
            ("loss forgetting", "losses", lambda m: forgetting(m, higher_is_better=False)),
        ),
    ):
        for lb in labels:
            points = []
            for x in xs:
                mine = [r for r in runs_at(rows, f"{x:g}") if r["label"] == lb]
                if mine:
                    runs = [per_row_results(r["eval_rows"], kind) for r in mine]
                    iv = mean_interval(runs, metric, task_names=[r["eval_rows"]["tasks"] for r in mine])
                    points.append((x, iv.mean, iv.low, iv.high))
            if points:
                x, mean, low, high = map(np.array, zip(*points))
                (line,) = ax.plot(x, mean, marker="o", label=lb)
                ax.fill_between(x, low, high, color=line.get_color(), alpha=0.15)
        ax.set_xscale("log")
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.set_xlabel("replay budget (fraction of new samples)")
        ax.set_title(f"{title} (mean over seeds, 95% interval)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def build_report(ident: str, tracking_uri: str, out: Path, reference: str = "fixed") -> Path:
    """Write ``out/index.html`` (and its PNGs); returns its path."""
    from pipelines.tracking import mlflow_client

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per download otherwise
    client = mlflow_client(tracking_uri)
    kind, runs = find_runs(client, ident)
    out.mkdir(parents=True, exist_ok=True)
    rows, skipped = collect_runs(client, runs, out)
    if not rows:
        raise ConfigError(f"{ident!r}: {len(runs)} runs found, none finished with an accuracy matrix")
    labels = list(dict.fromkeys(r["label"] for r in rows))
    plot_bars(rows, labels, out / "bars.png")
    curves = plot_forgetting_curves(rows, labels, out)
    has_budget_curves = plot_budget_curves(rows, labels, out / "budgets.png")
    with_rows = [r for r in rows if r["eval_rows"] is not None]
    metrics = paired_metrics(DEFAULT_PRIMARY)
    diffs = [
        (b, paired_differences(runs_at(with_rows, b), reference, metrics, allow_mixed=True))
        for b in budget_groups(with_rows)
    ]
    index = out / "index.html"
    index.write_text(_html(ident, kind, tracking_uri, rows, skipped, curves, diffs, has_budget_curves))
    return index


def _diff_tables(diffs: list[tuple[str, list[dict]]]) -> str:
    esc = html.escape
    names = paired_metrics(DEFAULT_PRIMARY)
    parts = []
    for budget, ds in diffs:
        if not ds:
            continue
        title = "" if budget == ANY_BUDGET else f" (budget {esc(budget)})"
        head = "".join(f"<th>Δ {esc(label(m))}</th>" for m in names)
        body = "".join(
            f"<tr><td>{esc(d['strategy'])}</td><td>{d['seeds']}</td>"
            + "".join(f"<td>{esc(d[m].text() if d[m] else '-')}</td>" for m in names)
            + "</tr>"
            for d in ds
        )
        parts.append(
            f"<h3>Against {esc(ds[0]['reference'])}{title}</h3>"
            f"<table><tr><th>strategy</th><th>seeds</th>{head}</tr>{body}</table>"
        )
    if not parts:
        return ""
    return (
        "<h2>Paired differences</h2><p>Mean difference over blocks (seed, task order), with a 95% t interval "
        'over blocks and test rows; "no difference resolved" marks differences the runs cannot tell from none. '
        "Losses and forgetting: lower is better. Runs of different processor kinds or precisions are paired "
        "here; <code>mssr analyse</code> on the run directories refuses them unless told.</p>" + "".join(parts)
    )


def _html(ident, kind, uri, rows, skipped, curves, diffs, has_budget_curves) -> str:
    from pipelines.tracking import redact

    esc = html.escape
    head = "".join(f"<th>{esc(c)}</th>" for c in ["run", "label", "seed", "budget", *COLUMNS])
    body = "".join(
        "<tr>"
        + "".join(f"<td>{esc(str(r[k]))}</td>" for k in ("name", "label", "seed", "budget"))
        + "".join(f"<td>{r[c]:.3f}</td>" if c != "replay_samples" else f"<td>{r[c]:.0f}</td>" for c in COLUMNS)
        + "</tr>"
        for r in rows
    )
    skipped_html = (
        (
            "<p>Without an accuracy matrix (not finished): "
            + ", ".join(f"{esc(n)} ({esc(s)})" for n, s in skipped)
            + "</p>"
        )
        if skipped
        else ""
    )
    heatmaps = "".join(
        f"<figure><img src='{r[key]}' alt='{what} of {esc(r['name'])}'>"
        f"<figcaption>{esc(r['name'])}: {what}</figcaption></figure>"
        for r in rows
        for key, what in (("heatmap", "accuracy matrix"), ("loss_heatmap", "loss matrix"))
        if r[key]
    )
    curve_imgs = "".join(f"<img src='{c}' alt='forgetting curve'>" for c in curves)
    budget_html = (
        "<h2>Budget curves</h2><img src='budgets.png' alt='AP and loss forgetting against the budget'>"
        if has_budget_curves
        else ""
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>MSSR report: {esc(ident)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1400px}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}} td:first-child,td:nth-child(2){{text-align:left}}
figure{{display:inline-block;margin:0.5em}} img{{max-width:100%}}</style></head><body>
<h1>MSSR report: {esc(kind)} {esc(ident)}</h1>
<p>{len(rows)} runs from {esc(redact(uri))}. AP: mean final score; BWT: mean change of each task's score
from right after learning it to the end; FWT: zero-shot gain on the next task; forgetting: mean drop from
each task's best score; loss_final and loss_forgetting: the same on the mean answer loss (lower is better).</p>
<h2>Runs</h2><table><tr>{head}</tr>{body}</table>{skipped_html}
{_diff_tables(diffs)}
{budget_html}
<h2>AP and BWT</h2><img src="bars.png" alt="AP and BWT bars">
<h2>Forgetting curves</h2><p>Each task's score after each training task (mean over seeds); the dashed line
marks the end of the task's own training.</p>{curve_imgs}
<h2>Accuracy and loss matrices</h2>{heatmaps}
</body></html>
"""
