"""Screen reasoning-gym tasks for the built-in stream: score each before and after training it alone.

Uses the project's own prompt encoding (chat template, empty system prompt), batching, loss
and forced exact match, so the numbers match what a real MSSR run sees. Per task:

* data: ``create_dataset(name, size=1000, seed=7, **settings)``, distinct prompts only (first
  occurrence); the first 64 are the test set, the next 256 the training set;
* forced exact match (``answer_reproduced``: greedy decoding would output exactly the answer and
  end-of-sequence) and mean answer loss (``per_sample_loss``) on the 64 test prompts, before and
  after 32 LoRA steps (r 16, alpha 32, all linear projections; batch 8; AdamW lr 1e-3; grad clip
  1.0) on that task alone;
* bf16 autocast on the CPU, one thread, torch seed 0.

Prints one line per task and merges the results (by task key) into
``benchmarks/results/screen_tasks.json``. About 1.5-3 minutes per task on one core.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/screen_tasks.py                # all candidates
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/screen_tasks.py gcd lcm        # some (keys below)
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/screen_tasks.py --list         # show the keys

"majority_share" is the share of test prompts whose answer is the most common one: a model
that always gives that answer scores it, so a task is only learned when em_after is well above.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the mssr package, when run as a script from anywhere
sys.path.insert(0, str(HERE))  # machine.py

import torch  # noqa: E402

from mssr.builtin_stream import BUILTIN_TASKS  # noqa: E402
from mssr.losses import answer_reproduced, per_sample_loss  # noqa: E402
from mssr.models import prepare_default_model  # noqa: E402
from mssr.tokenize import PromptEncoder, collate  # noqa: E402

SIZE, DATA_SEED, N_TEST, N_TRAIN = 1000, 7, 64, 256
STEPS, BATCH, LR, EVAL_BATCH = 32, 8, 1e-3, 32
RESULTS = HERE / "results" / "screen_tasks.json"

# key -> (reasoning-gym dataset, settings). The existing built-in tasks come first (same
# settings as the stream, as a reference), then the candidates. Looked at and left out before
# training (mean tokens with the chat template / distinct prompts of 1000 generated):
# number_sorting 3 numbers (197 tokens, 19-token answer), power_function (13-token float answer),
# time_intervals (9-token answers), letter_jumble (122 tokens), self_reference (164),
# propositional_logic (140 tokens, 6 distinct), binary_alternation n 4-6 (134 tokens, 125 distinct),
# bitwise_arithmetic difficulty 1 (hex arithmetic, 7-token answers), coin_flip (18 distinct),
# dice 2 dice (14 distinct), caesar_cipher 1 word (58 distinct), basic_arithmetic 1-digit "*"
# (121 distinct), string_manipulation (needs >= 3 rules), knights_knaves 2 people (fails to
# generate with depth/width 1), products 1-2 digits (multi-digit products).
CANDIDATES: dict[str, tuple[str, dict]] = {key: (ds, dict(s)) for key, (ds, s) in BUILTIN_TASKS.items()}
CANDIDATES.update(
    {
        "count_bits": ("count_bits", {"max_n": 1023}),  # "How many 1 bits ... 332?" -> 4
        # min_base == max_base == 2 never finishes generating (it needs two different bases)
        "base_conversion": ("base_conversion", {"min_base": 2, "max_base": 16, "max_value": 63}),
        "letter_counting": ("letter_counting", {"min_words": 3, "max_words": 4}),
        "spell_backward": ("spell_backward", {"min_word_len": 3, "max_word_len": 5}),
        "word_sorting": ("word_sorting", {"min_words": 3, "max_words": 3, "min_word_length": 3, "max_word_length": 5}),
        "lcm": ("lcm", {"max_value": 30}),  # max_value 20 gives only 295 distinct prompts
        "leg_counting": ("leg_counting", {"min_animals": 1, "max_animals": 2, "max_instances": 3}),
        "decimal_chain_sum": (
            "decimal_chain_sum",
            {"min_terms": 2, "max_terms": 2, "max_digits": 1, "max_decimal_places": 1},
        ),
        "simple_equations": ("simple_equations", {"min_terms": 2, "max_terms": 2, "max_value": 10}),
        "fraction_simplification": (
            "fraction_simplification",
            {"max_value": 20, "max_factor": 5, "styles": ("plain",)},
        ),
        "weekday_of_date": ("calendar_arithmetic", {"tasks": ["weekday_of_date"]}),  # -> "Sunday"
        "weekday_offset": ("calendar_arithmetic", {"tasks": ["weekday_offset"]}),
        "word_sequence_reversal": ("word_sequence_reversal", {"min_words": 3, "max_words": 3}),
        "count_primes": ("count_primes", {"max_n": 50}),
        "prime_factorization": ("prime_factorization", {"max_value": 500}),  # -> "2 × 59"
        "color_cube_rotation": ("color_cube_rotation", {"max_rotations": 1}),
        "number_format": ("number_format", {"min_num_candidates": 2, "max_num_candidates": 2, "max_n": 10000}),
        # second round: True/False, list and letter-string answers, and easier variants of the above
        "isomorphic_strings": ("isomorphic_strings", {"min_string_length": 2, "max_string_length": 4}),
        "ransom_note": ("ransom_note", {"max_note_length": 3, "min_magazine_length": 2, "max_magazine_length": 6}),
        "number_sequence": (
            "number_sequence",
            {"min_terms": 4, "max_terms": 4, "min_value": 0, "max_value": 20, "max_complexity": 1},
        ),  # "5, 3, 1, -1, ?" -> -3
        "number_filtering": (
            "number_filtering",
            {"min_numbers": 3, "max_numbers": 3, "max_decimals": 0, "min_value": 0, "max_value": 99},
        ),  # -> "['94', '81']"
        "palindrome_generation": ("palindrome_generation", {"min_length": 3, "max_length": 3}),  # -> "ymy"
        "simple_equations_add": (
            "simple_equations",
            {"min_terms": 2, "max_terms": 2, "max_value": 10, "operators": ("+", "-"), "operators_weights": [0.5, 0.5]},
        ),
        "leg_counting_2x1": ("leg_counting", {"min_animals": 2, "max_animals": 2, "max_instances": 1}),
        "spell_backward_3": ("spell_backward", {"min_word_len": 3, "max_word_len": 3}),
        "word_sorting_2": (
            "word_sorting",
            {"min_words": 2, "max_words": 2, "min_word_length": 3, "max_word_length": 5},
        ),
        "subtraction": (
            "basic_arithmetic",
            {
                "min_terms": 2,
                "max_terms": 2,
                "max_digits": 2,
                "operators": ("-",),
                "allow_parentheses": False,
                "allow_negation": False,
            },
        ),  # -> "-4"
        # third round: a name, a 2x2 matrix, and easier variants of near misses
        "needle_haystack": ("needle_haystack", {"min_num_statements": 2, "max_num_statements": 3}),  # -> "Dan"
        "rotate_matrix": (
            "rotate_matrix",
            {"min_n": 2, "max_n": 2, "min_rotations": 1, "max_rotations": 1},
        ),  # -> "0 2\n1 6"
        "simple_geometry": ("simple_geometry", {"min_sides": 3, "max_sides": 3}),  # third angle of a triangle
        "number_sequence_5": (
            "number_sequence",
            {"min_terms": 5, "max_terms": 5, "min_value": 0, "max_value": 20, "max_complexity": 1},
        ),
        "count_primes_30": ("count_primes", {"max_n": 30}),
        "isomorphic_strings_35": ("isomorphic_strings", {"min_string_length": 3, "max_string_length": 5}),
    }
)


def load_data(dataset: str, settings: dict) -> list[dict]:
    """Distinct prompts (first occurrence), in generation order, as {"prompt", "answer"}."""
    import reasoning_gym

    first: dict[str, str] = {}
    for e in reasoning_gym.create_dataset(dataset, size=SIZE, seed=DATA_SEED, **settings):
        first.setdefault(e["question"], str(e["answer"]))
    return [{"prompt": q, "answer": a} for q, a in first.items()]


def majority_share(test: list[dict]) -> float:
    """What always giving the most common test answer would score (a floor for "learned")."""
    return collections.Counter(r["answer"] for r in test).most_common(1)[0][1] / len(test)


def batches(encoder, rows, size, pad_id):
    for i in range(0, len(rows), size):
        part = rows[i : i + size]
        enc = encoder.encode_many([r["prompt"] for r in part], [r["answer"] for r in part])
        yield collate(enc["input_ids"], enc["prompt_len"], pad_id)


@torch.no_grad()
def evaluate(model, encoder, rows, pad_id) -> tuple[float, float]:
    """(forced exact match, mean answer loss) over ``rows``."""
    model.eval()
    hits, losses = [], []
    for b in batches(encoder, rows, EVAL_BATCH, pad_id):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        hits.append(answer_reproduced(logits, b["labels"]).float())
        losses.append(per_sample_loss(logits, b["labels"]).float())
    return torch.cat(hits).mean().item(), torch.cat(losses).mean().item()


def train(model, encoder, rows, pad_id) -> float:
    """STEPS optimizer steps of BATCH rows, in order (cycling if there are too few rows)."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR)
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    for s in range(STEPS):
        part = [rows[(s * BATCH + i) % len(rows)] for i in range(BATCH)]
        b = next(batches(encoder, part, BATCH, pad_id))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        loss = per_sample_loss(logits, b["labels"]).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return loss.item()


def screen(key: str, tok, model_path: str) -> dict:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    dataset, settings = CANDIDATES[key]
    encoder = PromptEncoder(tok, prompt_format="chat", system_prompt="")
    rows = load_data(dataset, settings)
    test, train_rows = rows[:N_TEST], rows[N_TEST : N_TEST + N_TRAIN]
    enc = encoder.encode_many([r["prompt"] for r in test + train_rows], [r["answer"] for r in test + train_rows])
    lens = [len(r) for r in enc["input_ids"]]
    ans = [len(r) - p for r, p in zip(enc["input_ids"], enc["prompt_len"])]

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    model = get_peft_model(
        model,
        LoraConfig(
            r=16,
            lora_alpha=32,
            task_type="CAUSAL_LM",
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        ),
    )
    t = time.time()
    em0, loss0 = evaluate(model, encoder, test, tok.pad_token_id)
    eval_s = time.time() - t
    t = time.time()
    last = train(model, encoder, train_rows, tok.pad_token_id)
    train_s = time.time() - t
    em1, loss1 = evaluate(model, encoder, test, tok.pad_token_id)
    q = " ".join(test[0]["prompt"].split())
    return {
        "task": key,
        "dataset": dataset,
        "settings": settings,
        "mean_tokens": round(sum(lens) / len(lens), 1),
        "max_tokens": max(lens),
        "mean_answer_tokens": round(sum(ans) / len(ans), 2),
        "distinct_prompts": len(rows),
        "enough_prompts": len(rows) >= N_TEST + N_TRAIN,
        "majority_share": round(majority_share(test), 4),
        "em_before": round(em0, 4),
        "em_after": round(em1, 4),
        "loss_before": round(loss0, 4),
        "loss_after": round(loss1, 4),
        "last_train_loss": round(last, 4),
        "steps": STEPS,
        "batch": BATCH,
        "train_rows": len(train_rows),
        "test_rows": len(test),
        "train_s": round(train_s, 1),
        "eval_s": round(eval_s, 1),
        "example": {"question": q[:80] + ("..." if len(q) > 80 else ""), "answer": test[0]["answer"]},
    }


def line(r: dict) -> str:
    return (
        f"{r['task']:24s} {json.dumps(r['settings'])} tok={r['mean_tokens']:.0f} ans_tok={r['mean_answer_tokens']:.1f} "
        f"distinct={r['distinct_prompts']}{'' if r['enough_prompts'] else ' (TOO FEW)'} "
        f"EM {r['em_before']:.2f}->{r['em_after']:.2f} (majority {r['majority_share']:.2f}) "
        f"loss {r['loss_before']:.2f}->{r['loss_after']:.2f} "
        f"train {r['train_s']:.0f}s ex={r['example']['question']!r} -> {r['example']['answer']!r}"
    )


def main(argv: list[str]) -> None:
    if "--list" in argv:
        for key, (ds, s) in CANDIDATES.items():
            print(f"{key:24s} {ds} {json.dumps(s)}")
        return
    if "--backfill" in argv:  # add data-only fields to results written before they existed
        old = json.loads(RESULTS.read_text())
        for o in old:
            if "majority_share" not in o and o["task"] in CANDIDATES:
                o["majority_share"] = round(majority_share(load_data(*CANDIDATES[o["task"]])[:N_TEST]), 4)
        RESULTS.write_text(json.dumps(old, indent=1) + "\n")
        return
    keys = argv or list(CANDIDATES)
    unknown = [k for k in keys if k not in CANDIDATES]
    if unknown:
        sys.exit(f"unknown task keys: {unknown} (see --list)")
    from machine import describe
    from transformers import AutoTokenizer

    torch.set_num_threads(1)
    machine = describe()
    path = str(prepare_default_model())
    tok = AutoTokenizer.from_pretrained(path)
    print(f"# {machine}; {STEPS} steps x batch {BATCH}, lr {LR}, {N_TEST} test prompts", flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    for key in keys:
        try:
            r = screen(key, tok, path)
        except Exception as e:  # a bad setting must not lose the other tasks' results
            print(f"{key:24s} FAILED: {type(e).__name__}: {e}", flush=True)
            continue
        r["machine"] = machine
        print(line(r), flush=True)
        old = json.loads(RESULTS.read_text()) if RESULTS.is_file() else []
        old = [o for o in old if o.get("task") != key] + [r]
        RESULTS.write_text(json.dumps(old, indent=1) + "\n")
    print(f"# total {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
