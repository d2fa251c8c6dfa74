"""A split of each task's prompt space into a tune part and an eval part, by a hash of the prompt.

Different data seeds do not make different prompts on a task with few distinct prompts
(chain_sum has about 200), so a sweep on another data seed still trains and tests on prompts
that a later comparison evaluates on. The split here depends on the prompt text alone, the
same for every data seed, stream, order and machine: a sweep runs on ``stream.split=tune``
(every row from the tune part), a comparison on ``stream.split=eval`` (test rows from the eval
part only), and no evaluation prompt was ever seen by the sweep.

    prompt_part("4 + 7 =")                      # "tune" or "eval", fixed by the text
    overlap(tune_tasks, eval_tasks)             # {"chain_sum": 0, ...}
    check_disjoint(best_params["tuned_on"], cfg.stream)   # ConfigError when they share a prompt
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Literal, Optional

from mssr.errors import ConfigError, DataError

# Half and half: a task with few distinct prompts (chain_sum: about 200) must keep enough of
# them on both sides, for a sweep's train and test rows on one side and a comparison's test
# rows on the other; a smaller tune part would leave chain_sum's sweep only a few dozen.
TUNE_FRACTION = 0.5

Part = Literal["tune", "eval"]


def normalise_prompt(text: str) -> str:
    """The prompt as the split and the overlap checks see it: lower case, runs of whitespace
    made one space, stripped (so "4 + 7 =" and " 4  +\\n7 = " are the same prompt)."""
    return " ".join(text.lower().split())


def prompt_part(text: str) -> Part:
    """``"tune"`` when the first 8 bytes of the SHA-256 of the normalised prompt (UTF-8), read as
    a big-endian integer and divided by 2**64, fall below ``TUNE_FRACTION``; else ``"eval"``."""
    digest = hashlib.sha256(normalise_prompt(text).encode("utf-8")).digest()
    return "tune" if int.from_bytes(digest[:8], "big") / 2**64 < TUNE_FRACTION else "eval"


def _prompts(examples) -> set[str]:
    return {normalise_prompt(e.prompt) for e in examples}


def overlap(tasks_a, tasks_b) -> dict[str, int]:
    """Per task name of ``tasks_b`` that ``tasks_a`` also has: how many distinct normalised
    prompts of a's task (train or test rows) are test prompts of b's task (0: none)."""
    seen = {t.name: _prompts(t.train) | _prompts(t.test) for t in tasks_a}
    return {t.name: len(seen[t.name] & _prompts(t.test)) for t in tasks_b if t.name in seen}


def split_task(task, split: str):
    """A user task's rows under ``stream.split``: ``all`` every row; ``tune`` its train and test
    rows from the tune part only; ``eval`` its test rows from the eval part only (train rows
    kept). Validation rows are kept as they are (they are not scored). A split that leaves the
    task no train or no test rows is a ``DataError`` naming the task and the split."""
    if split == "all":
        return task
    train = [e for e in task.train if prompt_part(e.prompt) == "tune"] if split == "tune" else list(task.train)
    test = [e for e in task.test if prompt_part(e.prompt) == split]
    for kind, rows, before in (("train", train, task.train), ("test", test, task.test)):
        if not rows:
            raise DataError(
                f"task {task.name!r}: none of its {len(before)} {kind} rows is in the {split} part of the prompts "
                f"(stream.split={split}); give it more distinct prompts, or use stream.split=all"
            )
    return dataclasses.replace(task, train=train, test=test)


def check_disjoint(tuned_on: dict, eval_stream_cfg, cache_dir: Optional[Path] = None) -> None:
    """Refuse (``ConfigError``, one line) an evaluation whose test prompts (normalised) appear
    among the train or test prompts of the stream a sweep tuned on.

    ``tuned_on``: the sweep's stream settings, as ``best_params.yaml`` keeps them
    (``config_to_dict(cfg)["stream"]`` of its trials); ``eval_stream_cfg``: the evaluation's
    ``StreamConfig``. Both streams are loaded (the built-in one generated into ``cache_dir``,
    default ``$MSSR_CACHE``) and compared task by task of the same name.
    """
    from pydantic import ValidationError

    from mssr.config import StreamConfig
    from mssr.tasks import load_stream

    try:
        tuning_cfg = StreamConfig.model_validate(tuned_on)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"--tuned: tuned_on: {where}: {first['msg']}") from None
    tuning = load_stream(tuning_cfg, cache_dir)
    evaluation = load_stream(eval_stream_cfg, cache_dir)
    shared = {name: n for name, n in overlap(tuning, evaluation).items() if n}
    if not shared:
        return
    totals = {t.name: len(_prompts(t.test)) for t in evaluation}
    (name, n), *rest = sorted(shared.items(), key=lambda kv: -kv[1])
    others = ", ".join(f"{m} of {other}'s" for other, m in rest)
    more = f" (and {others})" if rest else ""
    raise ConfigError(
        f"--tuned: the sweep's rows include {n} of {name}'s {totals[name]} test prompts{more}; "
        "tune with stream.split=tune and compare with stream.split=eval"
    )
