"""Where tensors live, and the collectives of the training process group: one rule, one module.

The rule:

* a model's inputs go to the device of the model's parameters (``to_device``, ``device_of``);
* a collective's tensors go where the process group's backend reduces them
  (``collective_device``): NCCL, the backend of GPU workers, reduces CUDA tensors only;
  gloo, the backend of CPU workers, CPU tensors;
* what leaves a step for numpy, a checkpoint or a message comes back with ``.cpu()`` where it
  is made (the losses of a step, the trainable weights of a checkpoint).

Every collective of the training loop goes through the helpers below, and each works with no
process group at all (one process, as in tests and ``scripts/gpu_check.py`` without one):

    totals = all_sum([loss_sum, rows])            # element-wise over the ranks
    rows = gather_to_first(vector, rank, world)   # rank 0: one row per rank; others: None
    states = all_gather_objects(rng_state())      # every rank's object, in rank order

Why the tensors move to the GPU rather than through a second, CPU-side (gloo) group:
Ray Train creates one group per run with one backend (NCCL for GPU workers); a second group
would need its own rendezvous and doubles what can fail, while the tensors are a few hundred
numbers per step or per evaluation, whose copy to the GPU and back costs microseconds.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist


def device_of(model: torch.nn.Module) -> torch.device:
    """The device of a model's parameters: where its inputs must be."""
    return next(model.parameters()).device


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Every tensor a forward pass reads, on ``device`` (the model's, see ``device_of``)."""
    return {k: v.to(device) for k, v in batch.items()}


def collective_device_for(backend: str) -> torch.device:
    """Where a collective's tensors must be for ``backend``: the CPU where the group reduces
    CPU tensors (gloo, MPI, or a ``cpu:gloo,cuda:nccl`` mapping), else this process's current
    GPU (NCCL)."""
    reduces_cpu = backend in ("gloo", "mpi") or "cpu:" in backend
    return torch.device("cpu") if reduces_cpu else torch.device("cuda")  # "cuda": the current GPU, set per rank


def collective_device() -> torch.device:
    """Where this process's collectives put their tensors (the CPU without a process group)."""
    return collective_device_for(str(dist.get_backend())) if dist.is_initialized() else torch.device("cpu")


def all_sum(values: Sequence[float] | np.ndarray) -> list[float]:
    """Element-wise sum over the ranks (float64); the values themselves without a group."""
    t = torch.as_tensor(np.asarray(values, dtype=np.float64), device=collective_device())
    if dist.is_initialized():
        dist.all_reduce(t)
    return t.cpu().tolist()


def gather_to_first(vector: np.ndarray, rank: int, world: int) -> np.ndarray | None:
    """Rank 0: every rank's ``vector`` (same length on every rank) as rows, in rank order;
    other ranks: None. A collective: every rank calls it at the same point."""
    if not dist.is_initialized():
        return np.asarray(vector, dtype=np.float64)[None, :]
    mine = torch.as_tensor(np.asarray(vector, dtype=np.float64), device=collective_device())
    rows = [torch.empty_like(mine) for _ in range(world)] if rank == 0 else None
    dist.gather(mine, gather_list=rows, dst=0)
    return torch.stack(rows).cpu().numpy() if rank == 0 else None


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's picklable ``obj``, in rank order (``[obj]`` without a group)."""
    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)  # NCCL: pickled through the current GPU, which Ray Train sets
    return out


def barrier() -> None:
    if not dist.is_initialized():
        return
    device = collective_device()
    # NCCL: name this process's GPU (else torch guesses it, and says so in a warning)
    dist.barrier(device_ids=[torch.cuda.current_device()] if device.type == "cuda" else None)


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """This process's random state for dropout and the like: the CPU generator's, and on a GPU
    worker the current GPU's too (dropout on a GPU draws from the GPU's generator)."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, torch.Tensor] | torch.Tensor, device: torch.device) -> None:
    """Restore ``rng_state``'s output (a bare tensor is the CPU state alone)."""
    if isinstance(state, torch.Tensor):
        state = {"cpu": state}
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
