"""Checkpoint layout of a run (one per task boundary), written by rank 0.

    trainable.safetensors   LoRA adapter (or all weights for full fine-tuning)
    trainer.pt              optimizer, LR schedule, torch RNG state (tensors and numbers only)
    memory.npz              the memory-strength arrays of the replay pool
    memory.json             the rest of the actor's state (scheduler, sampler RNG, reservoir)
    progress.json           task index, step, accuracy matrix so far, token and replay counters

Loaded with ``torch.load(weights_only=True)``, ``safetensors`` and JSON: nothing in a
checkpoint can execute code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from mssr.memory import MemoryState

_MEMORY_ARRAYS = (*MemoryState.ARRAYS, *MemoryState.HISTORY)


def _zero_tokens() -> dict[str, float]:
    return {"train_new": 0.0, "train_replay": 0.0, "eval": 0.0, "probe": 0.0}


def _zero_pipeline() -> dict[str, float]:
    return {"train_wall": 0.0, "data_wait": 0.0, "plan_wait": 0.0, "eval_wall": 0.0}


@dataclass
class Progress:
    """Where a run stands and what it has measured: the workers' state besides the model and
    the memory actor. Saved in every checkpoint (``progress.json``), restored from it after a
    failure or ``--resume``, and read by the driver from Ray Train's last checkpoint at the
    end of the run. ``to_json`` and ``from_json`` are the only ways out and in."""

    next_task: int = 0  # the task training continues with
    task_step: int = 0  # batches of ``next_task`` already trained (a mid-task checkpoint)
    step: int = 0  # optimizer steps so far
    matrix: list[list[float]] = field(default_factory=list)  # mean score of task j after k tasks
    loss_matrix: list[list[float]] = field(default_factory=list)  # mean answer loss of task j after k tasks
    row_scores: list[list[list[float]]] = field(default_factory=list)  # [k][j][test row], for intervals
    row_losses: list[list[list[float]]] = field(default_factory=list)
    tokens: dict[str, float] = field(default_factory=_zero_tokens)  # summed over ranks
    train_seconds: float = 0.0  # rank 0's time in training steps, less its probes within them
    probe_seconds: float = 0.0  # worker-seconds spent in the strategy's probes, all ranks
    reference_seconds: float = 0.0  # of which in reference passes at task ends (mssr.strategies)
    step_seconds: list[float] = field(default_factory=list)  # rank 0's wall time of every step
    # rank 0's wall time in the training loops (evaluation aside), two of its parts (where the
    # pipeline waits), and in evaluation
    pipeline: dict[str, float] = field(default_factory=_zero_pipeline)
    mask_overlaps: list[float] = field(default_factory=list)  # isolation: overlap of each mask with the last
    task_names: list[str] = field(default_factory=list)
    weights_dtype: str = "float32"  # what model.dtype resolved to
    autocast: str = "none"  # what train.autocast resolved to
    eval_autocast: str = "none"  # what eval.autocast resolved to
    isolation: dict = field(default_factory=dict)  # method, refreshes, isolated fraction, state size
    # where and how rank 0 trained (``mssr.provenance.to_dict``); empty on the other ranks and
    # in checkpoints written before runs recorded it
    provenance: dict = field(default_factory=dict)
    # the provenance of earlier parts of the run (before a ``--resume`` or a failure's restart,
    # or the run ``mssr continue`` continued) where it differed from ``provenance``, oldest first
    earlier_provenance: list[dict] = field(default_factory=list)

    def with_tasks(self, names: list[str]) -> Progress:
        """This progress for its stream extended by more tasks (``mssr continue``): the rows so
        far get the new tasks' columns, unmeasured (NaN, and no test-row scores)."""
        added = len(names) - len(self.task_names)
        if added < 1 or list(names[: len(self.task_names)]) != self.task_names:
            raise ValueError(f"{names} does not extend the stream {self.task_names}")
        nan = [float("nan")] * added
        return dataclasses.replace(
            self,
            task_names=list(names),
            matrix=[row + nan for row in self.matrix],
            loss_matrix=[row + nan for row in self.loss_matrix],
            row_scores=[row + [[] for _ in range(added)] for row in self.row_scores],
            row_losses=[row + [[] for _ in range(added)] for row in self.row_losses],
        )

    def without_costs(self) -> Progress:
        """This progress with its time and token counts at zero: a run that continues a finished
        one (``mssr continue``) keeps its matrices and reports its own costs, not the sum of both
        runs' (its wall time is its own, so the sums made "start-up and the rest" negative)."""
        return dataclasses.replace(
            self,
            tokens=_zero_tokens(),
            train_seconds=0.0,
            probe_seconds=0.0,
            reference_seconds=0.0,
            step_seconds=[],
            pipeline=_zero_pipeline(),
        )

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Progress:
        """Fields this version does not know are dropped; missing ones keep their defaults."""
        known = {f.name for f in dataclasses.fields(cls)}
        progress = cls(**{k: v for k, v in data.items() if k in known})
        progress.pipeline = {**_zero_pipeline(), **progress.pipeline}
        return progress


def memory_digest(memory: dict) -> str:
    """SHA-256 of the memory-strength arrays: equal digests, bit-identical memory states."""
    h = hashlib.sha256()
    for k in _MEMORY_ARRAYS:
        a = np.ascontiguousarray(memory[k])
        h.update(k.encode() + str(a.dtype).encode() + a.tobytes())
    return h.hexdigest()


def save_actor_state(directory: Path, state: dict) -> None:
    memory = state["planner"]["memory"]
    np.savez(directory / "memory.npz", **{k: memory[k] for k in _MEMORY_ARRAYS})
    rest = dict(state, planner={k: v for k, v in state["planner"].items() if k != "memory"})
    (directory / "memory.json").write_text(json.dumps(rest))


def load_actor_state(directory: Path) -> dict:
    state = json.loads((directory / "memory.json").read_text())
    with np.load(directory / "memory.npz") as z:
        state["planner"]["memory"] = {k: z[k] for k in _MEMORY_ARRAYS if k in z}  # older checkpoints: fewer
    return state


def save_checkpoint(
    directory: Path, trainable: dict, trainer_state: dict, actor_state: dict, progress: Progress
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in trainable.items()}, str(directory / "trainable.safetensors"))
    torch.save(trainer_state, directory / "trainer.pt")
    save_actor_state(directory, actor_state)
    (directory / "progress.json").write_text(json.dumps(progress.to_json(), indent=1))


def load_progress(directory: Path) -> Progress:
    return Progress.from_json(json.loads((directory / "progress.json").read_text()))


def load_checkpoint(directory: Path) -> tuple[dict, dict, dict, Progress]:
    trainable = load_file(str(directory / "trainable.safetensors"))
    # onto the CPU: a checkpoint written by GPU workers resumes anywhere (the optimizer moves its
    # state to the weights' device when loaded)
    trainer_state = torch.load(directory / "trainer.pt", weights_only=True, map_location="cpu")
    return trainable, trainer_state, load_actor_state(directory), load_progress(directory)


@dataclass(frozen=True)
class RestoreRecord:
    """One restore from a checkpoint: where training continued, and the memory state's digest
    in the checkpoint and in the actor after loading it (equal when the restore is exact)."""

    step: int
    next_task: int
    task_step: int
    checkpoint: str
    memory_digest: str
    checkpoint_memory_digest: str
