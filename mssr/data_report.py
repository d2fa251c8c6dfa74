"""What is in a task stream, and what is wrong with it: the report of ``mssr validate-data``.

    from mssr.data_report import describe_stream, format_report
    report = describe_stream(load_stream(cfg.stream), encoder, max_length=cfg.stream.max_length)
    print(format_report(report))

Per task: rows per split; exact duplicates (same prompt and answer) within a split;
train/test leakage (a test prompt that also appears in the task's train split); prompts
shared with other tasks; token lengths of the train split (prompt + answer +
end-of-sequence, as trained) and how many exceed ``max_length``; and, for
classification-like tasks (at most ``LABELS_MAX`` distinct answers), the share of each
answer. ``warnings`` lists the findings that usually mean a data bug.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np

from mssr.tasks import Example, Task

LABELS_MAX = 10  # at most this many distinct answers: treat the task as classification-like


def _duplicates(rows: Sequence[Example]) -> int:
    counts = Counter((e.prompt, e.answer) for e in rows)
    return sum(c - 1 for c in counts.values() if c > 1)


def describe_stream(tasks: Sequence[Task], encoder, max_length: int) -> dict:
    """``encoder``: an ``mssr.tokenize.PromptEncoder`` (the lengths are the trained lengths)."""
    owners: dict[str, set[str]] = {}
    for t in tasks:
        for e in [*t.train, *t.test, *t.validation]:
            owners.setdefault(e.prompt, set()).add(t.name)
    report = {"tasks": [], "warnings": []}
    for t in tasks:
        enc = encoder.encode_many([e.prompt for e in t.train], [e.answer for e in t.train]) if t.train else None
        lengths = np.array([len(r) for r in enc["input_ids"]]) if enc else np.zeros(0, int)
        train_prompts = {e.prompt for e in t.train}
        leaked = sum(1 for e in t.test if e.prompt in train_prompts)
        shared = sum(1 for p in {e.prompt for e in t.train} if len(owners[p]) > 1)
        answers = Counter(e.answer for e in t.train)
        entry = {
            "name": t.name,
            "rows": {"train": len(t.train), "test": len(t.test), "validation": len(t.validation)},
            "duplicates": {"train": _duplicates(t.train), "test": _duplicates(t.test)},
            "train_test_leaks": leaked,
            "prompts_shared_with_other_tasks": shared,
            "tokens": {
                "min": int(lengths.min()) if lengths.size else 0,
                "median": float(np.median(lengths)) if lengths.size else 0.0,
                "p95": float(np.percentile(lengths, 95)) if lengths.size else 0.0,
                "max": int(lengths.max(initial=0)),
                "over_max_length": int((lengths > max_length).sum()),
            },
            "labels": (
                {a: round(c / len(t.train), 3) for a, c in answers.most_common()}
                if 0 < len(answers) <= LABELS_MAX
                else None
            ),
        }
        report["tasks"].append(entry)
        w = report["warnings"]
        if entry["duplicates"]["train"] or entry["duplicates"]["test"]:
            w.append(
                f"{t.name}: exact duplicate rows (train {entry['duplicates']['train']}, "
                f"test {entry['duplicates']['test']})"
            )
        if leaked:
            w.append(f"{t.name}: {leaked} test prompts also appear in its train split (train/test leakage)")
        if shared:
            w.append(f"{t.name}: {shared} train prompts also appear in other tasks")
        if entry["tokens"]["over_max_length"]:
            w.append(
                f"{t.name}: {entry['tokens']['over_max_length']} train rows longer than stream.max_length={max_length}"
            )
        if entry["labels"] and max(entry["labels"].values()) > 0.5 and len(entry["labels"]) > 1:
            top = max(entry["labels"], key=entry["labels"].get)
            w.append(f"{t.name}: unbalanced labels ({top!r} is {entry['labels'][top]:.0%} of the train rows)")
    return report


def format_report(report: dict) -> str:
    lines = [
        f"{'task':<22} {'train':>6} {'test':>5} {'valid':>5} {'dup':>4} {'leak':>5} {'shared':>6} "
        f"{'tok min':>7} {'median':>6} {'p95':>6} {'max':>5} {'>max':>5}"
    ]
    for t in report["tasks"]:
        r, d, k = t["rows"], t["duplicates"], t["tokens"]
        lines.append(
            f"{t['name'][:22]:<22} {r['train']:>6} {r['test']:>5} {r['validation']:>5} "
            f"{d['train'] + d['test']:>4} {t['train_test_leaks']:>5} {t['prompts_shared_with_other_tasks']:>6} "
            f"{k['min']:>7} {k['median']:>6.0f} {k['p95']:>6.0f} {k['max']:>5} {k['over_max_length']:>5}"
        )
    for t in report["tasks"]:
        if t["labels"]:
            shares = ", ".join(f"{a!r} {s:.0%}" for a, s in t["labels"].items())
            lines.append(f"labels of {t['name']}: {shares}")
    lines += [f"warning: {w}" for w in report["warnings"]] or ["no problems found"]
    return "\n".join(lines)
