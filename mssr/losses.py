"""Per-sample losses from the training forward pass itself (no extra forward).

logits = model(input_ids=..., attention_mask=...).logits
per_sample = per_sample_loss(logits, labels)   # (batch,) mean token CE of each answer
per_sample.mean().backward()
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mssr.tokenize import IGNORE


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
