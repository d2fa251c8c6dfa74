"""Optimizer, learning-rate schedule, gradient accumulation and bf16 autocast from the train config.

    opt, sched = build_optimizer(model, cfg.train, total_steps=180)
    with autocast_context(cfg.train.autocast, device.type):
        losses = backward_in_micro_batches(loss_fn, n_rows, cfg.train.grad_accum_steps)
    opt.step(); sched.step(); opt.zero_grad()

Optimizers (``train.optimizer``), registered by name in ``OPTIMIZERS``:

=========== ======================================================================
adamw       ``torch.optim.AdamW`` (default): decoupled weight decay, ``betas``
adam        ``torch.optim.Adam``: weight decay is an L2 term added to the gradient
sgd         ``torch.optim.SGD`` with ``momentum`` (default 0.9)
rmsprop     ``torch.optim.RMSprop`` with ``momentum`` (default 0)
radam       ``torch.optim.RAdam`` (rectified Adam), decoupled weight decay
nadam       ``torch.optim.NAdam`` (Nesterov Adam), decoupled weight decay
adafactor   ``torch.optim.Adafactor``: factored second moments (little optimizer memory);
            its step is ``lr`` relative to each parameter's scale, not absolute
lamb        ``pytorch_optimizer.Lamb``: Adam with a layer-wise trust ratio (large batches)
adabound    ``pytorch_optimizer.AdaBound``: Adam whose step bounds close in on SGD's
=========== ======================================================================

``lamb`` and ``adabound`` come from the ``pytorch-optimizer`` package (imported only when
chosen). Any other optimizer plugs in by import path, ``train.optimizer:
"package.module:Class"``, and is built as ``Class(params, lr=train.lr,
weight_decay=train.weight_decay)``; or register a name that builds it from the config:

    @OPTIMIZERS.register("lion")
    def _lion(params, train_cfg):
        return Lion(params, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)

Schedules (``train.lr_schedule``), all after a linear warmup of ``train.warmup_steps``
(or ``train.warmup_ratio`` of all steps): ``constant``; ``linear`` and ``cosine`` decay to
0 at the last step; ``cosine_restarts`` decays along a cosine over ``train.restart_every``
steps, then jumps back to the full rate and decays again.
"""

from __future__ import annotations

import contextlib
import functools
import math
from pathlib import Path
from typing import Callable, ContextManager, Optional

import torch

from mssr.errors import ConfigError
from mssr.registry import Registry

OPTIMIZERS = Registry("optimizer")

# which optimizers read train.momentum / train.betas (setting them for another one is a config error)
USES_MOMENTUM = ("sgd", "rmsprop")
USES_BETAS = ("adamw", "adam", "radam", "nadam", "lamb", "adabound")


def _betas(train_cfg) -> dict:
    return {} if train_cfg.betas is None else {"betas": tuple(train_cfg.betas)}


@OPTIMIZERS.register("adamw")
def _adamw(params, train_cfg):
    return torch.optim.AdamW(params, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay, **_betas(train_cfg))


@OPTIMIZERS.register("adam")
def _adam(params, train_cfg):
    return torch.optim.Adam(params, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay, **_betas(train_cfg))


@OPTIMIZERS.register("sgd")
def _sgd(params, train_cfg):
    momentum = 0.9 if train_cfg.momentum is None else train_cfg.momentum
    return torch.optim.SGD(params, lr=train_cfg.lr, momentum=momentum, weight_decay=train_cfg.weight_decay)


@OPTIMIZERS.register("rmsprop")
def _rmsprop(params, train_cfg):
    momentum = 0.0 if train_cfg.momentum is None else train_cfg.momentum
    return torch.optim.RMSprop(params, lr=train_cfg.lr, momentum=momentum, weight_decay=train_cfg.weight_decay)


@OPTIMIZERS.register("radam")
def _radam(params, train_cfg):
    return torch.optim.RAdam(
        params, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay, decoupled_weight_decay=True, **_betas(train_cfg)
    )


@OPTIMIZERS.register("nadam")
def _nadam(params, train_cfg):
    return torch.optim.NAdam(
        params, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay, decoupled_weight_decay=True, **_betas(train_cfg)
    )


@OPTIMIZERS.register("adafactor")
def _adafactor(params, train_cfg):
    return torch.optim.Adafactor(params, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)


def _pytorch_optimizer(class_name: str):
    try:
        import pytorch_optimizer
    except ImportError:
        raise ConfigError(
            f"train.optimizer: {class_name.lower()} needs the pytorch-optimizer package: "
            "pip install pytorch-optimizer==4.1.0"
        ) from None
    return getattr(pytorch_optimizer, class_name)


@OPTIMIZERS.register("lamb")
def _lamb(params, train_cfg):
    return _pytorch_optimizer("Lamb")(params, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay, **_betas(train_cfg))


@OPTIMIZERS.register("adabound")
def _adabound(params, train_cfg):
    return _pytorch_optimizer("AdaBound")(
        params, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay, **_betas(train_cfg)
    )


def make_optimizer(params, train_cfg) -> torch.optim.Optimizer:
    """The optimizer named by ``train_cfg.optimizer`` over ``params`` (no schedule)."""
    name = train_cfg.optimizer
    params = list(params)
    if name in OPTIMIZERS.names():
        return OPTIMIZERS.get(name)(params, train_cfg)
    try:
        cls = OPTIMIZERS.get(name)
    except ConfigError as e:
        raise ConfigError(f"train.optimizer: {e}") from None
    try:
        opt = cls(params, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    except TypeError as e:
        raise ConfigError(
            f"train.optimizer: {name!r} cannot be built as "
            f"{name.partition(':')[2]}(params, lr=..., weight_decay=...): {e}"
        ) from None
    if not isinstance(opt, torch.optim.Optimizer):
        raise ConfigError(f"train.optimizer: {name!r} did not build a torch.optim.Optimizer (got {type(opt).__name__})")
    return opt


def resolve_warmup(train_cfg, total_steps: int) -> int:
    """Warmup length in steps: ``warmup_steps``, or ``warmup_ratio`` of ``total_steps`` rounded up."""
    if train_cfg.warmup_ratio > 0:
        return math.ceil(train_cfg.warmup_ratio * total_steps)
    return train_cfg.warmup_steps


def lr_factor(step: int, schedule: str, warmup: int, total: int, restart_every: int = 1) -> float:
    """Multiplier of the base learning rate for optimizer step ``step`` (0-based).

    Warmup ramps linearly, reaching the full rate at step ``warmup - 1``:

        >>> [lr_factor(s, "constant", warmup=4, total=10) for s in range(5)]
        [0.25, 0.5, 0.75, 1.0, 1.0]
        >>> lr_factor(10, "cosine", warmup=0, total=10)
        0.0

    Written here rather than taken from ``transformers.get_scheduler`` for two differences
    that matter on short tasks: its warmup gives the first step a rate of 0 (a wasted step),
    and its cosine restarts are a number of cycles over the whole run, where a stream of tasks
    wants a period in steps (``restart_every``) that does not depend on the stream's length.
    """
    if warmup and step < warmup:
        return (step + 1) / warmup
    after = step - warmup
    if schedule == "constant":
        return 1.0
    if schedule == "cosine_restarts":
        return 0.5 * (1.0 + math.cos(math.pi * (after % restart_every) / restart_every))
    progress = min(1.0, after / max(1, total - warmup))
    if schedule == "linear":
        return 1.0 - progress
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ConfigError(f"train.lr_schedule: unknown schedule {schedule!r}")


def build_optimizer(model, train_cfg, total_steps: int):
    """Optimizer over ``model``'s trainable parameters and its per-step LR schedule (``LambdaLR``).

    ``total_steps``: optimizer steps of the whole run (where linear and cosine reach 0).
    """
    opt = make_optimizer([p for p in model.parameters() if p.requires_grad], train_cfg)
    total = max(1, total_steps)
    warmup = resolve_warmup(train_cfg, total)
    schedule, restart_every = train_cfg.lr_schedule, train_cfg.restart_every

    def factor(step: int) -> float:
        return lr_factor(step, schedule, warmup, total, restart_every)

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def backward_in_micro_batches(
    loss_fn: Callable[[int, int], torch.Tensor],
    n_rows: int,
    micro_batches: int,
    no_sync: Optional[Callable[[], ContextManager]] = None,
) -> torch.Tensor:
    """Gradient accumulation: backpropagate the mean per-sample loss of ``n_rows`` rows in chunks.

    ``loss_fn(start, stop)`` runs the forward pass on rows ``[start, stop)`` and returns their
    per-sample losses, shape ``(stop - start,)``. The gradients equal those of
    ``loss_fn(0, n_rows).mean().backward()``, but only one chunk's activations are alive at a
    time. ``no_sync``: a DDP model's ``no_sync``, so gradients are all-reduced once, in the last
    chunk's backward. Returns all rows' losses, detached, in order.

        losses = backward_in_micro_batches(
            lambda a, b: per_sample_loss(model(**batch_rows(a, b)).logits, labels[a:b]),
            n_rows=len(rows), micro_batches=cfg.train.grad_accum_steps, no_sync=ddp_model.no_sync)
        opt.step()
    """
    chunks = max(1, min(micro_batches, n_rows))
    bounds = [i * n_rows // chunks for i in range(chunks + 1)]
    out = []
    for i in range(chunks):
        last = i == chunks - 1
        with no_sync() if no_sync is not None and not last else contextlib.nullcontext():
            losses = loss_fn(bounds[i], bounds[i + 1])
            (losses.mean() if chunks == 1 else losses.sum() / n_rows).backward()
        out.append(losses.detach())
    return torch.cat(out)


@functools.cache
def has_bf16_matmul(device_type: str) -> bool:
    """Does this machine's ``device_type`` have bf16 matrix instructions? CUDA: what torch
    reports for the current GPU; CPU: the AVX512-BF16 or AMX-BF16 flags of ``/proc/cpuinfo``
    (False where that file does not exist)."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_autocast(setting: str, device_type: str, phase: str = "train") -> str:
    """``train.autocast`` (``phase="train"``) or ``eval.autocast`` (``phase="eval"``) as it
    applies on ``device_type``: ``bf16`` or ``none``.

    ``auto`` for training is bf16 on CUDA GPUs with bf16 support, fp32 on CPUs. On CPUs the
    flags do not decide it: on an Intel Xeon with AMX-BF16, runs of the comparison stream trained
    with bf16 autocast ended 0.33 nats higher in answer loss and 0.08 lower in AP than the same
    seeds in fp32 (``benchmarks/paired_runs.py``; docs/results.md), and trained no faster there
    (autocast re-casts every fp32 weight at each forward, which outweighs the matmuls of a
    worker's few rows), while on an AMD EPYC a one-worker loop of 8 rows a step trained 1.64x
    faster. Set ``train.autocast=bf16`` where ``benchmarks/machine_limit.py`` shows it pays and
    a paired check shows the results hold.

    ``auto`` for evaluation is bf16 wherever the device has bf16 matrix instructions, CPUs
    included: evaluation has no backward pass and scores batches of many rows, so the matmuls
    outweigh the casts (``benchmarks/eval_agreement.py`` measures the speed and the agreement
    with fp32)."""
    if setting != "auto":
        return setting
    if phase == "eval":
        return "bf16" if has_bf16_matmul(device_type) else "none"
    return "bf16" if device_type == "cuda" and has_bf16_matmul(device_type) else "none"


def autocast_context(setting: str, device_type: str, phase: str = "train") -> ContextManager:
    """bf16 autocast for the forward pass when ``setting`` (``train.autocast`` or
    ``eval.autocast``) resolves to ``bf16`` on ``device_type`` in ``phase`` (see
    ``resolve_autocast``), else a no-op.

        with autocast_context(cfg.train.autocast, device.type):   # device.type: "cpu" or "cuda"
            logits = model(input_ids=ids, attention_mask=mask).logits
        per_sample_loss(logits, labels).mean().backward()  # the loss upcasts the logits to fp32

    Weights, gradients and optimizer state stay in the model's dtype; matmuls run in bf16.
    """
    if resolve_autocast(setting, device_type, phase) == "bf16":
        return torch.autocast(device_type=device_type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
