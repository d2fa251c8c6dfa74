"""Per-example scorers: prediction string x reference string -> score in [0, 1].

Registered by name; ``get_scorer("rouge_l")``. A user scorer is any callable
``(prediction, reference) -> float`` given by import path ``package.module:function``.
"""

from __future__ import annotations

import re
import string
from typing import Callable

from mssr.errors import ConfigError, did_you_mean

Scorer = Callable[[str, str], float]

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")
# A number keeps its sign and decimal point: "-2" is not "2", "3.5" is not "35".
_NUMBER = re.compile(r"((?<!\w)-?\d+(?:\.\d+)?)")


def normalise(text: str) -> str:
    """Lower-case, drop punctuation and articles, collapse whitespace (SQuAD-style).

    Unlike SQuAD, numbers keep their minus sign and decimal point, so that an arithmetic
    answer of ``-2`` does not match ``2``.
    """
    pieces = _NUMBER.split(text.lower())  # odd indices are numbers
    text = " ".join(p if i % 2 else _PUNCT.sub(" ", p) for i, p in enumerate(pieces))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalise(prediction) == normalise(reference))


_CHOICE = re.compile(r"\b([A-Ja-j])\b")


def multiple_choice(prediction: str, reference: str) -> float:
    """Compare the first option letter (A-J) of the prediction with the reference's."""
    pred = _CHOICE.search(prediction.strip())
    ref = _CHOICE.search(reference.strip())
    if ref is None:
        return exact_match(prediction, reference)
    return float(pred is not None and pred.group(1).upper() == ref.group(1).upper())


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = normalise(prediction).split(), normalise(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common: dict[str, int] = {}
    ref_counts: dict[str, int] = {}
    for t in ref:
        ref_counts[t] = ref_counts.get(t, 0) + 1
    overlap = 0
    for t in pred:
        if ref_counts.get(t, 0) > common.get(t, 0):
            common[t] = common.get(t, 0) + 1
            overlap += 1
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred), overlap / len(ref)
    return 2 * precision * recall / (precision + recall)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 on normalised tokens (longest common subsequence).

    Written here rather than taken from ``rouge-score``: it is 15 lines, and that package
    pulls in nltk for a tokeniser we do not use.
    """
    a, b = normalise(prediction).split(), normalise(reference).split()
    if not a or not b:
        return float(a == b)
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, start=1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(a), lcs / len(b)
    return 2 * precision * recall / (precision + recall)


SCORERS: dict[str, Scorer] = {
    "exact_match": exact_match,
    "multiple_choice": multiple_choice,
    "token_f1": token_f1,
    "rouge_l": rouge_l,
}


def get_scorer(name: str) -> Scorer:
    if name in SCORERS:
        return SCORERS[name]
    if ":" in name:
        from mssr.registry import load_by_path

        return load_by_path(name)
    hint = did_you_mean(name, SCORERS)
    raise ConfigError(f"unknown scorer {name!r}{hint} (known: {', '.join(SCORERS)})")
