"""Every kind of bad input is refused before training: one line naming the file, line or key
and what was expected, exit code 2, no traceback, no run directory and no MLflow store.

The table runs in-process through ``pipelines.cli.main`` (fast, and an uncaught exception
fails the test with its traceback); the cases that need Ray Data's tokenisation to find the
problem run the real command in a subprocess (``tests/test_cli.py`` has the other smoke tests).
"""

import json
import os
import sys
from types import SimpleNamespace

import pytest
import torch

from pipelines.cli import main
from tests.conftest import run_cli

GOOD = json.dumps({"prompt": "2+2?", "answer": "4"}) + "\n"
TASK = "    - {{name: {name}, train: {train}, test: test.jsonl, scorer: {scorer}}}\n"


def _setup(tmp_path, train: bytes | str = GOOD * 4, tasks=(("a", "train.jsonl", "exact_match"),), extra=""):
    (tmp_path / "train.jsonl").write_bytes(train if isinstance(train, bytes) else train.encode())
    (tmp_path / "test.jsonl").write_text(GOOD)
    body = "".join(TASK.format(name=n, train=t, scorer=s) for n, t, s in tasks) or "    []\n"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"model: {{name: tiny}}\nstream:\n  tasks:\n{body}run: {{output_dir: {tmp_path / 'out'}}}\n"
        f"train: {{num_workers: 1, batch_size: 2}}\n{extra}"
    )
    return cfg


CASES = {
    "malformed JSON line": (dict(train=GOOD + '{"prompt": "x", "answer": \n'), [], "train.jsonl:2: malformed JSON"),
    "missing prompt": (
        dict(train=GOOD + json.dumps({"answer": "4"}) + "\n"),
        [],
        "train.jsonl:2: missing field 'prompt'",
    ),
    "empty answer": (
        dict(train=GOOD + json.dumps({"prompt": "q", "answer": " "}) + "\n"),
        [],
        "train.jsonl:2: field 'answer' is empty",
    ),
    "empty task": (dict(train=""), [], "train.jsonl: no rows"),
    "non-UTF-8 file": (dict(train=GOOD.encode() + b'{"prompt": "caf\xe9", "answer": "x"}\n'), [], "not UTF-8"),
    "duplicate task names": (
        dict(tasks=(("a", "train.jsonl", "exact_match"), ("a", "train.jsonl", "exact_match"))),
        [],
        "duplicate task name 'a'",
    ),
    "unknown scorer": (dict(tasks=(("a", "train.jsonl", "exact_mach"),)), [], "did you mean 'exact_match'"),
    "unknown strategy": ({}, ["replay.strategy=fixd"], "unknown strategy 'fixd'; did you mean 'fixed'"),
    "unknown config key": ({}, ["train.lr_schedul=cosine"], "did you mean 'lr_schedule'"),
    "mssr without its reference losses": (
        {},
        ["replay.strategy=mssr", "replay.reference_pass=false"],
        "replay.reference_pass: false, but strategy 'mssr' replays from the excess loss",
    ),
    "unknown key in the YAML": (dict(extra="replay:\n  stratgy: mssr\n"), [], "did you mean 'strategy'"),
    "a list where a number goes": (dict(extra="seed: [1, 2]\n"), [], "seed"),
    "batch not split evenly over workers": (
        {},
        ["train.num_workers=2", "train.batch_size=5"],
        "multiple of train.num_workers",
    ),
    "wrong type": ({}, ["train.lr=fast"], "train.lr"),
    "zero interval": ({}, ["replay.fixed.interval=0"], "replay.fixed.interval"),
    "negative decay": ({}, ["replay.mssr.decay=-0.1"], "replay.mssr.decay"),
    "zero budget": ({}, ["replay.budget=0"], "budget: must be positive"),
    "missing model path": ({}, ["model.name=/no/such/model"], "neither a local folder nor a hub id"),
    "hub id while offline": (
        {},
        ["model.name=some-org/some-model"],
        "is not in the local Hugging Face cache and HF_HUB_OFFLINE is set",
    ),
    "credentials in the tracking URI": (
        {},
        ["mlflow.tracking_uri=https://me:secret@mlflow.example.com"],
        "remove the credentials from the URI",
    ),
    "isolation ratio out of range": ({}, ["isolation.method=epi", "isolation.ratio=1.5"], "isolation.ratio"),
    "more workers than CPUs": (
        {},
        ["train.num_workers=64", "train.batch_size=64"],
        f"needs 64 CPUs and this machine has {len(os.sched_getaffinity(0))}",
    ),
    "unreachable tracking server": ({}, ["mlflow.tracking_uri=http://127.0.0.1:9"], "no MLflow server answers"),
    "output directory that cannot be made": ({}, ["run.output_dir=/proc/mssr-runs"], "run.output_dir: cannot"),
    "an empty task list": (dict(tasks=()), [], "tasks: the list is empty"),
    "a LoRA target the model lacks": (
        {},
        ["model.lora.target_modules=[q_proj,nosuch_proj]"],
        "model.lora.target_modules: ['nosuch_proj'] not found in the model (its projections: ",
    ),
    "a LoRA target SmolLM2 lacks": (
        {},
        ["model.name=smollm2-135m-instruct", "model.lora.target_modules=[qkv_proj]"],
        "['qkv_proj'] not found in the model",
    ),
    "qlora on this machine": (
        {},
        ["model.finetune=qlora"],
        "needs" if torch.cuda.is_available() else "need a CUDA GPU and this machine has none",
    ),
}


def test_too_little_disk_for_the_checkpoints_is_refused_up_front(tmp_path, capsys, monkeypatch):
    import pipelines.preflight as preflight

    free = 200 * 2**20
    usage = SimpleNamespace(total=10 * 2**30, used=10 * 2**30 - free, free=free)
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda path: usage)
    code = main(["run", str(_setup(tmp_path)), "model.name=smollm2-135m-instruct", "model.finetune=full"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "0.2 GiB free" in err and "checkpoints of 1.50 GiB" in err, err  # 3 x 538 MB of fp32 weights
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_is_estimated_from_the_trainable_weights():
    from mssr.config import load_config
    from pipelines.preflight import checkpoint_bytes

    model = "model.name=smollm2-135m-instruct"
    full = checkpoint_bytes(load_config(overrides=[model, "model.finetune=full"]))
    lora = checkpoint_bytes(load_config(overrides=[model, "model.finetune=lora"]))
    assert 1.4 * 2**30 < full < 1.6 * 2**30  # weights + two AdamW moments, fp32
    assert 0 < lora < full / 10  # SmolLM2's default adapter: 4.9 M parameters, estimated at most 7.5 M


# found only when Ray Data tokenises the rows: the real command, in a subprocess
RAY_CASES = {
    "budget below one replay event": ({}, ["replay.budget=2"], "fewer than one replay"),
    "sequence longer than max_length": (
        dict(train=GOOD + json.dumps({"prompt": "w " * 400, "answer": "x"}) + "\n"),
        [],
        "train.jsonl:2: ",
    ),
    "answer too long even truncated": (
        dict(train=GOOD + json.dumps({"prompt": "q", "answer": "w " * 400}) + "\n"),
        ["stream.too_long=truncate"],
        "its answer alone does not fit",
    ),
}


@pytest.fixture(autouse=True)
def _same_environment():
    """``mssr run`` sets defaults in the environment; in-process, they must not leak into later tests."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused_up_front(tmp_path, capsys, case):
    setup, overrides, fragment = CASES[case]
    cfg = _setup(tmp_path, **setup)
    code = main(["run", str(cfg), *overrides])
    err = capsys.readouterr().err
    assert code == 2, err
    assert fragment in err, err
    assert len(err.strip().splitlines()) <= 2
    assert not (tmp_path / "out").exists()
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()  # refused before Ray started


@pytest.mark.parametrize("case", list(RAY_CASES))
def test_bad_rows_found_by_tokenisation_are_refused_up_front(tmp_path, case):
    setup, overrides, fragment = RAY_CASES[case]
    cfg = _setup(tmp_path, **setup)
    proc = run_cli("run", str(cfg), *overrides, "--dry-run", cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stdout[-1000:] + proc.stderr[-2000:]
    assert fragment in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(proc.stderr.strip().splitlines()) <= 2
    assert not (tmp_path / "out").exists()


def test_truncation_cuts_and_counts_instead_of_refusing(tmp_path):
    cfg = _setup(tmp_path, train=GOOD * 3 + json.dumps({"prompt": "w " * 400, "answer": "x"}) + "\n")
    proc = run_cli("run", str(cfg), "stream.too_long=truncate", "--dry-run", cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "rows truncated to stream.max_length (prompt cut from the left): a 1" in proc.stdout


def test_validate_data_reports_duplicates_leakage_lengths_and_labels(tmp_path, capsys):
    train = GOOD * 3 + json.dumps({"prompt": "3+3?", "answer": "6"}) + "\n"  # 2 duplicates; test leaks "2+2?"
    cfg = _setup(
        tmp_path, train=train, tasks=(("a", "train.jsonl", "exact_match"), ("b", "train.jsonl", "exact_match"))
    )
    assert main(["validate-data", str(cfg), "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "r.json").read_text())
    a = report["tasks"][0]
    assert a["rows"] == {"train": 4, "test": 1, "validation": 0}
    assert a["duplicates"]["train"] == 2 and a["train_test_leaks"] == 1 and a["prompts_shared_with_other_tasks"] == 2
    assert a["labels"] == {"4": 0.75, "6": 0.25} and a["tokens"]["max"] >= a["tokens"]["min"] > 2
    for text in ("train/test leakage", "also appear in other tasks", "unbalanced labels", "exact duplicate rows"):
        assert text in out
    assert main(["validate-data", str(cfg), "--strict"]) == 1
    bad = _setup(tmp_path, train=GOOD + "{oops\n")
    assert main(["validate-data", str(bad)]) == 2
    assert "train.jsonl:2: malformed JSON" in capsys.readouterr().err
