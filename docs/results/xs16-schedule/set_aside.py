"""Keep each block of a comparison on one machine kind across sessions on different machines.

A block (one seed and task order) pairs its strategies' runs; if a session ends inside a
block and the next one runs on another processor kind or precision, the block's finished runs
would pair across machines, which ``mssr compare`` refuses. Before a comparison resumes, this
moves the finished runs of every unfinished block made on another machine into
``runs/set-aside/``, so that the block runs again, whole, on this one.

    python set_aside.py NAME STRATEGY,STRATEGY,...    # from the comparison's checkout, in runs/

Run from the comparison's checkout with it on PYTHONPATH (run.sh does).
"""

import re
import shutil
import sys
from collections import defaultdict
from pathlib import Path

from reuse_fixed import machine_of

from mssr.config import load_config
from pipelines.compare import this_machine

RUNS = Path("runs")


def main(name: str, strategies: list[str]) -> None:
    blocks = defaultdict(dict)  # (seed, order) -> {strategy: run dir}
    for run in RUNS.glob(f"{name}-*-b0.1-s*"):
        m = re.fullmatch(rf"{re.escape(name)}-(.+)-b0\.1-s(\d+)(?:-o(\d+))?", run.name)
        if m and m.group(1) in strategies:
            blocks[(m.group(2), m.group(3))][m.group(1)] = run
    for _, runs in sorted(blocks.items()):
        finished = {s: r for s, r in runs.items() if (r / "summary.json").exists()}
        if len(finished) == len(strategies):
            continue
        for run in finished.values():
            if machine_of(run) != this_machine(load_config(str(run / "config.yaml"))):
                (RUNS / "set-aside").mkdir(exist_ok=True)
                shutil.move(str(run), str(RUNS / "set-aside" / run.name))
                print(f"set aside {run.name}: made on {machine_of(run)}, and its block is unfinished")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2].split(","))
