"""What a run's loop records, as files in its run directory (Ray-free: ``pipelines.recorder``
writes them for the Ray workers from the driver's node, ``mssr.local_run`` in its own process)::

    <run_dir>/plans/rank_R.jsonl      the replay plan rank R received, step by step
    <run_dir>/restores.jsonl          one line per restore from a checkpoint
    <run_dir>/progress.json           where the run stood at its last checkpoint

    files = RunFiles(run_dir)
    files.plan(rank, step, plan)
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from mssr.checkpoint import RestoreRecord
from mssr.replay import ReplayPlan


class RunFiles:
    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)

    def _write(self, relative: str, text: str) -> None:
        path = self.run_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)  # a reader never sees half a file

    def _append(self, relative: str, line: str) -> None:
        path = self.run_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write(line + "\n")

    def start_plans(self, rank: int, from_step: int) -> None:
        """Drop rank ``rank``'s plan lines at or after ``from_step``: after a restore those steps
        are trained again, and their plans come again."""
        path = self.run_dir / "plans" / f"rank_{rank}.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        kept = [line for line in lines if line.strip() and json.loads(line)["step"] < from_step]
        self._write(f"plans/rank_{rank}.jsonl", "".join(line + "\n" for line in kept))

    def plan(self, rank: int, step: int, plan: ReplayPlan) -> None:
        self._append(f"plans/rank_{rank}.jsonl", json.dumps({"step": step, **plan.to_json()}))

    def restored(self, record: RestoreRecord) -> None:
        self._append("restores.jsonl", json.dumps(asdict(record)))

    def progress(self, progress_json: dict) -> None:
        self._write("progress.json", json.dumps(progress_json, indent=1))
