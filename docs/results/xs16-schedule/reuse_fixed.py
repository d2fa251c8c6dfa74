"""xs16f's fixed runs from xs16's, where they ran on the machine running xs16f now.

A fixed run of xs16 (commit 8f4c1a3) stands for xs16f's (commit 9470ade) in a block only when
the code gives the same run (``benchmarks/same_run.py`` on one rerun) and the run was made on
the machine kind that runs the block's other arms now: a pair across processor kinds or
precisions measures the machines too, and ``mssr compare`` refuses it.

    python reuse_fixed.py check-block XS16_RUNS   # the xs16 fixed run of this machine to rerun, or nothing
    python reuse_fixed.py copy XS16_RUNS          # xs16's fixed runs of this machine, as runs/xs16f-fixed-*

Run from the xs16f checkout with it on PYTHONPATH (run.sh does).
"""

import json
import shutil
import sys
from pathlib import Path

from mssr.config import load_config
from mssr.provenance import pairing_key, summary_provenance
from pipelines.compare import this_machine

NEW = Path("runs")
FILES = ("config.yaml", "summary.json", "eval_rows.json", "diagnostics.json")


def machine_of(run: Path) -> str:
    return " / ".join(pairing_key(summary_provenance(json.loads((run / "summary.json").read_text()))))


def runs_of_this_machine(old: Path) -> list[Path]:
    return [
        run
        for run in sorted(old.glob("xs16-fixed-b0.1-*"))
        if (run / "summary.json").exists() and machine_of(run) == this_machine(load_config(str(run / "config.yaml")))
    ]


def copy(old: Path) -> None:
    for run in runs_of_this_machine(old):
        name = run.name.replace("xs16-", "xs16f-", 1)
        if (NEW / name).exists() or (NEW / name.replace("-fixed-", "-mssr-")).exists():
            continue  # a block begun in xs16f keeps its own fixed run
        (NEW / name).mkdir(parents=True)
        for f in FILES:
            if (run / f).exists():
                shutil.copy(run / f, NEW / name / f)
        config = NEW / name / "config.yaml"
        config.write_text(config.read_text().replace(f"name: {run.name}\n", f"name: {name}\n"))
        (NEW / name / "REUSED").write_text(
            f"xs16's {run.name}, reused: made on {machine_of(run)}, the machine of this block's other runs; "
            "benchmarks/same_run.py found a rerun of one such fixed run at this commit the same run (same_run.txt)\n"
        )
        print(f"reused {run.name} as {name}")


if __name__ == "__main__":
    command, old = sys.argv[1], Path(sys.argv[2])
    if command == "check-block":
        found = runs_of_this_machine(old)
        print(found[0].name if found else "")
    else:
        copy(old)
