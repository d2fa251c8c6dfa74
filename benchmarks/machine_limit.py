"""How close LoRA training gets to the machine's limit: matmul peak vs achieved training FLOP/s.

1. Peak: ``torch.matmul`` of square n x n matrices (2*n^3 FLOP), fp32 and bf16, the best size of
   ``--sizes``, median of ``--repeats`` after a warm-up.
2. Training: a bare single-process LoRA step (no Ray) on the model and built-in stream of
   configs/compare.yaml, as the learner does it (forward under ``autocast_context``, the
   logits from the first answer position on, ``per_sample_loss(...).mean()``, backward, grad
   clip, optimizer and schedule step, zero_grad), on batches of ``--batch`` real rows (batch
   i from task i mod T), three ways from the same initial adapter over the same batches:
   ``fp32`` (``model.dtype=float32``), ``bf16 autocast`` (fp32 weights cast at each forward)
   and ``bf16 base`` (``model.dtype=bfloat16``: the frozen base stored in bf16, the adapters
   fp32; what ``model.dtype=auto`` picks for LoRA on a CPU with bf16 matrix instructions).
   2 warm-up steps, then ``--steps`` timed ones; the three take turns step by step, so a
   machine's drift touches them alike (median per way).

Model FLOPs per real (non-pad) token, counted from the model's modules:

    N_base = weights of every Linear actually multiplied (q,k,v,o,gate,up,down of each layer
             and lm_head; the input embedding is a lookup and is not counted)
    N_lora = weights of the LoRA A and B matrices
    attn   = 2*2*layers*seq*d_attn (QK^T and AV, seq = the batch's padded width)
    forward  = 2*N_base + 2*N_lora + attn
    backward = 2*N_base (activation gradients only: frozen weights get no weight gradient)
             + 4*N_lora (activation and weight gradients) + 2*attn
    per token = 4*N_base + 6*N_lora + 3*attn

Pad tokens are not counted, so the achieved figure is useful FLOP/s (the vocabulary projection
is counted over every position, as if it were not cut to the answers). Accuracy of bf16: the
mean absolute difference of the per-sample losses of one batch against fp32 with the same
adapter; and the relative difference of the mean loss on a held-out batch after the same
2+steps training steps.

    .venv/bin/python benchmarks/machine_limit.py                          # 8 steps, batch 8, 2 threads
    .venv/bin/python benchmarks/machine_limit.py --threads 1 --batch 4    # one demo worker's share
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from machine import describe  # noqa: E402

from mssr.config import load_config  # noqa: E402
from mssr.losses import answer_logits, per_sample_loss  # noqa: E402
from mssr.models import load_model, load_trainable_state_dict, trainable_state_dict  # noqa: E402
from mssr.optim import autocast_context, build_optimizer  # noqa: E402
from mssr.tasks import load_stream  # noqa: E402
from mssr.tokenize import PromptEncoder, collate, encoder_options  # noqa: E402

WARMUP_STEPS = 2


def matmul_peak(sizes: list[int], dtype: torch.dtype, repeats: int) -> dict:
    best = {"gflops": 0.0}
    for n in sizes:
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        torch.matmul(a, b)  # warm-up
        s = []
        for _ in range(repeats):
            t = time.perf_counter()
            torch.matmul(a, b)
            s.append(time.perf_counter() - t)
        gflops = 2 * n**3 / float(np.median(s)) / 1e9
        if gflops > best["gflops"]:
            best = {"gflops": gflops, "n": n, "median_s": float(np.median(s))}
    return best


def count_params(model) -> tuple[int, int]:
    n_base = n_lora = 0
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear):
            if "lora_" in name:
                n_lora += m.weight.numel()
            else:
                n_base += m.weight.numel()
    return n_base, n_lora


def make_batches(cfg, tok, n_batches: int, batch: int) -> list[dict]:
    tasks = load_stream(cfg.stream)
    enc = PromptEncoder(tok, **encoder_options(cfg.stream))
    out = []
    for i in range(n_batches):
        ex = tasks[i % len(tasks)].train
        start = (i // len(tasks)) * batch % max(1, len(ex) - batch)
        rows = enc.encode_many(
            [e.prompt for e in ex[start : start + batch]], [e.answer for e in ex[start : start + batch]]
        )
        keep = [j for j, r in enumerate(rows["input_ids"]) if len(r) <= cfg.stream.max_length]
        lens = [rows["prompt_len"][j] for j in keep]
        out.append({**collate([rows["input_ids"][j] for j in keep], lens, tok.pad_token_id), "prompt_lens": lens})
    return out


MODES = {  # name -> overrides of the config
    "fp32": ["model.dtype=float32", "train.autocast=none"],
    "bf16 autocast": ["model.dtype=float32", "train.autocast=bf16"],
    "bf16 base": ["model.dtype=bfloat16", "train.autocast=none"],
}


class Trainer:
    """One way of training: its own model (loaded in the mode's dtype), optimizer and record."""

    def __init__(self, cfg, init_state, total_steps: int):
        self.cfg = cfg
        self.model, self.tok = load_model(cfg.model, seed=cfg.seed)
        load_trainable_state_dict(self.model, init_state)
        self.model.train()
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.opt, self.sched = build_optimizer(self.model, cfg.train, total_steps=total_steps)
        self.secs, self.tokens, self.flops, self.losses = [], [], [], []

    def losses_of(self, batch) -> torch.Tensor:
        with autocast_context(self.cfg.train.autocast, "cpu"):
            logits, labels = answer_logits(self.model, batch, batch["prompt_lens"])
        return per_sample_loss(logits, labels)

    def step(self, b, flops_per_token) -> None:
        t = time.perf_counter()
        loss = self.losses_of(b).mean()
        loss.backward()
        if self.cfg.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.trainable, self.cfg.train.grad_clip)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        self.secs.append(time.perf_counter() - t)
        self.tokens.append(int(b["attention_mask"].sum()))
        self.flops.append(self.tokens[-1] * flops_per_token(b["input_ids"].shape[1]))
        self.losses.append(float(loss.detach()))

    def result(self, check) -> dict:
        s, tok, fl = (np.array(x[WARMUP_STEPS:], dtype=float) for x in (self.secs, self.tokens, self.flops))
        self.model.eval()
        with torch.no_grad():  # the trained adapter on a held-out batch
            final = float(self.losses_of(check).mean())
        return {
            "tokens_per_s": float(np.median(tok / s)),
            "tokens_per_s_p90": float(np.percentile(tok / s, 90)),
            "gflops": float(np.median(fl / s) / 1e9),
            "step_s": float(np.median(s)),
            "tokens_per_step": float(np.mean(tok)),
            "train_losses": self.losses,
            "final_check_loss": final,
        }


def _train_modes(cfgs: dict, init_state: dict, batches: list, check, peak: dict, flops_per_token):
    """Every way trained from the same adapter on the same batches, taking turns; their
    speed, share of the matmul peak, and losses against fp32's."""
    trainers = {mode: Trainer(c, init_state, len(batches)) for mode, c in cfgs.items()}
    with torch.no_grad():  # forward-only accuracy: same adapter, same batch
        per = {}
        for mode, t in trainers.items():
            t.model.eval()
            per[mode] = t.losses_of(check)
            t.model.train()
    fwd_diff = {mode: float((per["fp32"] - per[mode]).abs().mean()) for mode in MODES}
    modes = list(MODES)
    for i, b in enumerate(batches):  # the ways take turns, first one then the next
        for mode in modes[i % len(modes) :] + modes[: i % len(modes)]:
            trainers[mode].step(b, flops_per_token)
    train_res = {mode: t.result(check) for mode, t in trainers.items()}
    for mode in MODES:
        matmul = peak["fp32" if mode == "fp32" else "bf16"]
        train_res[mode]["fraction_of_peak"] = train_res[mode]["gflops"] / matmul["gflops"]
        train_res[mode]["speedup"] = train_res[mode]["tokens_per_s"] / train_res["fp32"]["tokens_per_s"]
        f32, other = train_res["fp32"]["final_check_loss"], train_res[mode]["final_check_loss"]
        train_res[mode]["final_loss_rel_diff"] = abs(other - f32) / abs(f32)
        train_res[mode]["forward_loss_abs_diff"] = fwd_diff[mode]
    return train_res, fwd_diff


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/compare.yaml")
    ap.add_argument("--steps", type=int, default=8, help="timed training steps, after 2 warm-up steps")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sizes", default="1024,2048,3072", help="matmul sizes tried for the peak")
    ap.add_argument("--repeats", type=int, default=5, help="matmul repetitions per size")
    ap.add_argument("--json", default="benchmarks/results/machine_limit.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    sizes = [int(s) for s in args.sizes.split(",")]
    peak = {
        "fp32": matmul_peak(sizes, torch.float32, args.repeats),
        "bf16": matmul_peak(sizes, torch.bfloat16, args.repeats),
    }

    cfgs = {mode: load_config(args.config, overrides) for mode, overrides in MODES.items()}
    cfg = cfgs["fp32"]
    model, tok = load_model(cfg.model, seed=cfg.seed)
    init_state = {k: v.clone() for k, v in trainable_state_dict(model).items()}  # on CPU it aliases the weights
    n_base, n_lora = count_params(model)
    mc = model.get_base_model().config
    head_dim = getattr(mc, "head_dim", None) or mc.hidden_size // mc.num_attention_heads
    layers, d_attn = mc.num_hidden_layers, mc.num_attention_heads * head_dim
    del model

    def flops_per_token(seq: int) -> float:
        return 4 * n_base + 6 * n_lora + 3 * (2 * 2 * layers * seq * d_attn)

    *batches, check = make_batches(cfg, tok, WARMUP_STEPS + args.steps + 1, args.batch)
    train_res, fwd_diff = _train_modes(cfgs, init_state, batches, check, peak, flops_per_token)
    shape = {"n_base": n_base, "n_lora": n_lora, "layers": layers, "d_attn": d_attn}
    _print_report(args, shape, peak, train_res, fwd_diff)
    _write_json(args, shape, peak, train_res)


def _print_report(args, shape: dict, peak: dict, train_res: dict, fwd_diff: dict) -> None:
    print(
        f"{describe()}, {args.threads} threads, {args.batch} rows a step; N_base {shape['n_base'] / 1e6:.1f}M, "
        f"N_lora {shape['n_lora'] / 1e6:.2f}M, {shape['layers']} layers, d_attn {shape['d_attn']}"
    )
    print(f"matmul peak: fp32 {peak['fp32']['gflops']:.0f} GFLOP/s, bf16 {peak['bf16']['gflops']:.0f} GFLOP/s")
    head = ("train tok/s", "GFLOP/s", "of peak", "step s", "vs fp32")
    print(f"  {'':14} " + " ".join(f"{h:>12}" for h in head) + "  held-out loss")
    for mode, r in train_res.items():
        print(
            f"  {mode:14} {r['tokens_per_s']:12.1f} {r['gflops']:12.1f} {r['fraction_of_peak']:12.1%} "
            f"{r['step_s']:12.2f} {r['speedup']:11.2f}x  {r['final_check_loss']:.4f} "
            f"({r['final_loss_rel_diff']:.2%} from fp32)"
        )
    print(
        "  forward loss |fp32 - mode| per sample, same adapter: "
        + ", ".join(f"{m} {d:.4f}" for m, d in fwd_diff.items() if m != "fp32")
    )


def _write_json(args, shape: dict, peak: dict, train_res: dict) -> None:
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"machine": describe(), "threads": args.threads, "batch": args.batch, "steps": args.steps}
    record |= {"warmup_steps": WARMUP_STEPS, **shape, "matmul_peak": peak, "train": train_res}
    out.write_text(json.dumps(record, indent=1))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
