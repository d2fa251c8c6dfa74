"""Where tensors live (mssr.distributed): the collectives' device for each backend, the
collectives through a real one-process gloo group, no collective outside the module, and
every forward pass of the learner fed on the model's device (checked on the ``meta`` device,
where an input left on the CPU shows up without a GPU)."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from mssr.config import load_config
from mssr.distributed import (
    all_gather_objects,
    all_sum,
    barrier,
    collective_device,
    collective_device_for,
    gather_to_first,
    rng_state,
    set_rng_state,
)
from mssr.evaluation import generate_answers
from mssr.learner import Learner
from mssr.tasks import Example

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "backend, device", [("nccl", "cuda"), ("gloo", "cpu"), ("mpi", "cpu"), ("cpu:gloo,cuda:nccl", "cpu")]
)
def test_collective_tensors_go_where_the_backend_reduces_them(backend, device):
    assert collective_device_for(backend).type == device


def test_the_collectives_work_without_a_process_group():
    assert collective_device() == torch.device("cpu")
    assert all_sum([1.5, 2]) == [1.5, 2.0]
    assert gather_to_first(np.array([1.0, 2.0]), rank=0, world=1).tolist() == [[1.0, 2.0]]
    assert all_gather_objects({"a": 1}) == [{"a": 1}]
    barrier()


@pytest.fixture
def gloo_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_the_collectives_through_a_one_process_gloo_group(gloo_group):
    assert collective_device() == torch.device("cpu")
    assert all_sum(np.array([1.0, 2.0, 3.0])) == [1.0, 2.0, 3.0]
    assert gather_to_first(np.array([4.0, 5.0]), rank=0, world=1).tolist() == [[4.0, 5.0]]
    assert all_gather_objects(("x", 3)) == [("x", 3)]
    barrier()


def test_no_collective_is_called_outside_the_distributed_module():
    call = re.compile(r"\bdist\.(all_reduce|all_gather|all_gather_object|gather|barrier|broadcast|reduce|scatter)\(")
    offenders = [
        str(p.relative_to(ROOT))
        for folder in ("mssr", "pipelines")
        for p in sorted((ROOT / folder).glob("*.py"))
        if p.name != "distributed.py" and call.search(p.read_text())
    ]
    assert offenders == []


def test_the_random_state_round_trips_and_a_bare_tensor_is_the_cpu_state():
    cpu = torch.device("cpu")
    state = rng_state(cpu)
    a = torch.rand(3)
    set_rng_state(state, cpu)
    assert torch.equal(torch.rand(3), a)
    set_rng_state(state["cpu"], cpu)  # the form of checkpoints that hold the CPU state alone
    assert torch.equal(torch.rand(3), a)


class _Reached(Exception):
    """Raised once the inputs are checked: on ``meta`` nothing after the forward pass can run."""


def _on_meta() -> Learner:
    cfg = load_config(ROOT / "configs" / "tiny.yaml", ["eval.autocast=none"])
    learner = Learner(cfg, total_steps=4, device=torch.device("meta"))
    assert next(learner.core.parameters()).device.type == "meta"

    def inputs_on_the_model_device(module, args, kwargs):
        tensors = [v for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor)]
        assert tensors and all(t.device.type == "meta" for t in tensors), [t.device for t in tensors]
        raise _Reached

    learner.core.register_forward_pre_hook(inputs_on_the_model_device, with_kwargs=True)
    # generate() reads its inputs' values before the first forward (not possible on meta):
    # check what it is given instead
    learner.core.generate = lambda *args, **kwargs: inputs_on_the_model_device(learner.core, args, kwargs)
    return learner


@pytest.mark.parametrize("call", ["train_step", "probe", "evaluate", "generate"])
def test_every_forward_pass_gets_its_inputs_on_the_model_device(call):
    learner = _on_meta()
    enc = learner.encoder.encode_many(["what is 1 plus 1?"], ["2"])
    rows = list(zip(enc["input_ids"], enc["prompt_len"]))
    run = {
        "train_step": lambda: learner.train_step(rows, rows),
        "probe": lambda: learner.probe(rows),
        "evaluate": lambda: learner.evaluate([Example("what is 1 plus 1?", "2")], "exact_match"),
        "generate": lambda: generate_answers(learner.core, learner.encoder, ["what is 1 plus 1?"], 4, 2),
    }[call]
    with pytest.raises(_Reached):
        run()
