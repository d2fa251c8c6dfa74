"""Equal tuning effort, resumable across sessions: one pass over each space's grid, every
trial an ordinary run on the tuning prompts, its files kept in the repository.

    .venv/bin/python benchmarks/grid_tune.py configs/long.yaml --name tl16 \
        --spaces tune_spaces/fixed-grid.yaml,tune_spaces/mssr.yaml --keep docs/results/tl16-runs

``mssr tune`` runs a sweep inside Ray Tune, whose state lives in the run directory; a sweep
of long-stream trials (about 16 minutes each on 2 cores) outlasts a working session, so this
runs the same trials one after the other as plain runs instead, keeping each finished one's
``config.yaml``, ``summary.json``, ``eval_rows.json`` and ``diagnostics.json`` (what
``mssr compare`` keeps) under ``--keep``: run again, it skips the trials kept there. Every
space must be a grid (``{grid: [...]}`` axes and fixed values only), so every strategy gets
the same number of trials. Trials run on the tuning part of the prompts
(``stream.split=tune``), seed ``--seed`` (100 by default: no comparison uses it), every
trial of every space in the same task order.

At the end (and after every trial) it writes ``<keep>/trials.md`` (every trial, sorted by
``loss_final``, the comparisons' primary metric, lower first) and ``<keep>/tuned.yaml``: each
strategy's best finished trial's swept settings, with the stream they were tuned on under
``tuned_on``, the format of ``mssr compare --tuned``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mssr.config import config_to_dict, load_config  # noqa: E402
from mssr.errors import ConfigError  # noqa: E402
from mssr.search_space import load_space, trial_overrides  # noqa: E402
from pipelines.analysis import overhead_percent  # noqa: E402

KEPT_FILES = ("config.yaml", "summary.json", "eval_rows.json", "diagnostics.json")
METRIC = "loss_final"  # what a comparison leads with: the mean final answer loss, lower is better


def grid_trials(space_path: str, config: str, overrides: list[str]) -> list[dict]:
    """Every point of a space's grid, as {config key: value} (the fixed values included)."""
    space = load_space(space_path, config, overrides)
    axes = {k: p.values for k, p in space.params.items() if p.kind == "grid"}
    fixed = {k: p.values[0] for k, p in space.params.items() if p.kind == "value"}
    sampled = sorted(k for k, p in space.params.items() if p.kind not in ("grid", "value"))
    if sampled:
        raise ConfigError(f"{space_path}: {', '.join(sampled)}: only grid axes and fixed values (every trial is run)")
    return [{**fixed, **dict(zip(axes, point))} for point in itertools.product(*axes.values())]


def trial_name(name: str, strategy: str, k: int) -> str:
    return f"{name}-{strategy}-t{k}"


def run_trial(config: str, overrides: list[str], values: dict, run_name: str, out: Path, keep: Path) -> dict:
    """The trial's summary: kept from an earlier invocation, else run now and kept."""
    from pipelines.run import run_stream
    from pipelines.startup import validate

    kept = keep / run_name
    if (kept / "summary.json").exists():
        print(f"{run_name}: kept from an earlier invocation")
        return json.loads((kept / "summary.json").read_text())
    cfg = load_config(config, [*overrides, *trial_overrides(values), f"run.name={run_name}", f"run.output_dir={out}"])
    validate(cfg)
    run_dir = out / run_name
    summary = run_stream(cfg, resume="" if run_dir.exists() else None)  # a cut-off trial continues
    kept.mkdir(parents=True, exist_ok=True)
    for f in KEPT_FILES:
        shutil.copy2(run_dir / f, kept / f)
    return summary


def write_results(keep: Path, trials: list[dict], tuned_on: dict) -> None:
    """trials.md (sorted by the metric) and tuned.yaml (each strategy's best trial)."""
    done = sorted((t for t in trials if "summary" in t), key=lambda t: t["summary"][METRIC])
    lines = [
        f"| trial | strategy | settings | {METRIC} | ap | train s | overhead % |",
        "|---|---|---|---|---|---|---|",
    ]
    best: dict[str, dict] = {}
    for t in done:
        s = t["summary"]
        overhead = overhead_percent(s)
        settings = ", ".join(f"{k}={v}" for k, v in t["swept"].items())
        lines.append(
            f"| {t['name']} | {t['strategy']} | {settings} | {s[METRIC]:.3f} | {s['ap']:.3f} | "
            f"{s['train_seconds']:.0f} | {overhead:.2f} |"
        )
        best.setdefault(t["strategy"], t["swept"])
    (keep / "trials.md").write_text(
        f"Every trial, sorted by {METRIC} (lower first); written by benchmarks/grid_tune.py\n\n"
        + "\n".join(lines)
        + "\n"
    )
    tree = {**best, "tuned_on": tuned_on}
    (keep / "tuned.yaml").write_text(
        "# each strategy's best trial (lowest loss_final) of one pass over its grid; for mssr compare --tuned\n"
        + yaml.safe_dump(tree, sort_keys=False)
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("overrides", nargs="*", help="key=value for every trial")
    ap.add_argument("--spaces", required=True, help="comma-separated grid spaces (tune_spaces/*.yaml)")
    ap.add_argument("--name", required=True, help="prefix of the trials' run names")
    ap.add_argument("--keep", required=True, help="folder that keeps every finished trial's files")
    ap.add_argument("--seed", type=int, default=100, help="every trial's seed (default 100)")
    ap.add_argument("--output-dir", default="runs", help="where the trials run (default runs)")
    args = ap.parse_args()
    overrides = ["stream.split=tune", f"seed={args.seed}", "mlflow.log_model=false", *args.overrides]
    keep, out = Path(args.keep), Path(args.output_dir)
    try:
        plan = []
        for space in [s.strip() for s in args.spaces.split(",") if s.strip()]:
            points = grid_trials(space, args.config, overrides)
            for k, values in enumerate(points):
                strategy = values.get("replay.strategy") or load_config(args.config, overrides).replay.strategy
                swept = {key: v for key, v in values.items() if key != "replay.strategy"}
                plan.append(
                    {"strategy": strategy, "values": values, "swept": swept, "name": trial_name(args.name, strategy, k)}
                )
    except ConfigError as e:
        sys.exit(f"error: {e}")
    tuned_on = config_to_dict(load_config(args.config, overrides))["stream"]
    keep.mkdir(parents=True, exist_ok=True)
    print(f"{len(plan)} trials; finished ones are kept in {keep}")
    for i, trial in enumerate(plan, 1):
        print(f"\n=== trial {i}/{len(plan)}: {trial['name']} ({trial['values']}) ===", flush=True)
        trial["summary"] = run_trial(args.config, overrides, trial["values"], trial["name"], out, keep)
        write_results(keep, plan, tuned_on)
    print(f"\nwritten to {keep}/trials.md and {keep}/tuned.yaml")


if __name__ == "__main__":
    main()
