"""Per-sample losses from the training forward pass itself (no extra forward).

logits, labels = answer_logits(model, batch, prompt_lens)   # logits from the last prompt token on
per_sample = per_sample_loss(logits, labels)   # (batch,) mean token CE of each answer
per_sample.mean().backward()
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from mssr.tokenize import IGNORE


def answer_logits(
    model, batch: dict[str, torch.Tensor], prompt_lens: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The forward pass of a collated batch, with the vocabulary projection computed only from
    the last prompt token of the shortest prompt on, and the labels aligned with those logits.

    The earlier positions' logits predict prompt tokens, which the loss never reads (their
    labels are ``IGNORE``), yet projecting them onto a 49k-token vocabulary and taking their
    softmax is work for nothing; ``per_sample_loss`` and
    ``answer_reproduced`` give the same values on the kept slice as on the whole sequence.
    ``prompt_lens`` (the rows' prompt lengths, as given to ``collate``) are host integers, so
    no device value is read back.

        logits, labels = answer_logits(model, collate(ids, prompt_lens, pad_id), prompt_lens)
    """
    first = max(min(prompt_lens) - 1, 0)  # the logit at position p predicts token p + 1
    labels = batch["labels"]
    logits = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        logits_to_keep=labels.shape[1] - first,
    ).logits
    return logits, labels[:, first:]


def per_sample_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over each row's labelled tokens, shape (batch,)."""
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    token_loss = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1), ignore_index=IGNORE, reduction="none"
    ).view(shift_labels.shape)
    counts = (shift_labels != IGNORE).sum(dim=1).clamp(min=1)
    return token_loss.sum(dim=1) / counts


def answer_reproduced(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per row: is every labelled token the argmax given the true prefix? That is exactly when
    greedy decoding would generate the answer (and its eos), so one forward pass gives greedy
    exact-match accuracy without a generation loop. Shape (batch,), bool."""
    shift_labels = labels[:, 1:]
    hit = (logits[:, :-1, :].argmax(dim=-1) == shift_labels) | (shift_labels == IGNORE)
    return hit.all(dim=1)
