"""``mssr compare``: several strategies on the same stream and seeds, one table.

    mssr compare configs/demo.yaml --strategies none,fixed,mssr --seeds 2
    mssr compare configs/tiny.yaml --strategies fixed,mssr --name my-cmp train.lr=5e-4
    mssr compare configs/compare.yaml --strategies none,none+static,none+epi,mssr+epi

An entry ``STRATEGY+ISOLATION`` also sets ``isolation.method`` (mssr/isolation.py), so
replay strategies and parameter isolation are compared in one table.

Every (seed, strategy) pair is one ordinary ``mssr run`` (same config, same budget, the
strategy and seed overridden), logged as its own MLflow run tagged
``comparison_id=<name>``. All pairs are validated before the first one starts. The table
(mean ± std over seeds) is printed and written to ``<output_dir>/comparisons/<name>/``
as ``table.md`` and ``table.csv``, with one row per run in ``runs.csv``; the files are
rewritten after every run, so an interrupted comparison keeps what it finished.
"""

from __future__ import annotations

import csv
import re
from datetime import datetime
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from mssr.config import Config, load_config
from mssr.errors import ConfigError, UserError
from mssr.isolation import ISOLATIONS
from mssr.strategies import STRATEGIES

DEFAULT_STRATEGIES = ["none", "joint", "fixed", "loss", "accuracy", "mssr", "mssr-sampler", "mssr-scheduler"]

# (column, how to read it from a run summary, format)
COLUMNS: list[tuple[str, Callable[[dict], float], str]] = [
    ("AP", lambda s: s["ap"], ".3f"),
    ("BWT", lambda s: s["bwt"], "+.3f"),
    ("FWT", lambda s: s["fwt"], "+.3f"),
    ("forgetting", lambda s: s["forgetting"], ".3f"),
    ("Avg", lambda s: s["avg"], ".3f"),
    ("replayed", lambda s: s["replay_samples"], ".0f"),
    ("events", lambda s: s["replay_events"], ".0f"),
    ("new tok", lambda s: s["tokens"]["train_new"], ".0f"),
    ("replay tok", lambda s: s["tokens"]["train_replay"], ".0f"),
    ("probe tok", lambda s: s["tokens"]["probe"], ".0f"),
    ("eval tok", lambda s: s["tokens"]["eval"], ".0f"),
    ("step s (median)", lambda s: s["median_step_seconds"], ".3f"),
    ("probe s", lambda s: s["probe_seconds"], ".1f"),
    ("bookkeeping s", lambda s: s["bookkeeping_seconds"], ".3f"),
    ("wall s", lambda s: s["wall_seconds"], ".0f"),
]


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


def plan_runs(config_path: str, overrides: list[str], strategies: list[str], seeds: int, name: str) -> list[Config]:
    """One validated config per (seed, strategy entry); raises ConfigError before anything runs."""
    from pipelines.run import validate

    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1 (got {seeds})")
    if not strategies:
        raise ConfigError("--strategies: give at least one strategy, e.g. --strategies fixed,mssr")
    for s in strategies:
        entry_overrides(s)
    base = load_config(config_path, overrides)
    out = Path(base.run.output_dir) / "comparisons" / name
    if out.exists():
        raise ConfigError(f"--name: {out} already exists; choose another comparison name")
    cfgs = []
    for seed in range(base.seed, base.seed + seeds):
        for s in strategies:
            cfg = load_config(config_path, [*overrides, *entry_overrides(s), f"seed={seed}",
                                            f"run.name={name}-{_safe(s)}-s{seed}"])
            validate(cfg)
            run_dir = Path(cfg.run.output_dir) / cfg.run.name
            if run_dir.exists():
                raise ConfigError(f"{run_dir} already exists; choose another comparison name (--name)")
            cfgs.append(cfg)
    return cfgs


def aggregate(runs: list[dict]) -> list[dict]:
    """Per strategy, in first-seen order: mean and std over seeds of every column of the run rows."""
    table = []
    for strategy in dict.fromkeys(r["strategy"] for r in runs):
        done = [r for r in runs if r["strategy"] == strategy and "error" not in r]
        row = {"strategy": strategy, "seeds": len(done),
               "failed": sum(1 for r in runs if r["strategy"] == strategy and "error" in r)}
        for col, _, _ in COLUMNS:
            values = np.array([r[col] for r in done], dtype=float)
            row[col] = float(values.mean()) if values.size else float("nan")
            row[col + " std"] = float(values.std(ddof=1)) if values.size > 1 else 0.0
        table.append(row)
    fixed = next((r for r in table if r["strategy"] == "fixed" and r["seeds"]), None)
    for row in table:  # MSSR's overhead claim is relative to fixed-interval replay
        row["step time / fixed"] = row["step s (median)"] / fixed["step s (median)"] if fixed else float("nan")
    return table


def format_markdown(table: list[dict], seeds: list[int]) -> str:
    cols = [c for c, _, _ in COLUMNS]
    fmt = {c: f for c, _, f in COLUMNS}
    head = ["strategy", *cols, "step time / fixed"]
    lines = [f"seeds: {', '.join(map(str, seeds))} (mean ± std over seeds)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table:
        if not r["seeds"]:
            lines.append(f"| {r['strategy']} | " + " | ".join(["failed"] * (len(head) - 1)) + " |")
            continue
        cells = [r["strategy"] + (f" ({r['failed']} failed)" if r["failed"] else "")]
        for c in cols:
            cell = format(r[c], fmt[c])
            if r["seeds"] > 1 and c in ("AP", "BWT", "FWT", "forgetting", "Avg"):
                cell += f" ± {r[c + ' std']:.3f}"
            cells.append(cell)
        cells.append(f"{r['step time / fixed']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _write_csv(path: Path, rows: list[dict]) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def _run_row(summary: dict, entry: str) -> dict:
    row = {"strategy": entry, "seed": summary["seed"]}
    row.update({col: get(summary) for col, get, _ in COLUMNS})
    row.update(mlflow_run_id=summary["mlflow_run_id"], run_dir=summary["run_dir"])
    return row


def write_outputs(out: Path, runs: list[dict], seeds: list[int]) -> str:
    out.mkdir(parents=True, exist_ok=True)
    table = aggregate(runs)
    markdown = format_markdown(table, seeds)
    (out / "table.md").write_text(markdown)
    _write_csv(out / "table.csv", table)
    _write_csv(out / "runs.csv", [{k: v for k, v in r.items() if k != "summary"} for r in runs])
    return markdown


def compare(config_path: str, overrides: list[str], strategies: Optional[list[str]] = None, seeds: int = 1,
            name: Optional[str] = None, log=print) -> dict:
    """Run every strategy on every seed; return ``{"name", "table", "runs", "dir"}``."""
    from pipelines.run import run_stream

    strategies = strategies or DEFAULT_STRATEGIES
    name = _safe(name or f"cmp-{datetime.now():%Y%m%d-%H%M%S}")
    cfgs = plan_runs(config_path, overrides, strategies, seeds, name)
    out = Path(cfgs[0].run.output_dir) / "comparisons" / name
    seed_list = sorted({c.seed for c in cfgs})
    entries = [s for _ in seed_list for s in strategies]  # plan_runs' order: seeds, then entries
    runs: list[dict] = []
    for i, (cfg, entry) in enumerate(zip(cfgs, entries), 1):
        log(f"\n=== comparison {name}: run {i}/{len(cfgs)}: strategy {entry}, seed {cfg.seed} ===")
        try:
            summary = run_stream(cfg, log=log, tags={"comparison_id": name})
            runs.append(_run_row(summary, entry))
        except UserError:
            raise
        except Exception as e:  # a crashed run is reported in the table; the others still run
            log(f"run {cfg.run.name} failed: {type(e).__name__}: {e}")
            runs.append({"strategy": entry, "seed": cfg.seed, "error": f"{type(e).__name__}: {e}"})
        markdown = write_outputs(out, runs, seed_list)
    log(f"\ncomparison {name} ({len(cfgs)} runs, MLflow tag comparison_id={name}):\n\n{markdown}")
    log(f"written to {out.resolve()}/table.md, table.csv, runs.csv")
    return {"name": name, "table": aggregate(runs), "runs": runs, "dir": str(out.resolve())}
