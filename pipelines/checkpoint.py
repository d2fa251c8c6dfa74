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

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from mssr.memory import MemoryState

_MEMORY_ARRAYS = MemoryState.ARRAYS


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
        state["planner"]["memory"] = {k: z[k] for k in _MEMORY_ARRAYS}
    return state


def save_checkpoint(directory: Path, trainable: dict, trainer_state: dict, actor_state: dict, progress: dict) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in trainable.items()}, str(directory / "trainable.safetensors"))
    torch.save(trainer_state, directory / "trainer.pt")
    save_actor_state(directory, actor_state)
    (directory / "progress.json").write_text(json.dumps(progress, indent=1))


def load_checkpoint(directory: Path) -> tuple[dict, dict, dict, dict]:
    trainable = load_file(str(directory / "trainable.safetensors"))
    trainer_state = torch.load(directory / "trainer.pt", weights_only=True)
    return trainable, trainer_state, load_actor_state(directory), json.loads((directory / "progress.json").read_text())
