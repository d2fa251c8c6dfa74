"""The GPU check: the training step, replay planner, collectives, checkpoints and evaluation
that a Ray worker runs, on one device, without Ray, MLflow or a model download.

    python scripts/gpu_check.py                                   # CUDA: tiny and ~1B models, LoRA, full, QLoRA
    python scripts/gpu_check.py --device cpu --sizes tiny --steps 3 --test-rows 8    # what the tests run
    python scripts/gpu_check.py --tokenizer DIR --json gpu_check.json

For each model size and fine-tuning mode it builds the learner (``mssr.learner.Learner``, the
worker's own code) on a Llama with random weights, written once to a temporary folder with
the packaged SmolLM2 tokenizer (or ``--tokenizer DIR``) and loaded through ``model.name`` like
any local model, wraps it in DDP over a one-process group (NCCL on CUDA, gloo on the CPU),
and trains two synthetic tasks through the continual loop ``mssr run`` trains with
(``mssr.loop``, the planner in this process), the replay planner deciding replay and probes at
every step; every collective the loop uses runs through that group. Then it checks:

* every step's losses are finite, the planner's replayed or probed pool rows ran on the device;
* a checkpoint (``Learner.state_dict``, CPU tensors) loaded into a fresh learner takes the same
  next step (first size only: the check is about devices, not size);
* evaluation: forced exact match against generated (greedy) exact match on every test row,
  and bf16 autocast against fp32 (exact match and answer loss) on every test row;

and prints training tokens/s, model FLOP utilisation (MFU) and peak memory. MFU counts the
model FLOPs of the real (unpadded) tokens trained: 6N per token for full fine-tuning and 4N for
LoRA (no weight gradients for the frozen base), N the parameter count with the tied
embedding counted once (it is the output layer's matmul), plus attention's 12 x layers x width
x sequence length, against the GPU's dense bf16 peak (``--peak-tflops``; H100/H200 SXM known).

Exit status 1 when a check fails. Random weights: the exact-match figures say whether the
modes agree, not how good a model is; the step counts are kept small enough for the whole
check to finish within a few minutes on one H100/H200.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mssr.config import load_config  # noqa: E402
from mssr.distributed import all_gather_objects, rng_state, set_rng_state  # noqa: E402
from mssr.evaluation import evaluate_examples  # noqa: E402
from mssr.learner import Learner  # noqa: E402
from mssr.loop import ContinualLoop, ListFeed, NullSink, StepDone, TaskToTrain  # noqa: E402
from mssr.memory_service import LocalMemory  # noqa: E402
from mssr.models import DEFAULT_MODEL, resolve_model_path  # noqa: E402
from mssr.sample_ids import sample_id  # noqa: E402
from mssr.tasks import Example  # noqa: E402

# Llama shapes: "tiny" is the test model's, "1b" Llama-3.2-1B's body with the tokenizer's vocabulary
SIZES = {
    "tiny": dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
    ),
    "1b": dict(
        hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8
    ),
}
DENSE_BF16_PEAK_TFLOPS = {"H100": 989.4, "H200": 989.4}  # SXM parts, dense (no sparsity), vendor datasheets
LR = {"lora": 1e-3, "qlora": 1e-3, "full": 1e-4}  # full fine-tuning moves every weight: a smaller step
# MSSR replays from the second task's first steps; the accuracy trigger probes pool rows every
# 2 steps (its no-grad pass), so each kind of pool read runs on the device
STRATEGY = {"lora": "mssr", "qlora": "mssr", "full": "accuracy"}
WARMUP_STEPS = 2  # not timed: kernel selection, allocator growth


@dataclass
class CaseResult:
    size: str
    finetune: str
    params: int = 0
    trainable: int = 0
    steps: int = 0
    losses_first_last: tuple[float, float] = (math.nan, math.nan)
    replayed: int = 0
    probed: int = 0
    pool: int = 0
    train_tokens_per_s: float = 0.0
    mfu: float | None = None
    eval_rows_per_s: dict = field(default_factory=dict)  # forced / generate
    forced_vs_generate_agree: float = math.nan
    bf16_vs_fp32_agree: float = math.nan
    bf16_vs_fp32_loss_diff: dict = field(default_factory=dict)  # median / max, nats
    checkpoint_round_trip: str = "not run"
    peak_memory_gib: float | None = None
    seconds: float = 0.0
    failures: list = field(default_factory=list)


# -- the stream -------------------------------------------------------------------------
def synthetic_tasks(n_train: int, n_test: int, seed: int) -> list[tuple[str, list[Example], list[Example]]]:
    """Two tasks with short exact answers: adding two numbers, and reversing three words."""
    rng = np.random.default_rng(seed)
    words = ["red", "blue", "green", "cat", "dog", "sun", "moon", "tree", "river", "stone", "bird", "fish"]

    def add() -> Example:
        a, b = rng.integers(0, 50, 2)
        return Example(f"What is {a} plus {b}?", str(a + b))

    def reverse() -> Example:
        w = rng.choice(words, 3, replace=False)
        return Example(f"Reverse the words: {' '.join(w)}", " ".join(w[::-1]))

    return [
        (name, [make() for _ in range(n_train)], [make() for _ in range(n_test)])
        for name, make in (("add", add), ("reverse", reverse))
    ]


# -- models -----------------------------------------------------------------------------
def random_llama_folder(size: str, tokenizer_dir: str, out: Path, device: torch.device) -> tuple[Path, int]:
    """A Hugging Face folder holding a Llama of ``size`` with random weights (bf16) and the
    tokenizer; and its parameter count (the tied embedding once)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = out / f"llama-{size}"
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(vocab_size=len(tok), max_position_embeddings=2048, tie_word_embeddings=True, **SIZES[size])
    torch.manual_seed(0)
    with torch.device(device):  # initialised where it is fast to initialise
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    params = sum(p.numel() for p in model.parameters())
    del model
    return folder, params


def ddp_wrapper(device: torch.device):
    """What Ray Train's ``prepare_model`` does: the model on the device, in DDP."""
    from torch.nn.parallel import DistributedDataParallel

    def wrap(model: torch.nn.Module) -> torch.nn.Module:
        model = model.to(device)
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    return wrap


def model_flops_per_token(params: int, size: str, finetune: str, mean_length: float) -> float:
    attention = 12 * SIZES[size]["num_hidden_layers"] * SIZES[size]["hidden_size"] * mean_length
    return (6 if finetune == "full" else 4) * params + attention


def peak_tflops(device: torch.device, given: float | None) -> float | None:
    if given or device.type != "cuda":
        return given
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in DENSE_BF16_PEAK_TFLOPS.items() if k in name), None)


# -- one case ---------------------------------------------------------------------------
def make_learner(folder: Path, finetune: str, args, device: torch.device, total_steps: int) -> Learner:
    cfg = load_config(
        ROOT / "configs" / "tiny.yaml",
        [
            f"model.name={folder}",
            f"model.finetune={finetune}",
            "model.dtype=float32",  # fp32 weights, bf16 autocast matmuls (train.autocast auto on CUDA)
            "train.num_workers=1",
            f"train.batch_size={args.batch_size}",
            f"train.lr={LR[finetune]}",
            f"eval.batch_size={args.batch_size}",
            "eval.max_new_tokens=8",
            f"replay.strategy={STRATEGY[finetune]}",
            "replay.accuracy.every=2",
            "replay.pool_per_task=16",
            "replay.samples_per_event=4",
            "replay.budget=8",  # two events in the second task: the paced schedule spends it
            "train.checkpoint_every=0",  # checked on its own (check_checkpoint), not timed with the steps
        ],
    )
    return Learner(cfg, total_steps, device, wrap_model=ddp_wrapper(device))


def encode(learner: Learner, examples: list[Example]) -> list[tuple[list[int], int]]:
    enc = learner.encoder.encode_many([e.prompt for e in examples], [e.answer for e in examples])
    return list(zip(enc["input_ids"], enc["prompt_len"]))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_stream(learner: Learner, tasks, args, device: torch.device, result: CaseResult) -> list[float]:
    """Both tasks through the continual loop (``mssr.loop``, as ``mssr run`` trains them), replay
    decided by the planner every step; returns the timed steps' seconds and fills the result's
    counters. Every step's loss must be finite."""
    batch, cfg = args.batch_size, learner.cfg
    memory = LocalMemory(cfg.replay, seed=cfg.seed, total_new_samples=2 * args.steps * batch, replay_steps=args.steps)
    rows = [encode(learner, train)[: args.steps * batch] for _, train, _ in tasks]
    feed = ListFeed([[(sample_id(k, i), *row) for i, row in enumerate(r)] for k, r in enumerate(rows)], batch)
    specs = [TaskToTrain(name, "exact_match", args.steps, []) for name, _, _ in tasks]
    timed, tokens, losses = [], 0, []

    def on_step(done: StepDone) -> None:
        nonlocal tokens
        synchronize(device)
        if result.steps >= WARMUP_STEPS:
            timed.append(done.seconds)
            tokens += done.new_tokens + done.replay_tokens
        result.steps += 1
        if not np.isfinite(done.loss):
            result.failures.append(f"task {done.task_index} step {done.step}: non-finite loss")
        losses.append(done.loss)

    loop = ContinualLoop(
        cfg, specs, 2 * args.steps, learner, memory, feed, NullSink(),
        needs_update_norm=True, needs_reference=memory.needs_reference, evaluate=False, on_step=on_step,
    )  # fmt: skip
    loop.restore(None)
    loop.run()
    planner = memory.planner
    result.losses_first_last = (round(losses[0], 4), round(losses[-1], 4))
    result.replayed, result.probed, result.pool = planner.replayed, planner.probed, len(planner.memory)
    if planner.replayed + planner.probed == 0:
        result.failures.append("the planner neither replayed nor probed during the second task")
    result.train_tokens_per_s = round(tokens / max(sum(timed), 1e-9), 1)
    return timed


def check_checkpoint(learner: Learner, folder: Path, finetune: str, args, device, tasks, result: CaseResult):
    """A fresh learner loaded from the checkpoint tensors takes the same next step."""
    trainable, trainer_state = learner.state_dict()
    (state,) = all_gather_objects(rng_state(device))  # what a checkpoint keeps of every rank
    other = make_learner(folder, finetune, args, device, total_steps=2 * args.steps)
    other.load_state_dict(trainable, trainer_state)
    rows = encode(learner, tasks[1][1][: args.batch_size])
    set_rng_state(state, device)
    a = learner.train_step(rows).losses
    set_rng_state(state, device)
    b = other.train_step(rows).losses
    same = np.allclose(a, b, rtol=1e-3, atol=1e-4)
    result.checkpoint_round_trip = "same next step" if same else f"differs: max |d loss| {np.abs(a - b).max():.2e}"
    if not same:
        result.failures.append("checkpoint round trip: " + result.checkpoint_round_trip)
    del other


def check_evaluation(learner: Learner, tasks, device: torch.device, result: CaseResult) -> None:
    """Forced vs generated exact match, bf16 vs fp32, on every test row of both tasks."""
    cfg = learner.cfg.eval
    test = [e for _, _, t in tasks for e in t]

    def run(mode: str, precision: str):
        autocast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else None
        synchronize(device)
        started = time.perf_counter()
        out = evaluate_examples(
            learner.core, learner.encoder, test, "exact_match", mode, cfg.max_new_tokens, cfg.batch_size, autocast
        )
        synchronize(device)
        return out, time.perf_counter() - started

    forced_bf16, t_forced = run("forced", "bf16")
    generated, t_generate = run("generate", "bf16")  # forced pass + greedy decoding
    forced_fp32, _ = run("forced", "fp32")
    result.eval_rows_per_s = {"forced": round(len(test) / t_forced, 1), "generate": round(len(test) / t_generate, 1)}
    result.forced_vs_generate_agree = float(np.mean(np.equal(forced_bf16.scores, generated.scores)))
    result.bf16_vs_fp32_agree = float(np.mean(np.equal(forced_bf16.scores, forced_fp32.scores)))
    diff = np.abs(np.asarray(forced_bf16.losses) - np.asarray(forced_fp32.losses))
    result.bf16_vs_fp32_loss_diff = {"median": round(float(np.median(diff)), 4), "max": round(float(diff.max()), 4)}
    for name, values in (("forced", forced_bf16.losses), ("fp32", forced_fp32.losses)):
        if not np.isfinite(values).all():
            result.failures.append(f"evaluation ({name}): non-finite answer loss")


def run_case(size: str, finetune: str, folder: Path, params: int, tasks, args, device: torch.device) -> CaseResult:
    result = CaseResult(size, finetune, params=params)
    started = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        learner = make_learner(folder, finetune, args, device, total_steps=2 * args.steps)
        result.trainable = sum(p.numel() for p in learner.trainable)
        timed = train_stream(learner, tasks, args, device, result)
        lengths = [len(r[0]) for r in encode(learner, tasks[0][1][: args.batch_size])]
        peak = peak_tflops(device, args.peak_tflops)
        if peak and timed:
            flops = model_flops_per_token(params, size, finetune, float(np.mean(lengths))) * result.train_tokens_per_s
            result.mfu = round(flops / (peak * 1e12), 4)
        if size == args.sizes[0]:
            check_checkpoint(learner, folder, finetune, args, device, tasks, result)
        check_evaluation(learner, tasks, device, result)
        del learner
    except Exception as e:  # a device mix-up shows up as an exception: report it, go on with the next case
        result.failures.append(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    if device.type == "cuda":
        result.peak_memory_gib = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        torch.cuda.empty_cache()
    result.seconds = round(time.perf_counter() - started, 1)
    return result


# -- the command ------------------------------------------------------------------------
def machine(device: torch.device) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "device": str(device)}
    for name in ("transformers", "peft", "bitsandbytes"):
        with contextlib.suppress(ImportError):
            info[name] = importlib.import_module(name).__version__
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    else:
        info["cpu"] = platform.processor() or platform.machine()
    return info


def start_process_group(device: torch.device, folder: Path) -> None:
    """World size 1: NCCL on CUDA, gloo on the CPU (the backends Ray Train picks)."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"file://{folder / 'rendezvous'}", rank=0, world_size=1)


def parse_args(argv=None) -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cuda" if cuda else "cpu", help="cuda or cpu (default: cuda when present)")
    p.add_argument("--sizes", default="tiny,1b" if cuda else "tiny", help=f"of {sorted(SIZES)}")
    p.add_argument("--finetune", default=None, help="lora,full[,qlora] (default: qlora too where bitsandbytes runs)")
    p.add_argument("--steps", type=int, default=8, help="optimizer steps per task (default 8)")
    p.add_argument("--batch-size", type=int, default=16, help="new rows per step (default 16)")
    p.add_argument("--test-rows", type=int, default=64, help="test rows per task (default 64)")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the packaged SmolLM2's)")
    p.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense bf16 peak, for MFU")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    args.sizes = args.sizes.split(",")
    if unknown := [s for s in args.sizes if s not in SIZES]:
        p.error(f"--sizes: unknown {unknown}; expected some of {sorted(SIZES)}")
    if args.finetune is None:
        from mssr.models import qlora_problem

        args.finetune = "lora,full" + ("" if args.device == "cpu" or qlora_problem() else ",qlora")
    args.finetune = args.finetune.split(",")
    return args


def print_table(results: list[CaseResult]) -> None:
    print(f"{'case':<12} {'train tok/s':>11} {'MFU':>6} {'peak GiB':>8} {'forced/gen rows/s':>18} "
          f"{'forced=gen':>10} {'bf16=fp32':>9} {'|dloss| med/max':>15} {'s':>6}  result")  # fmt: skip
    for r in results:
        mfu = f"{r.mfu:.1%}" if r.mfu is not None else "-"
        mem = f"{r.peak_memory_gib:.1f}" if r.peak_memory_gib is not None else "-"
        rows = f"{r.eval_rows_per_s.get('forced', 0):.0f}/{r.eval_rows_per_s.get('generate', 0):.0f}"
        diff = r.bf16_vs_fp32_loss_diff
        loss = f"{diff.get('median', math.nan):.3f}/{diff.get('max', math.nan):.3f}"
        verdict = "ok" if not r.failures else "FAILED: " + "; ".join(r.failures)
        print(
            f"{r.size + ' ' + r.finetune:<12} {r.train_tokens_per_s:>11.0f} {mfu:>6} {mem:>8} {rows:>18} "
            f"{r.forced_vs_generate_agree:>10.1%} {r.bf16_vs_fp32_agree:>9.1%} {loss:>15} {r.seconds:>6.0f}  {verdict}"
        )


def quiet() -> None:
    """Progress bars and one deprecation notice of peft's are all the libraries would add."""
    import transformers

    from pipelines.console import quiet_library_warnings

    transformers.utils.logging.disable_progress_bar()
    quiet_library_warnings()


def main(argv=None) -> int:
    args = parse_args(argv)
    quiet()
    device = torch.device(args.device, 0) if args.device == "cuda" else torch.device("cpu")
    info = machine(device)
    print("gpu_check on " + ", ".join(f"{k} {v}" for k, v in info.items()), flush=True)
    tokenizer = args.tokenizer or resolve_model_path(DEFAULT_MODEL)
    tasks = synthetic_tasks(args.steps * args.batch_size, args.test_rows, seed=0)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        start_process_group(device, Path(tmp))
        try:
            for size in args.sizes:
                folder, params = random_llama_folder(size, tokenizer, Path(tmp), device)
                for finetune in args.finetune:
                    results.append(run_case(size, finetune, folder, params, tasks, args, device))
                    r = results[-1]
                    print(f"  {size} {finetune}: {r.seconds:.0f}s, {r.failures or 'ok'}", flush=True)
        finally:
            dist.destroy_process_group()
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "results": [asdict(r) for r in results]}, indent=1))
    return 1 if any(r.failures for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
