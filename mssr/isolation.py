"""Parameter isolation: a fraction of the trainable weights is frozen against the current task.

    iso = make_isolation(cfg.isolation, trainable_params)
    iso.start_task(k)                  # static: the mask for task k is fixed here
    loss.backward()
    metrics = iso.observe_gradients()  # epi: importance EMA; a new mask every refresh_every steps
    with iso.frozen():                 # masked gradients zeroed; masked values put back afterwards
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

``frozen()`` zeroes the masked gradients (so the current task's gradient does not reach the
optimizer's moments) *and* writes the masked weights back after the step: AdamW's weight
decay and every optimizer's momentum move a weight whose gradient is zero, and only the
write-back makes "isolated" mean bit-for-bit unchanged, whatever the optimizer.

Methods (``isolation.method``), registered by name in ``ISOLATIONS``:

======= ===========================================================================
none    nothing isolated (the default)
static  at each task boundary, the ``ratio`` of weights the finished task moved most
        (``|theta_end - theta_start|``, normalised per tensor) is frozen for the whole
        next task; nothing is frozen during the first task (CPI-FT-style baseline)
epi     Evolving Parameter Isolation: importance ``u <- ema * u + (1 - ema) * |g * theta|``
        after every step, normalised per tensor; every ``refresh_every`` steps the top
        ``ratio`` becomes the mask, so weights whose importance faded are released and
        newly important ones protected. The gradient is the step's whole batch: when
        replay is on it includes the replayed samples, so rehearsal keeps the importance
        of what past tasks still rely on. The state carries across task boundaries: at
        the start of a task the mask protects what the previous tasks needed.
======= ===========================================================================

A user method plugs in by import path (``isolation.method: "pkg.mod:MyIsolation"``): a
subclass of ``ParameterIsolation`` built as ``MyIsolation(params, isolation_cfg)`` that
sets ``self.mask`` in ``start_task`` and/or ``observe_gradients``.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch

from mssr.errors import ConfigError
from mssr.registry import Registry

ISOLATIONS = Registry("isolation method")

Mask = list[torch.Tensor]  # one bool tensor per parameter, True = isolated


def top_fraction_mask(scores: list[torch.Tensor], ratio: float) -> Mask:
    """The top ``ratio`` of all entries by score, each tensor's scores divided by its mean first
    (so a layer with large gradients does not take the whole mask). Ties are broken by
    ``torch.topk`` (deterministic on the same input).

        >>> [m.tolist() for m in top_fraction_mask([torch.tensor([1., 3.]), torch.tensor([10., 10., 40.])], 0.4)]
        [[False, True], [False, False, True]]
    """
    flat = torch.cat([(s / s.mean().clamp_min(torch.finfo(torch.float32).tiny)).flatten().float() for s in scores])
    k = int(round(ratio * flat.numel()))
    chosen = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    if k > 0:
        chosen[torch.topk(flat, k, sorted=False).indices] = True
    out, start = [], 0
    for s in scores:
        out.append(chosen[start : start + s.numel()].view(s.shape))
        start += s.numel()
    return out


def mask_overlap(previous: Optional[Mask], current: Mask) -> Optional[float]:
    """Jaccard overlap |previous and current| / |previous or current| (1.0: the same mask)."""
    if previous is None:
        return None
    both = sum(int((a & b).sum()) for a, b in zip(previous, current))
    either = sum(int((a | b).sum()) for a, b in zip(previous, current))
    return both / either if either else 1.0


class ParameterIsolation:
    """No isolation; the base of every method. ``self.mask`` (or None) is what ``frozen()`` freezes."""

    def __init__(self, params: list[torch.Tensor], cfg):
        self.params = list(params)
        self.cfg = cfg
        self.mask: Optional[Mask] = None
        self.refreshes = 0

    # -- the hooks a method overrides --------------------------------------------------
    def start_task(self, k: int) -> Optional[dict]:
        """Called before task ``k``'s first step; returns metrics when the mask changed."""
        return None

    def observe_gradients(self) -> Optional[dict]:
        """Called after every backward pass (gradients all-reduced); returns metrics when the mask changed."""
        return None

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    # -- shared machinery --------------------------------------------------------------
    def set_mask(self, mask: Mask) -> dict:
        """Install a new mask; the metrics of the change (logged to MLflow by the trainer)."""
        overlap = mask_overlap(self.mask, mask)
        self.mask = mask
        self.refreshes += 1
        out = {"isolation/fraction": self.isolated_fraction(), "isolation/state_mb": self.state_bytes() / 2**20}
        if overlap is not None:
            out["isolation/mask_overlap"] = overlap
        return out

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """Zero the masked gradients; after the block (the optimizer step), restore the masked weights."""
        if self.mask is None:
            yield
            return
        with torch.no_grad():
            saved = []
            for p, m in zip(self.params, self.mask):
                if p.grad is not None:
                    p.grad.masked_fill_(m, 0)
                saved.append(p[m].clone())
        yield
        with torch.no_grad():
            for p, m, values in zip(self.params, self.mask, saved):
                p[m] = values

    def isolated_fraction(self) -> float:
        if self.mask is None:
            return 0.0
        return sum(int(m.sum()) for m in self.mask) / max(1, sum(m.numel() for m in self.mask))

    def state_bytes(self) -> int:
        """Memory held by the method: the mask plus any per-weight state (importance, snapshots)."""
        tensors = list(self.mask or []) + [
            t for v in self.extra_state().values() if isinstance(v, list) for t in v if isinstance(t, torch.Tensor)
        ]
        return sum(t.numel() * t.element_size() for t in tensors)

    def state_dict(self) -> dict:
        """CPU tensors (for ``torch.save``); ``load_state_dict`` moves them back to the weights' device."""
        return _to_device({"mask": self.mask, "refreshes": self.refreshes, **self.extra_state()}, "cpu")

    def load_state_dict(self, state: dict) -> None:
        state = _to_device(state, self.params[0].device if self.params else "cpu")
        self.mask = state["mask"]
        self.refreshes = state["refreshes"]
        self.load_extra_state(state)


def _to_device(state: dict, device) -> dict:
    return {k: [t.to(device) for t in v] if isinstance(v, list) else v for k, v in state.items()}


ISOLATIONS.register("none")(ParameterIsolation)


@ISOLATIONS.register("static")
class StaticIsolation(ParameterIsolation):
    """The mask for task k: the weights task k-1 moved most; fixed for the whole task."""

    def __init__(self, params, cfg):
        super().__init__(params, cfg)
        self.task_start: Optional[list[torch.Tensor]] = None

    def start_task(self, k: int) -> Optional[dict]:
        current = [p.detach().float().clone() for p in self.params]
        metrics = None
        if self.task_start is not None:
            moved = [(c - s).abs() for c, s in zip(current, self.task_start)]
            metrics = self.set_mask(top_fraction_mask(moved, self.cfg.ratio))
        self.task_start = current
        return metrics

    def extra_state(self) -> dict:
        return {"task_start": self.task_start}

    def load_extra_state(self, state: dict) -> None:
        self.task_start = state["task_start"]


@ISOLATIONS.register("epi")
class EvolvingIsolation(ParameterIsolation):
    """EPI: an EMA of |g * theta| per weight; the top ``ratio`` is re-chosen every ``refresh_every`` steps."""

    def __init__(self, params, cfg):
        super().__init__(params, cfg)
        self.importance = [torch.zeros(p.shape, dtype=torch.float32, device=p.device) for p in self.params]
        self.steps = 0

    @torch.no_grad()
    def observe_gradients(self) -> Optional[dict]:
        ema = self.cfg.ema
        for u, p in zip(self.importance, self.params):
            if p.grad is not None:
                u.mul_(ema).add_((p.grad.float() * p.float()).abs(), alpha=1.0 - ema)
            else:
                u.mul_(ema)
        self.steps += 1
        if self.steps % self.cfg.refresh_every:
            return None
        return self.set_mask(top_fraction_mask(self.importance, self.cfg.ratio))

    def extra_state(self) -> dict:
        return {"importance": self.importance, "steps": self.steps}

    def load_extra_state(self, state: dict) -> None:
        self.importance = state["importance"]
        self.steps = state["steps"]


def make_isolation(cfg, params: list[torch.Tensor]) -> ParameterIsolation:
    """The isolation method named by ``cfg.method`` over ``params`` (the trainable weights)."""
    cls = ISOLATIONS.get(cfg.method)
    if not (isinstance(cls, type) and issubclass(cls, ParameterIsolation)):
        raise ConfigError(f"isolation.method: {cfg.method!r} is not a subclass of mssr.isolation.ParameterIsolation")
    return cls(params, cfg)
