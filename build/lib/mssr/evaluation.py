"""Generation-based evaluation: greedy decoding with a KV cache, left-padded batches, scored.

    scores, tokens = evaluate_examples(model, encoder, examples, scorer, max_new_tokens=16, batch_size=24)
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from mssr.tasks import Example
from mssr.tokenize import PromptEncoder


@torch.no_grad()
def generate_answers(model, encoder: PromptEncoder, prompts: Sequence[str], max_new_tokens: int,
                     batch_size: int) -> tuple[list[str], int]:
    """Greedy answers for ``prompts``; also returns the tokens processed (prompt + generated)."""
    tok = encoder.tok
    was_training = model.training
    model.eval()
    answers: list[str] = []
    tokens = 0
    try:
        for start in range(0, len(prompts), batch_size):
            rows = [encoder.prompt_ids(p) for p in prompts[start:start + batch_size]]
            width = max(len(r) for r in rows)
            ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for i, r in enumerate(rows):  # left padding: generation continues every row at the end
                ids[i, width - len(r):] = torch.tensor(r)
                mask[i, width - len(r):] = 1
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=encoder.eos_id)
            new = out[:, width:]
            tokens += int(mask.sum()) + int((new != tok.pad_token_id).sum())
            answers.extend(tok.decode(row, skip_special_tokens=True).strip() for row in new)
    finally:
        model.train(was_training)
    return answers, tokens


def evaluate_examples(model, encoder: PromptEncoder, examples: Sequence[Example], scorer: Callable[[str, str], float],
                      max_new_tokens: int, batch_size: int) -> tuple[list[float], int]:
    """Per-example scores and evaluation tokens spent."""
    if not examples:
        return [], 0
    answers, tokens = generate_answers(model, encoder, [e.prompt for e in examples], max_new_tokens, batch_size)
    return [float(scorer(a, e.answer)) for a, e in zip(answers, examples)], tokens
