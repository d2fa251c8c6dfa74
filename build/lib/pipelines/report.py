"""``mssr report``: a static HTML report across the runs of a comparison, a sweep or an experiment.

    mssr report cmp-s2                         # the runs tagged comparison_id=cmp-s2
    mssr report my-sweep --out /tmp/report     # the trials of a sweep (tag sweep_id)
    mssr report mssr                           # every run of the MLflow experiment "mssr"

Everything is read back from MLflow (any tracking URI: the local sqlite store by default),
so the report shows what the dashboard holds: a table of the runs (AP, BWT, FWT,
forgetting, replayed samples), AP and BWT bars (mean and std over seeds of each strategy or
trial), one forgetting curve per task (its score after each training task, one line per
strategy), and every run's accuracy-matrix heatmap. Written as ``index.html`` with its PNGs
in ``--out`` (default ``<output_dir>/reports/<ID>``); open it in any browser, no server.
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

COLUMNS = ["ap", "bwt", "fwt", "forgetting", "replay_samples"]


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


def _matrix(client, run, tmp: Path) -> Optional[dict]:
    try:
        path = client.download_artifacts(run.info.run_id, "accuracy_matrix.json", str(tmp))
    except Exception:  # an unfinished or failed run has no matrix
        return None
    return json.loads(Path(path).read_text())


def build_report(ident: str, tracking_uri: str, out: Path) -> Path:
    """Write ``out/index.html`` (and its PNGs); returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from mlflow import MlflowClient

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per download otherwise
    client = MlflowClient(tracking_uri=tracking_uri)
    kind, runs = find_runs(client, ident)
    out.mkdir(parents=True, exist_ok=True)
    rows, skipped = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i, run in enumerate(sorted(runs, key=lambda r: r.info.start_time or 0)):
            m = _matrix(client, run, Path(tmp) / str(i))
            if m is None:
                skipped.append((run.info.run_name, run.info.status))
                continue
            heatmap = f"heatmap_{i:03d}.png"
            try:
                shutil.copy(client.download_artifacts(run.info.run_id, "accuracy_matrix.png", tmp), out / heatmap)
            except Exception:
                heatmap = ""
            rows.append({"name": run.info.run_name, "label": _label(run), "run_id": run.info.run_id,
                         "seed": run.data.params.get("seed", ""), "matrix": m, "heatmap": heatmap,
                         **{c: run.data.metrics.get(c, float("nan")) for c in COLUMNS}})
    if not rows:
        raise ConfigError(f"{ident!r}: {len(runs)} runs found, none finished with an accuracy matrix")

    labels = list(dict.fromkeys(r["label"] for r in rows))
    by_label = defaultdict(list)
    for r in rows:
        by_label[r["label"]].append(r)

    # AP and BWT bars: mean and std over the runs of each label (seeds)
    fig, axes = plt.subplots(1, 2, figsize=(2 * max(5.0, 0.6 * len(labels) + 2), 4))
    for ax, metric in zip(axes, ("ap", "bwt")):
        means = [np.mean([r[metric] for r in by_label[lb]]) for lb in labels]
        stds = [np.std([r[metric] for r in by_label[lb]], ddof=1) if len(by_label[lb]) > 1 else 0 for lb in labels]
        ax.bar(range(len(labels)), means, yerr=stds, capsize=3, color="tab:blue" if metric == "ap" else "tab:orange")
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        ax.set_title(metric.upper() + " (mean ± std over runs)")
        ax.axhline(0, color="black", lw=0.5)
    fig.tight_layout()
    fig.savefig(out / "bars.png", dpi=100)
    plt.close(fig)

    # forgetting curves: each task's score after each training task, one line per label (mean)
    tasks = rows[0]["matrix"]["tasks"]
    curves = []
    for j, task in enumerate(tasks):
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for lb in labels:
            same = [r["matrix"]["matrix"] for r in by_label[lb] if r["matrix"]["tasks"] == tasks]
            if same:
                scores = np.mean([[row[j] for row in mat] for mat in same], axis=0)
                ax.plot(range(len(scores)), scores, marker="o", label=lb)
        ax.axvline(j + 1, color="grey", lw=0.8, ls="--")  # the task's own training ends here
        ax.set_xticks(range(len(tasks) + 1), ["start"] + [f"after {t}" for t in tasks], rotation=30, ha="right",
                      fontsize=7)
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("score")
        ax.set_title(f"task {j + 1}: {task}")
        ax.legend(fontsize=7)
        fig.tight_layout()
        name = f"curve_{j:02d}.png"
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        curves.append(name)

    index = out / "index.html"
    index.write_text(_html(ident, kind, tracking_uri, rows, skipped, curves))
    return index


def _html(ident, kind, uri, rows, skipped, curves) -> str:
    from pipelines.tracking import redact

    esc = html.escape
    head = "".join(f"<th>{esc(c)}</th>" for c in ["run", "label", "seed", *COLUMNS])
    body = "".join(
        "<tr>" + f"<td>{esc(r['name'])}</td><td>{esc(r['label'])}</td><td>{esc(str(r['seed']))}</td>"
        + "".join(f"<td>{r[c]:.3f}</td>" if c != "replay_samples" else f"<td>{r[c]:.0f}</td>" for c in COLUMNS)
        + "</tr>" for r in rows)
    skipped_html = ("<p>Without an accuracy matrix (not finished): "
                    + ", ".join(f"{esc(n)} ({esc(s)})" for n, s in skipped) + "</p>") if skipped else ""
    heatmaps = "".join(f"<figure><img src='{r['heatmap']}' alt='accuracy matrix of {esc(r['name'])}'>"
                       f"<figcaption>{esc(r['name'])}</figcaption></figure>" for r in rows if r["heatmap"])
    curve_imgs = "".join(f"<img src='{c}' alt='forgetting curve'>" for c in curves)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>MSSR report: {esc(ident)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1400px}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}} td:first-child,td:nth-child(2){{text-align:left}}
figure{{display:inline-block;margin:0.5em}} img{{max-width:100%}}</style></head><body>
<h1>MSSR report: {esc(kind)} {esc(ident)}</h1>
<p>{len(rows)} runs from {esc(redact(uri))}. AP: mean final score; BWT: mean change of each task's score
from right after learning it to the end; FWT: zero-shot gain on the next task; forgetting: mean drop from
each task's best score.</p>
<h2>Runs</h2><table><tr>{head}</tr>{body}</table>{skipped_html}
<h2>AP and BWT</h2><img src="bars.png" alt="AP and BWT bars">
<h2>Forgetting curves</h2><p>Each task's score after each training task (mean over seeds); the dashed line
marks the end of the task's own training.</p>{curve_imgs}
<h2>Accuracy matrices</h2>{heatmaps}
</body></html>
"""
