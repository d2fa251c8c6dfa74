"""Text -> token ids, and token rows -> padded training batches.

A sample is ``prompt_ids + answer_ids + [eos]``; the loss covers the answer and eos only.

    enc = PromptEncoder(tokenizer, **encoder_options(cfg.stream))
    rows = enc.encode_many(prompts, answers)  # {"input_ids": [[...], ...], "prompt_len": [n, ...]}
    batch = collate(rows["input_ids"], rows["prompt_len"], tokenizer.pad_token_id)
    # -> tensors input_ids, attention_mask, labels
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

IGNORE = -100


def encoder_options(stream_cfg) -> dict:
    """The stream settings a ``PromptEncoder`` needs, as plain keyword arguments."""
    return {"prompt_format": stream_cfg.prompt_format, "system_prompt": stream_cfg.system_prompt}


class PromptEncoder:
    def __init__(self, tokenizer, prompt_format: str = "chat", system_prompt: str | None = None):
        self.tok = tokenizer
        self.system = [] if system_prompt is None else [{"role": "system", "content": system_prompt}]
        self.use_chat = prompt_format == "chat" and bool(getattr(tokenizer, "chat_template", None))
        self.eos_id = tokenizer.eos_token_id

    def prompt_text(self, prompt: str) -> str:
        if self.use_chat:
            return self.tok.apply_chat_template(
                self.system + [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
        return f"Question: {prompt}\nAnswer: "

    def prompt_ids(self, prompt: str) -> list[int]:
        return self.tok(self.prompt_text(prompt), add_special_tokens=False)["input_ids"]

    def encode_many(self, prompts: Sequence[str], answers: Sequence[str]) -> dict[str, list]:
        texts = [self.prompt_text(p) for p in prompts]
        p_ids = self.tok(texts, add_special_tokens=False)["input_ids"]
        a_ids = self.tok(list(answers), add_special_tokens=False)["input_ids"]
        ids = [p + a + [self.eos_id] for p, a in zip(p_ids, a_ids)]
        return {"input_ids": ids, "prompt_len": [len(p) for p in p_ids]}


def truncate_prompt(ids: Sequence[int], prompt_len: int, max_length: int) -> tuple[list[int], int] | None:
    """Fit a sample into ``max_length`` tokens by cutting its prompt from the left (the answer
    and end-of-sequence token are what is learned, so they are kept whole). None when the
    answer alone leaves no room for at least one prompt token."""
    ids = list(ids)
    if len(ids) <= max_length:
        return ids, prompt_len
    cut = len(ids) - max_length
    if cut >= prompt_len:
        return None
    return ids[cut:], prompt_len - cut


def training_order(task_index: int, n_rows: int, seed: int) -> np.ndarray:
    """A task's train rows in their seeded training order: the same on every machine and run."""
    return np.random.default_rng([seed, task_index]).permutation(n_rows)


def encode_rows(
    encoder: PromptEncoder, prompts: Sequence[str], answers: Sequence[str], truncate_to: int | None = None
) -> tuple[list[list[int]], list[int], list[bool]]:
    """Token rows, prompt lengths and which rows were cut. With ``truncate_to``, longer rows have
    their prompt cut from the left; a row whose answer alone does not fit keeps its full length
    (and is refused by the caller)."""
    enc = encoder.encode_many(list(prompts), list(answers))
    truncated = [False] * len(enc["input_ids"])
    if truncate_to is not None:
        for i, (ids, plen) in enumerate(zip(enc["input_ids"], enc["prompt_len"])):
            fitted = truncate_prompt(ids, plen, truncate_to) if len(ids) > truncate_to else None
            if fitted is not None:
                enc["input_ids"][i], enc["prompt_len"][i] = fitted
                truncated[i] = True
    return enc["input_ids"], enc["prompt_len"], truncated


def row_stats(task, source_rows: Sequence[int], lengths: np.ndarray, truncated: np.ndarray, stream_cfg) -> dict:
    """A tokenised task's ``{"rows", "tokens", "max_length", "truncated"}``; a DataError naming
    the file and line of the first row longer than ``stream.max_length``."""
    from mssr.errors import DataError

    max_length = stream_cfg.max_length
    if lengths.max() > max_length:
        bad = int(np.argmax(lengths > max_length))
        hint = (
            "its answer alone does not fit"
            if stream_cfg.too_long == "truncate"
            else "shorten the row, raise max_length, or set stream.too_long=truncate"
        )
        raise DataError(
            f"{task.train_file}:{source_rows[bad]}: {int(lengths[bad])} tokens, "
            f"more than stream.max_length={max_length}; {hint}"
        )
    return {
        "rows": int(lengths.size),
        "tokens": int(lengths.sum()),
        "max_length": int(lengths.max()),
        "truncated": int(truncated.sum()),
    }


def collate(input_ids: Sequence[Sequence[int]], prompt_lens: Sequence[int], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest row; labels mask the prompt and the padding."""
    n, width = len(input_ids), max(len(r) for r in input_ids)
    ids = np.full((n, width), pad_id, dtype=np.int64)
    mask = np.zeros((n, width), dtype=np.int64)
    labels = np.full((n, width), IGNORE, dtype=np.int64)
    for i, (row, plen) in enumerate(zip(input_ids, prompt_lens)):
        L = len(row)
        ids[i, :L] = row
        mask[i, :L] = 1
        labels[i, plen:L] = row[plen:]
    return {
        "input_ids": torch.from_numpy(ids),
        "attention_mask": torch.from_numpy(mask),
        "labels": torch.from_numpy(labels),
    }
