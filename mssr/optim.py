"""Optimizer and learning-rate schedule from the train config.

    opt, sched = build_optimizer(model, cfg.train, total_steps=180)
"""

from __future__ import annotations

import math

import torch


def build_optimizer(model, train_cfg, total_steps: int):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    warmup, total = train_cfg.warmup_steps, max(1, total_steps)

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if train_cfg.lr_schedule == "linear":
            return 1.0 - progress
        if train_cfg.lr_schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)
