"""``mssr provenance``: the table of where and how a set of finished runs ran, generated from
their ``summary.json`` files instead of kept by hand.

    mssr provenance runs/long16-* --out long16-provenance.csv
    mssr provenance runs/                    # every run directory below runs/, sorted by name

One row per run directory (a directory holding ``summary.json``): run, commit, dirty,
processor, processor kind, bf16 instructions, threads, device, the train and eval precisions,
the torch, ray, transformers and peft versions, and the wall time. A run written before runs
recorded their provenance gets its precisions from the summary's ``weights_dtype``,
``autocast`` and ``eval_autocast`` and "unknown" elsewhere (``mssr.provenance.summary_provenance``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from mssr.errors import UserError
from mssr.provenance import UNKNOWN, summary_provenance
from pipelines.tables import markdown_table, write_csv

COLUMNS = (
    "run",
    "commit",
    "dirty",
    "processor",
    "processor_kind",
    "bf16",
    "threads",
    "device",
    "train_precision",
    "eval_precision",
    "torch",
    "ray",
    "transformers",
    "peft",
    "wall_seconds",
)

# not searched for runs: MLflow's local stores (their artifact folders hold copies of a run's
# summary.json and config.yaml)
SKIPPED = frozenset({"mlartifacts", "mlruns"})


def find_runs(paths: Sequence[str | Path]) -> list[tuple[str, Path]]:
    """(name, directory) of every run in ``paths``: a path that is a run directory is a run
    (named by its directory); any other directory is searched for the run directories below it
    (not below a run: its checkpoints hold none), named by their path relative to it and sorted
    by name. UserError for a path that does not exist, or that holds no run.

    A run directory holds ``summary.json`` and the run's ``config.yaml``. A directory with a
    ``summary.json`` and no ``config.yaml`` is a run only when no run lies below it: an output
    directory may hold a ``--summary-json`` copy beside its runs. MLflow's local stores
    (``mlartifacts``, ``mlruns``) and hidden folders are not searched."""
    runs: list[tuple[str, Path]] = []
    for path in map(Path, paths):
        if not path.is_dir():
            raise UserError(f"{path}: no such directory (give run directories or a directory above them)")
        found = _runs_in(path)
        if found == [path]:
            runs.append((path.resolve().name, path))
            continue
        if not found:
            raise UserError(f"{path}: no run directory (one holding summary.json) in or below it")
        runs.extend(sorted((str(d.relative_to(path)), d) for d in found))
    return runs


def _runs_in(directory: Path) -> list[Path]:
    """``[directory]`` when it is a run directory, else the run directories below it."""
    if (directory / "summary.json").is_file() and (directory / "config.yaml").is_file():
        return [directory]
    below = []
    for child in sorted(directory.iterdir()):
        if child.is_dir() and not child.is_symlink() and child.name not in SKIPPED and not child.name.startswith("."):
            below.extend(_runs_in(child))
    if not below and (directory / "summary.json").is_file():
        return [directory]
    return below


def _cell(value) -> str:
    if value is None:
        return UNKNOWN
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def provenance_row(name: str, summary: dict) -> dict[str, str]:
    """One row of the table from a run's summary."""
    p = summary_provenance(summary)
    versions = p.get("versions") or {}
    row = {"run": name}
    row.update({k: _cell(p.get(k)) for k in ("commit", "dirty", "processor", "processor_kind")})
    row["bf16"] = _cell(p.get("bf16_instructions"))
    row.update({k: _cell(p.get(k)) for k in ("threads", "device", "train_precision", "eval_precision")})
    row.update({k: _cell(versions.get(k)) for k in ("torch", "ray", "transformers", "peft")})
    row["wall_seconds"] = _cell(summary.get("wall_seconds"))
    return row


def provenance_table(paths: Sequence[str | Path]) -> list[dict[str, str]]:
    """The table's rows, one per run found in ``paths`` (``find_runs``)."""
    rows = []
    for name, run_dir in find_runs(paths):
        try:
            summary = json.loads((run_dir / "summary.json").read_text())
        except (OSError, ValueError) as e:
            raise UserError(f"{run_dir / 'summary.json'}: not a readable summary ({type(e).__name__})") from None
        if not isinstance(summary, dict):
            raise UserError(f"{run_dir / 'summary.json'}: not a run summary (a JSON object)")
        rows.append(provenance_row(name, summary))
    return rows


def format_markdown(rows: list[dict[str, str]]) -> str:
    """The rows as a Markdown table (commits shortened to 7 characters)."""
    cells = [[r["commit"][:7] if k == "commit" and r[k] != UNKNOWN else r[k] for k in COLUMNS] for r in rows]
    return "\n".join(markdown_table(COLUMNS, cells))


def write_table(rows: list[dict[str, str]], out: str | Path) -> Path:
    """The rows as CSV at ``out`` (full commits); its directory is created if needed."""
    out = Path(out)
    if out.is_dir():
        raise UserError(f"--out {out}: is a directory (give a file name, e.g. provenance.csv)")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_csv(out, rows)
    return out
