"""How close LoRA training gets to the machine's limit: matmul peak vs achieved training FLOP/s.

1. Peak: ``torch.matmul`` of square n x n matrices (2*n^3 FLOP), fp32 and bf16, the best size of
   ``--sizes``, median of ``--repeats`` after a warm-up.
2. Training: a bare single-process LoRA step (no Ray) on the model and built-in stream of
   configs/compare.yaml, as ``pipelines/train_loop.py`` does it (forward under
   ``autocast_context``, ``per_sample_loss(...).mean()``, backward, grad clip, optimizer and
   schedule step, zero_grad), on batches of ``--batch`` real rows (batch i from task i mod T),
   once in fp32 and once with ``train.autocast=bf16``, both from the same initial adapter over
   the same batches: 2 warm-up steps, then ``--steps`` timed ones (median).

Model FLOPs per real (non-pad) token, counted from the model's modules:

    N_base = weights of every Linear actually multiplied (q,k,v,o,gate,up,down of each layer
             and lm_head; the input embedding is a lookup and is not counted)
    N_lora = weights of the LoRA A and B matrices
    attn   = 2*2*layers*seq*d_attn (QK^T and AV, seq = the batch's padded width)
    forward  = 2*N_base + 2*N_lora + attn
    backward = 2*N_base (activation gradients only: frozen weights get no weight gradient)
             + 4*N_lora (activation and weight gradients) + 2*attn
    per token = 4*N_base + 6*N_lora + 3*attn

Pad tokens are not counted, so the achieved figure is useful FLOP/s. Accuracy of bf16: the mean
absolute difference of the per-sample losses of one batch, fp32 vs bf16 autocast forward with the
same weights; and the relative difference of the fp32 mean loss on a held-out batch after the
same 2+steps training steps.

    .venv/bin/python benchmarks/machine_limit.py                          # 8 steps, batch 8, 2 threads
    .venv/bin/python benchmarks/machine_limit.py --steps 16 --threads 2 --json /tmp/ml.json
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
from mssr.losses import per_sample_loss  # noqa: E402
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
        out.append(
            collate([rows["input_ids"][j] for j in keep], [rows["prompt_len"][j] for j in keep], tok.pad_token_id)
        )
    return out


def train(model, cfg, init_state, batches, check, flops_per_token) -> dict:
    load_trainable_state_dict(model, init_state)
    torch.manual_seed(cfg.seed)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt, sched = build_optimizer(model, cfg.train, total_steps=len(batches))
    secs, tokens, flops, losses = [], [], [], []
    for b in batches:
        t = time.perf_counter()
        with autocast_context(cfg.train.autocast, "cpu"):
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        loss = per_sample_loss(logits, b["labels"]).mean()
        loss.backward()
        if cfg.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(trainable, cfg.train.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        secs.append(time.perf_counter() - t)
        tokens.append(int(b["attention_mask"].sum()))
        flops.append(tokens[-1] * flops_per_token(b["input_ids"].shape[1]))
        losses.append(float(loss.detach()))
    s, tok, fl = (np.array(x[WARMUP_STEPS:], dtype=float) for x in (secs, tokens, flops))
    with torch.no_grad():  # the trained adapter, judged in fp32 on a held-out batch
        final = float(
            per_sample_loss(
                model(input_ids=check["input_ids"], attention_mask=check["attention_mask"]).logits, check["labels"]
            ).mean()
        )
    return {
        "tokens_per_s": float(np.median(tok / s)),
        "tokens_per_s_p90": float(np.percentile(tok / s, 90)),
        "gflops": float(np.median(fl / s) / 1e9),
        "step_s": float(np.median(s)),
        "tokens_per_step": float(np.mean(tok)),
        "train_losses": losses,
        "final_check_loss": final,
    }


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

    cfgs = {
        "fp32": load_config(args.config, ["train.autocast=none"]),
        "bf16": load_config(args.config, ["train.autocast=bf16"]),
    }
    cfg = cfgs["fp32"]
    model, tok = load_model(cfg.model, seed=cfg.seed)
    init_state = {k: v.clone() for k, v in trainable_state_dict(model).items()}  # on CPU it aliases the weights
    n_base, n_lora = count_params(model)
    mc = model.get_base_model().config
    head_dim = getattr(mc, "head_dim", None) or mc.hidden_size // mc.num_attention_heads
    layers, d_attn = mc.num_hidden_layers, mc.num_attention_heads * head_dim

    def flops_per_token(seq: int) -> float:
        return 4 * n_base + 6 * n_lora + 3 * (2 * 2 * layers * seq * d_attn)

    *batches, check = make_batches(cfg, tok, WARMUP_STEPS + args.steps + 1, args.batch)
    model.eval()
    with torch.no_grad():  # forward-only accuracy: same weights, same batch
        per = {}
        for mode, c in cfgs.items():
            with autocast_context(c.train.autocast, "cpu"):
                logits = model(input_ids=check["input_ids"], attention_mask=check["attention_mask"]).logits
            per[mode] = per_sample_loss(logits, check["labels"])
    fwd_diff = float((per["fp32"] - per["bf16"]).abs().mean())
    train_res = {mode: train(model, c, init_state, batches, check, flops_per_token) for mode, c in cfgs.items()}
    for mode in cfgs:
        train_res[mode]["fraction_of_peak"] = train_res[mode]["gflops"] / peak[mode]["gflops"]
    speedup = train_res["bf16"]["tokens_per_s"] / train_res["fp32"]["tokens_per_s"]
    f32, b16 = train_res["fp32"]["final_check_loss"], train_res["bf16"]["final_check_loss"]
    rel_loss = abs(b16 - f32) / abs(f32)

    print(
        f"{describe()}, {args.threads} threads; N_base {n_base / 1e6:.1f}M, N_lora {n_lora / 1e6:.2f}M, "
        f"{layers} layers, d_attn {d_attn}"
    )
    print(f"  {'':6} {'matmul peak':>16} {'train tok/s':>12} {'train GFLOP/s':>14} {'of peak':>8} {'step s':>7}")
    for mode in cfgs:
        p, r = peak[mode], train_res[mode]
        print(
            f"  {mode:6} {p['gflops']:8.1f} GFLOP/s {r['tokens_per_s']:12.1f} {r['gflops']:14.1f} "
            f"{r['fraction_of_peak']:8.1%} {r['step_s']:7.2f}   (n={p['n']})"
        )
    print(
        f"  forward loss |fp32 - bf16| per sample: {fwd_diff:.4f} (mean loss {float(per['fp32'].mean()):.3f}); "
        f"held-out loss after {len(batches)} steps: fp32 {f32:.4f}, bf16 {b16:.4f} ({rel_loss:.2%} apart)"
    )
    use = "use train.autocast=bf16" if speedup > 1.05 and rel_loss < 0.02 else "keep train.autocast=none"
    print(f"bf16 autocast: {speedup:.2f}x the fp32 tokens/s, loss within {rel_loss:.1%}: {use} on this CPU")

    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "machine": describe(),
                "threads": args.threads,
                "batch": args.batch,
                "steps": args.steps,
                "warmup_steps": WARMUP_STEPS,
                "n_base": n_base,
                "n_lora": n_lora,
                "layers": layers,
                "d_attn": d_attn,
                "matmul_peak": peak,
                "train": train_res,
                "bf16_speedup": speedup,
                "forward_loss_abs_diff": fwd_diff,
                "final_loss_rel_diff": rel_loss,
                "recommendation": use,
            },
            indent=1,
        )
    )
    print(f"written to {out}")


if __name__ == "__main__":
    main()
