"""Scoring a task's test rows: one forced forward pass, or greedy generation.

Two ways to score a row, chosen per task by ``eval.mode`` and the task's scorer:

* **forced** (default for exact-match tasks): one forward pass over ``prompt + answer +
  end-of-sequence``. The row is correct when every answer token, and the end-of-sequence
  token after it, is the argmax given the true prefix: exactly the condition under which
  greedy decoding generates the reference answer and stops. The same pass gives the row's
  answer loss (mean next-token cross-entropy over the answer and its end-of-sequence).
* **generate**: greedy decoding (KV cache, left-padded batches) up to ``max_new_tokens``,
  the decoded text scored by the task's scorer; needed by free-text scorers (token F1,
  ROUGE-L, multiple choice, user scorers). The answer loss comes from a forced pass too.

"The end of the answer" is the tokenizer's end-of-sequence token, the token every training
row ends with. Forced and generated exact match can still disagree on a row, in three ways
(counted by ``benchmarks/eval_agreement.py``): generation is scored after normalisation
(case, punctuation, articles) while forced scoring wants the reference's exact tokens; the
generated text may spell the answer with other tokens than the reference's tokenisation;
and a near-tie between two tokens can fall differently in the padded batches of the two
methods.

Rows are processed in order of length, so a batch holds rows of similar length and little
is spent on padding.

    result = evaluate_examples(model, encoder, examples, scorer="exact_match", mode="forced",
                               max_new_tokens=16, batch_size=24)
    result.scores, result.losses, result.tokens
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, ContextManager, Sequence

import numpy as np
import torch

from mssr.distributed import device_of, to_device
from mssr.losses import answer_logits, answer_reproduced, per_sample_loss
from mssr.scoring import get_scorer
from mssr.tasks import Example
from mssr.tokenize import PromptEncoder, collate

# scorers whose score is 1 exactly when the model outputs the reference: a forced pass decides them
FORCED_SCORERS = frozenset({"exact_match"})


@dataclass(frozen=True)
class EvalResult:
    """Per-row scores and answer losses (in the order of the examples), and tokens processed."""

    scores: list[float]
    losses: list[float]
    tokens: int


def eval_mode_for(scorer: str, mode: str) -> str:
    """The mode a task is scored in: ``forced`` only where the scorer allows it."""
    return "forced" if mode == "forced" and scorer in FORCED_SCORERS else "generate"


def length_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Row indices grouped into batches of similar length (longest first)."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@torch.no_grad()
def forced_pass(
    model, encoder: PromptEncoder, examples: Sequence[Example], batch_size: int, autocast: ContextManager | None = None
) -> tuple[list[bool], list[float], int]:
    """Per row: would greedy decoding reproduce the answer (and stop), and the answer loss;
    also the tokens processed. One forward pass per batch of similar-length rows."""
    enc = encoder.encode_many([e.prompt for e in examples], [e.answer for e in examples])
    ids, plens = enc["input_ids"], enc["prompt_len"]
    device = device_of(model)
    correct = [False] * len(ids)
    losses = [0.0] * len(ids)
    was_training = model.training
    model.eval()
    try:
        for rows in length_batches([len(r) for r in ids], batch_size):
            b = to_device(collate([ids[i] for i in rows], [plens[i] for i in rows], encoder.tok.pad_token_id), device)
            with autocast or contextlib.nullcontext():
                logits, labels = answer_logits(model, b, [plens[i] for i in rows])  # from the last prompt token on
            for i, ok, loss in zip(
                rows.tolist(),
                answer_reproduced(logits, labels).tolist(),
                per_sample_loss(logits, labels).float().tolist(),
            ):
                correct[i], losses[i] = bool(ok), float(loss)
    finally:
        model.train(was_training)
    return correct, losses, sum(len(r) for r in ids)


@torch.no_grad()
def generate_answers(
    model,
    encoder: PromptEncoder,
    prompts: Sequence[str],
    max_new_tokens: int,
    batch_size: int,
    autocast: ContextManager | None = None,
) -> tuple[list[str], int]:
    """Greedy answers for ``prompts`` (in their order); also the tokens processed (prompt + generated)."""
    tok = encoder.tok
    device = device_of(model)
    prompt_ids = [encoder.prompt_ids(p) for p in prompts]
    answers = [""] * len(prompts)
    tokens = 0
    was_training = model.training
    model.eval()
    try:
        for rows in length_batches([len(r) for r in prompt_ids], batch_size):
            width = max(len(prompt_ids[i]) for i in rows)
            ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for n, i in enumerate(rows):  # left padding: generation continues every row at the end
                ids[n, width - len(prompt_ids[i]) :] = torch.tensor(prompt_ids[i])
                mask[n, width - len(prompt_ids[i]) :] = 1
            with autocast or contextlib.nullcontext():
                out = model.generate(
                    **to_device({"input_ids": ids, "attention_mask": mask}, device),
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=tok.pad_token_id,
                    eos_token_id=encoder.eos_id,
                )
            new = out[:, width:].cpu()
            tokens += int(mask.sum()) + int((new != tok.pad_token_id).sum())
            for n, i in enumerate(rows.tolist()):
                answers[i] = tok.decode(new[n], skip_special_tokens=True).strip()
    finally:
        model.train(was_training)
    return answers, tokens


def evaluate_examples(
    model,
    encoder: PromptEncoder,
    examples: Sequence[Example],
    scorer: str,
    mode: str,
    max_new_tokens: int,
    batch_size: int,
    autocast: ContextManager | None = None,
) -> EvalResult:
    """Score ``examples`` with the task's ``scorer`` (a registered name or import path) in
    ``mode`` (``forced`` or ``generate``; forced falls back to generate for scorers it cannot
    decide, see ``eval_mode_for``). Every mode also gives each row's answer loss."""
    if not examples:
        return EvalResult([], [], 0)
    correct, losses, tokens = forced_pass(model, encoder, examples, batch_size, autocast)
    if eval_mode_for(scorer, mode) == "forced":
        return EvalResult([float(c) for c in correct], losses, tokens)
    score: Callable[[str, str], float] = get_scorer(scorer)
    answers, gen_tokens = generate_answers(
        model, encoder, [e.prompt for e in examples], max_new_tokens, batch_size, autocast
    )
    return EvalResult([float(score(a, e.answer)) for a, e in zip(answers, examples)], losses, tokens + gen_tokens)
