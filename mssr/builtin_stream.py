"""The built-in task streams, generated offline with ``reasoning-gym`` (fixed seed).

``reasoning-gym`` (the demo's): five short reasoning tasks, each with its own answer format,
picked so that on SmolLM2-135M-Instruct (measured, see README): scores before training are
near zero, each task is learned within the demo's budget, and sequential fine-tuning
forgets earlier tasks. ``reasoning-gym-long``: those five, then six more screened the same
way (``benchmarks/screen_tasks.py``: 32 LoRA steps on each task alone, forced exact match on
64 test prompts, well above the share of the most common answer), neighbours never sharing
an answer format: eleven tasks, as many as the sequences MSSR was published on.

Files are written once per (data_seed, sizes, split) into ``$MSSR_CACHE/streams/`` as
TRACE-style JSONL and then loaded like any user stream. A task's rows are generated with
``data_seed`` plus its index in the built-in list, whatever the training order
(``stream.order_seed``), so runs in different orders share every task's rows.
``stream.split`` (``mssr/splits.py``) picks the part of each task's prompts: ``all`` keeps
the files of before (same folder, same bytes), ``tune`` and ``eval`` get folders of their own.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

from mssr.config import TaskSpec
from mssr.errors import ConfigError, DataError
from mssr.splits import normalise_prompt, prompt_part
from mssr.tasks import ordered

# name -> reasoning-gym dataset and its difficulty settings (kept small: a 135M model on a
# CPU has a few dozen optimizer steps per task)
BUILTIN_TASKS: dict[str, tuple[str, dict]] = {
    "chain_sum": ("chain_sum", {"min_terms": 2, "max_terms": 2, "max_digits": 1}),  # "4 + 7 =" -> 11
    "family_relationships": ("family_relationships", {"max_family_size": 4}),  # -> "mother-in-law"
    "gcd": ("gcd", {"max_value": 30}),  # GCD of two numbers <= 30
    "syllogism": ("syllogism", {}),  # -> "Yes" / "No"
    "aiw": ("aiw", {}),  # "Alice has 3 sisters and 2 brothers. How many sisters does her brother have?"
    # the long stream's six more (after the screen: score after 32 steps on the task alone)
    "word_sequence_reversal": ("word_sequence_reversal", {"min_words": 3, "max_words": 3}),  # "c, b, a" (0.97)
    "number_format": (
        "number_format",
        {"min_num_candidates": 2, "max_num_candidates": 2, "max_n": 10000},
    ),  # the larger of two numbers, "9530.788" (0.72)
    "needle_haystack": ("needle_haystack", {"min_num_statements": 2, "max_num_statements": 3}),  # a name (0.94)
    "rotate_matrix": (
        "rotate_matrix",
        {"min_n": 2, "max_n": 2, "min_rotations": 1, "max_rotations": 1},
    ),  # a 2x2 matrix "0 2\n1 6" (0.95)
    "palindrome_generation": ("palindrome_generation", {"min_length": 3, "max_length": 3}),  # "ymy" (0.59)
    "decimal_chain_sum": (
        "decimal_chain_sum",
        {"min_terms": 2, "max_terms": 2, "max_digits": 1, "max_decimal_places": 1},
    ),  # "6.7" (0.48)
}
_FIVE = ["chain_sum", "family_relationships", "gcd", "syllogism", "aiw"]
BUILTIN_STREAMS = {
    "reasoning-gym": _FIVE,
    "reasoning-gym-long": _FIVE
    + [
        "word_sequence_reversal",
        "number_format",
        "needle_haystack",
        "rotate_matrix",
        "palindrome_generation",
        "decimal_chain_sum",
    ],
}


def _generate(dataset: str, settings: dict, size: int, seed: int) -> list[dict]:
    import reasoning_gym

    ds = reasoning_gym.create_dataset(dataset, size=size, seed=seed, **settings)
    return [{"prompt": e["question"], "answer": str(e["answer"])} for e in ds]


# candidates generated per wanted row: "all" keeps today's 2 (its files must stay byte-identical,
# so existing results reproduce); "tune" and "eval" keep about half the prompts, so 4x that
CANDIDATES = {"all": 2, "tune": 8, "eval": 8}


def select_rows(rows: list[dict], split: str, n_train: int, n_test: int) -> tuple[list[dict], list[dict]]:
    """(test rows, train rows) of one task from its generated candidates, under ``stream.split``.

    ``all``: the distinct prompts in generation order, the first ``n_test`` for test, the next
    ``n_train`` for train. ``tune``: the same over the distinct prompts of the tune part only.
    ``eval``: test rows the first ``n_test`` distinct prompts of the eval part, train rows the
    first ``n_train`` of the other distinct prompts (either part, never a test prompt). A task
    with few distinct prompts yields fewer rows; ``tune`` and ``eval`` compare prompts normalised.
    """
    if split == "all":
        first: dict[str, dict] = {}
        for r in rows:
            first.setdefault(r["prompt"], r)
        unique = list(first.values())
        return unique[:n_test], unique[n_test : n_test + n_train]
    distinct: dict[str, dict] = {}
    for r in rows:
        distinct.setdefault(normalise_prompt(r["prompt"]), r)
    if split == "tune":
        pool = [r for r in distinct.values() if prompt_part(r["prompt"]) == "tune"]
        return pool[:n_test], pool[n_test : n_test + n_train]
    test = [r for r in distinct.values() if prompt_part(r["prompt"]) == "eval"][:n_test]
    held = {normalise_prompt(r["prompt"]) for r in test}
    return test, [r for key, r in distinct.items() if key not in held][:n_train]


def builtin_task_specs(stream_cfg, cache: Optional[Path] = None) -> list[TaskSpec]:
    """Generate (once) and describe the built-in stream's tasks as ordinary task files, in
    training order (``stream.order_seed``). A task's rows depend on its place in the built-in
    list, never on the training order: every order shares every task's rows."""
    from mssr.models import cache_dir

    if stream_cfg.builtin not in BUILTIN_STREAMS:
        raise ConfigError(
            f"stream.builtin: unknown built-in stream {stream_cfg.builtin!r} (known: {', '.join(BUILTIN_STREAMS)})"
        )
    n_train, n_test, seed = stream_cfg.train_size, stream_cfg.test_size, stream_cfg.data_seed
    split = stream_cfg.split
    # bump the version whenever the generation below changes, so stale files are not reused
    folder = f"{stream_cfg.builtin}-v2-seed{seed}-{n_train}-{n_test}" + ("" if split == "all" else f"-{split}")
    root = (cache or cache_dir()) / "streams" / folder
    specs = []
    for k, name in enumerate(BUILTIN_STREAMS[stream_cfg.builtin]):
        dataset, settings = BUILTIN_TASKS[name]
        train, test = root / f"{name}.train.jsonl", root / f"{name}.test.jsonl"
        if not (train.is_file() and test.is_file()):
            # oversample, then keep distinct prompts only, so no test prompt is also a train prompt;
            # a task with few distinct prompts (chain_sum has ~200) yields fewer train rows
            rows = _generate(dataset, settings, CANDIDATES[split] * (n_train + n_test), seed + k)
            test_rows, train_rows = select_rows(rows, split, n_train, n_test)
            for kind, part in (("test", test_rows), ("train", train_rows)):
                if not part:
                    raise DataError(
                        f"built-in task {name!r}: no {kind} rows left in stream.split={split} "
                        f"(of {len(rows)} generated rows); lower stream.test_size or use stream.split=all"
                    )
            root.mkdir(parents=True, exist_ok=True)
            for path, part in ((test, test_rows), (train, train_rows)):
                tmp = path.with_suffix(f".tmp{os.getpid()}")
                tmp.write_text("".join(json.dumps(r) + "\n" for r in part), encoding="utf-8")
                tmp.replace(path)
        specs.append(TaskSpec(name=name, train=str(train), test=str(test), scorer="exact_match"))
    return ordered(specs, stream_cfg.order_seed)
