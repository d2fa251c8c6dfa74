"""Run artifacts: the accuracy and loss matrices as CSV, JSON and a heatmap PNG each.

paths = write_matrix_artifacts(run_dir, matrix, task_names)                      # accuracy_matrix.*
paths = write_matrix_artifacts(run_dir, loss_matrix, task_names, kind="loss")    # loss_matrix.*
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np


def write_matrix_artifacts(
    directory: Path, matrix: list[list[float]], task_names: list[str], kind: str = "accuracy"
) -> list[Path]:
    """``kind``: ``accuracy`` (scores in [0, 1]) or ``loss`` (mean answer loss, lower is better)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = ["(start)"] + [f"after {n}" for n in task_names]
    csv_path = directory / f"{kind}_matrix.csv"
    with csv_path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["after"] + task_names)
        for label, row in zip(rows, matrix):
            w.writerow([label] + [f"{v:.4f}" for v in row])
    json_path = directory / f"{kind}_matrix.json"
    json_path.write_text(json.dumps({"tasks": task_names, "rows": rows, "matrix": matrix}, indent=1))

    fig, ax = plt.subplots(figsize=(1.3 * len(task_names) + 2.5, 0.6 * len(rows) + 1.5))
    loss = kind == "loss"
    top = max(1e-9, float(np.nanmax(matrix))) if loss else 1.0  # NaN: a cell not scored
    # a loss is better when low: reversed colours, so that bright means good in both heatmaps
    im = ax.imshow(matrix, vmin=0.0, vmax=top, cmap="viridis_r" if loss else "viridis")
    ax.set_xticks(range(len(task_names)), task_names, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("evaluated task")
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            if np.isnan(v):  # not scored: left blank
                continue
            dark = v > 0.4 * top if loss else v < 0.6
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="white" if dark else "black", fontsize=8)
    fig.colorbar(im, ax=ax, label="mean answer loss" if loss else "score")
    ax.set_title(f"{kind} matrix")
    fig.tight_layout()
    png_path = directory / f"{kind}_matrix.png"
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return [csv_path, json_path, png_path]
