"""The learner: one worker's model, optimizer, schedule and parameter isolation, its training
step, its probes and its evaluation. No Ray: a Ray Train worker drives it with its shard's
batches and the memory actor's plans, a test or a GPU check drives it in-process.

A training step takes the new rows of the step's batch and the replayed pool rows, runs
one forward pass over all of them (in ``train.grad_accum_steps`` chunks), backpropagates
their mean loss, applies parameter isolation, clips, steps the optimizer and the schedule,
and returns every row's loss: the memory model's only input, with no extra forward pass.

    learner = Learner(cfg, total_steps=80, device=torch.device("cpu"))
    result = learner.train_step(new_rows, replay_rows)     # rows: (token ids, prompt length)
    result.losses                                           # new rows first, then the replayed ones
    scores = learner.evaluate(examples, scorer="exact_match")

With data parallelism the caller passes ``wrap_model`` (Ray Train's ``prepare_model``: DDP),
and the gradients are averaged over the ranks inside ``backward``; everything else here is
per rank. Where tensors live follows one rule, written down in ``mssr.distributed``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from mssr.config import Config
from mssr.distributed import to_device
from mssr.evaluation import EvalResult, evaluate_examples, length_batches
from mssr.isolation import make_isolation
from mssr.losses import answer_logits, answer_reproduced, per_sample_loss
from mssr.models import load_model, load_trainable_state_dict, resolve_dtype, trainable_state_dict
from mssr.optim import autocast_context, backward_in_micro_batches, build_optimizer, resolve_autocast
from mssr.tasks import Example
from mssr.tokenize import PromptEncoder, collate, encoder_options

Row = tuple[Sequence[int], int]  # a tokenised sample: its token ids and its prompt length


@dataclass(frozen=True)
class StepResult:
    """One training step of one rank: every row's loss (new rows first, then the replayed
    ones), the real (unpadded) tokens of each kind, the norm of the weights' update (when
    asked for) and the isolation metrics of a mask change at this step (else None)."""

    losses: np.ndarray
    new_tokens: int
    replay_tokens: int
    update_norm: float = 0.0
    isolation_metrics: Optional[dict] = None


@dataclass(frozen=True)
class ProbeResult:
    """A no-grad pass over pool samples: each one's loss and whether greedy decoding would
    reproduce its answer; the tokens it processed and the seconds it took."""

    losses: list[float]
    correct: list[bool]
    tokens: int
    seconds: float


class Learner:
    """A model being fine-tuned on a stream, with its optimizer, LR schedule and isolation.

    ``wrap_model`` wraps the loaded model for training (DDP under Ray Train); evaluation,
    probes, isolation and checkpoints use the unwrapped model (``core``)."""

    def __init__(
        self,
        cfg: Config,
        total_steps: int,
        device: torch.device,
        wrap_model: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
    ):
        self.cfg, self.device = cfg, device
        model, self.tok = load_model(
            cfg.model, seed=cfg.seed, gradient_checkpointing=cfg.train.gradient_checkpointing, device_type=device.type
        )
        self.model = wrap_model(model) if wrap_model is not None else model.to(device)
        self.core = self.model.module if hasattr(self.model, "module") else self.model
        self.encoder = PromptEncoder(self.tok, **encoder_options(cfg.stream))
        self.opt, self.sched = build_optimizer(self.core, cfg.train, total_steps)
        self.trainable = [p for p in self.core.parameters() if p.requires_grad]
        self.isolation = make_isolation(cfg.isolation, self.trainable)  # the same mask on every rank
        self.weights_dtype = resolve_dtype(cfg.model, device.type)  # "bfloat16" or "float32"
        self.precision = resolve_autocast(cfg.train.autocast, device.type)  # "bf16" or "none"
        self.eval_precision = resolve_autocast(cfg.eval.autocast, device.type, "eval")

    def _batch(self, rows: Sequence[Row]) -> dict[str, torch.Tensor]:
        return to_device(collate([r[0] for r in rows], [int(r[1]) for r in rows], self.tok.pad_token_id), self.device)

    def _autocast(self):
        return autocast_context(self.cfg.train.autocast, self.device.type)

    # -- training --------------------------------------------------------------------
    def start_task(self, k: int) -> Optional[dict]:
        """Task ``k`` begins: the isolation method may take a new mask (its metrics, or None)."""
        return self.isolation.start_task(k)

    def train_step(
        self, new_rows: Sequence[Row], replay_rows: Sequence[Row] = (), update_norm: bool = False
    ) -> StepResult:
        """One optimizer step on ``new_rows`` + ``replay_rows``; ``update_norm``: also measure
        how far the step moved the trainable weights (the model-time clock's input)."""
        rows = [*new_rows, *replay_rows]
        real_tokens: list[torch.Tensor] = []

        def chunk_losses(start: int, stop: int) -> torch.Tensor:  # the forward pass of rows[start:stop]
            b = self._batch(rows[start:stop])
            with self._autocast():
                logits, labels = answer_logits(self.model, b, [int(r[1]) for r in rows[start:stop]])
            real_tokens.append(b["attention_mask"].sum(dim=1).cpu())
            return per_sample_loss(logits, labels)

        losses = backward_in_micro_batches(
            chunk_losses, len(rows), self.cfg.train.grad_accum_steps, no_sync=getattr(self.model, "no_sync", None)
        )
        # gradients are averaged over the ranks by now: the same importance and mask on every rank
        isolation_metrics = self.isolation.observe_gradients()
        before = [p.detach().clone() for p in self.trainable] if update_norm else None
        with self.isolation.frozen():  # isolated weights: gradient zeroed, value restored after the step
            if self.cfg.train.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.trainable, self.cfg.train.grad_clip)
            self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        norm = 0.0
        if before is not None:
            norm = float(torch.sqrt(sum(((p.detach() - b0) ** 2).sum() for p, b0 in zip(self.trainable, before))))
        tokens = torch.cat(real_tokens).numpy()
        n_new = len(new_rows)
        return StepResult(
            losses=losses.float().cpu().numpy(),
            new_tokens=int(tokens[:n_new].sum()),
            replay_tokens=int(tokens[n_new:].sum()),
            update_norm=norm,
            isolation_metrics=isolation_metrics,
        )

    @torch.no_grad()
    def probe(self, rows: Sequence[Row]) -> ProbeResult:
        """Loss and greedy exact match of pool samples, no gradients, in batches of
        ``eval.batch_size`` rows of similar length (evaluation's forced pass: one batch of
        every row, padded to the longest, cost several times as much per row)."""
        if not rows:
            return ProbeResult([], [], 0, 0.0)
        started = time.perf_counter()
        losses, correct = [0.0] * len(rows), [False] * len(rows)
        tokens = 0
        self.core.eval()
        try:
            for part in length_batches([len(r[0]) for r in rows], self.cfg.eval.batch_size):
                chunk = [rows[i] for i in part]
                b = self._batch(chunk)
                with self._autocast():
                    logits, labels = answer_logits(self.core, b, [int(r[1]) for r in chunk])
                tokens += int(b["attention_mask"].sum())
                for i, loss, ok in zip(
                    part.tolist(),
                    per_sample_loss(logits, labels).float().cpu().tolist(),
                    answer_reproduced(logits, labels).cpu().tolist(),
                ):
                    losses[i], correct[i] = float(loss), bool(ok)
        finally:
            self.core.train()
        return ProbeResult(losses, correct, tokens, time.perf_counter() - started)

    # -- evaluation ------------------------------------------------------------------
    def evaluate(self, examples: Sequence[Example], scorer: str) -> EvalResult:
        """Score test rows with the task's scorer (``eval.mode``, ``eval.autocast``): each row's
        score and answer loss, and the tokens processed."""
        return evaluate_examples(
            self.core,
            self.encoder,
            examples,
            scorer,
            self.cfg.eval.mode,
            self.cfg.eval.max_new_tokens,
            self.cfg.eval.batch_size,
            autocast_context(self.cfg.eval.autocast, self.device.type, "eval"),
        )

    # -- state -----------------------------------------------------------------------
    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict]:
        """The trainable weights (safetensors-ready) and the optimizer, schedule and isolation state."""
        return trainable_state_dict(self.core), {
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "isolation": self.isolation.state_dict(),
        }

    def load_state_dict(self, trainable: dict[str, torch.Tensor], trainer_state: dict) -> None:
        load_trainable_state_dict(self.core, trainable)
        self.opt.load_state_dict(trainer_state["optimizer"])
        self.isolation.load_state_dict(trainer_state["isolation"])
        self.sched.load_state_dict(trainer_state["scheduler"])

    def isolation_summary(self) -> dict:
        return {
            "method": self.cfg.isolation.method,
            "refreshes": self.isolation.refreshes,
            "fraction": self.isolation.isolated_fraction(),
            "state_mb": round(self.isolation.state_bytes() / 2**20, 3),
        }
