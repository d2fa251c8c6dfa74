"""What a run records about where and how it ran (``mssr.provenance``), and ``mssr provenance``,
the table of it for a set of run directories."""

import csv
import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import mssr
from mssr import provenance
from mssr.config import load_config
from mssr.learner import Learner
from mssr.optim import has_bf16_matmul
from mssr.provenance import (
    Provenance,
    collect,
    from_dict,
    git_state,
    pairing_key,
    precision_name,
    precisions,
    processor_kind,
    read_cpuinfo,
    summary_provenance,
    tags,
    to_dict,
)

ROOT = Path(__file__).resolve().parents[1]
CPUINFO = Path("/proc/cpuinfo")
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
needs_cpuinfo = pytest.mark.skipif(not CPUINFO.is_file(), reason="no /proc/cpuinfo")


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def _cpuinfo_field(name: str) -> str:
    for line in CPUINFO.read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    return ""


# -- collection on this machine -------------------------------------------------------------
@needs_git
def test_the_commit_is_the_head_of_the_checkout_mssr_is_imported_from():
    if Path(mssr.__file__).resolve().parents[1] != ROOT or not (ROOT / ".git").exists():
        pytest.skip("mssr is not imported from a git checkout here")
    p = collect("cpu", "fp32", "fp32")
    assert p.commit == _git("rev-parse", "HEAD", cwd=ROOT)
    assert isinstance(p.dirty, bool)


@needs_git
def test_dirty_means_a_tracked_file_was_modified(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, capture_output=True)
    head = _git("rev-parse", "HEAD", cwd=clone)
    assert git_state(clone) == (head, False)
    (clone / "an_untracked_file.txt").write_text("not code the run ran\n")
    assert git_state(clone) == (head, False)  # untracked files do not count
    with (clone / "README.md").open("a") as f:
        f.write("\nan edit\n")
    assert git_state(clone) == (head, True)
    assert git_state(clone / "mssr") == (head, True)  # from a folder inside the checkout: the same


@needs_git
def test_no_commit_outside_a_git_checkout_or_without_git(tmp_path, monkeypatch):
    plain = tmp_path / "plain"
    plain.mkdir()
    assert git_state(plain) == (None, None)
    # a package folder that lies in a checkout but is not tracked there (a virtualenv inside it)
    subprocess.run(["git", "init", "--quiet", str(tmp_path / "repo")], check=True)
    (tmp_path / "repo" / "venv" / "mssr").mkdir(parents=True)
    assert git_state(tmp_path / "repo" / "venv" / "mssr") == (None, None)
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))  # git missing
    assert git_state(ROOT) == (None, None)


@needs_cpuinfo
def test_the_processor_and_its_bf16_flags_are_this_machines():
    p = collect("cpu", "fp32", "fp32")
    model = _cpuinfo_field("model name")
    flags = set(_cpuinfo_field("flags").split())
    if model:
        assert p.processor == model
    else:  # ARM kernels have no model name
        assert p.processor in (platform.processor(), platform.machine())
    assert p.processor_kind == processor_kind(p.processor)
    assert p.bf16_instructions == bool({"avx512_bf16", "amx_bf16"} & flags) == has_bf16_matmul("cpu")
    assert p.amx == bool({"amx_tile", "amx_bf16"} & flags)
    assert p.threads == torch.get_num_threads() and p.device == "cpu"
    assert p.versions["torch"] == torch.__version__ and p.versions["python"] == platform.python_version()
    assert set(p.versions) == {"python", "torch", "ray", "transformers", "peft", "mlflow"}


def test_cpuinfo_of_other_machines_and_processor_families(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz\n"
        "flags\t\t: fpu avx512f avx512_bf16 amx_bf16 amx_tile\n\n"
        "processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz\nflags\t\t: fpu\n"
    )
    model, flags = read_cpuinfo(info)
    assert model == "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz" and "amx_tile" in flags
    p = collect("cpu", "bf16-autocast", "bf16-autocast", repo=tmp_path, cpuinfo=info)
    assert (p.processor_kind, p.bf16_instructions, p.amx, p.commit) == ("Intel Xeon", True, True, None)
    p = collect("cpu", "fp32", "fp32", cpuinfo=tmp_path / "missing")  # not Linux: platform's answer
    assert p.processor == (platform.processor() or platform.machine()) and p.bf16_instructions is False
    assert processor_kind("AMD EPYC 7B13 64-Core Processor") == processor_kind("AMD EPYC") == "AMD EPYC"
    assert processor_kind("11th Gen Intel(R) Core(TM) i7-1185G7 @ 3.00GHz") == "Intel Core"
    assert processor_kind("aarch64") == "aarch64"


# -- precisions ------------------------------------------------------------------------------
def test_precision_names():
    assert precision_name("float32", "none") == "fp32"
    assert precision_name("float32", "bf16") == "bf16-autocast"
    assert precision_name("bfloat16", "none") == "bf16-weights"
    assert precision_name("bfloat16", "bf16") == "bf16-weights+autocast"
    assert precision_name("bfloat16", "none", "qlora") == "nf4-weights"
    assert precision_name("float32", "bf16", "qlora") == "nf4-weights+autocast"


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["model.dtype=float32", "train.autocast=none", "eval.autocast=none"], ("fp32", "fp32")),
        (["model.dtype=float32", "train.autocast=bf16", "eval.autocast=bf16"], ("bf16-autocast", "bf16-autocast")),
        (["model.dtype=float32", "train.autocast=none", "eval.autocast=bf16"], ("fp32", "bf16-autocast")),
        (["model.dtype=bfloat16", "train.autocast=none", "eval.autocast=none"], ("bf16-weights", "bf16-weights")),
        (
            ["model.dtype=bfloat16", "train.autocast=bf16", "eval.autocast=none"],
            ("bf16-weights+autocast", "bf16-weights"),
        ),
        ([], None),  # the defaults (auto): what this machine resolves them to
    ],
)
def test_the_precisions_are_what_the_learner_resolved(overrides, expected):
    cfg = load_config(ROOT / "configs" / "tiny.yaml", overrides)
    learner = Learner(cfg, total_steps=2, device=torch.device("cpu"))
    got = precisions(learner.weights_dtype, learner.precision, learner.eval_precision, cfg.model.finetune)
    if expected is None:  # CPUs train in fp32 weights unless asked, and evaluate in bf16 where they have bf16 matmuls
        expected = ("fp32", "bf16-autocast") if has_bf16_matmul("cpu") else ("fp32", "fp32")
    assert got == expected
    assert next(learner.core.parameters()).dtype == (torch.bfloat16 if "bf16-weights" in got[0] else torch.float32)


# -- the message, its tags and its pairing key --------------------------------------------------
def _provenance(**changes) -> Provenance:
    base = dict(
        commit="a" * 40,
        dirty=False,
        processor="AMD EPYC 7B13",
        processor_kind="AMD EPYC",
        bf16_instructions=False,
        amx=False,
        threads=2,
        device="cpu",
        versions={"python": "3.11.7", "torch": "2.13.0", "ray": "2.60.0", "peft": None},
        train_precision="fp32",
        eval_precision="fp32",
    )
    return Provenance(**{**base, **changes})


def test_to_dict_and_from_dict_round_trip_and_read_older_files():
    p = _provenance()
    assert from_dict(json.loads(json.dumps(to_dict(p)))) == p
    old = from_dict({"commit": "b" * 40, "a_field_from_a_newer_version": 1})
    assert old.commit == "b" * 40 and old.processor_kind == "unknown" and old.threads is None and old.versions == {}
    assert from_dict(None) == Provenance()


def test_tags_are_strings_under_mssr():
    t = tags(_provenance(dirty=True))
    for key in ("commit", "dirty", "processor", "processor_kind", "bf16", "threads", "device"):
        assert f"mssr.{key}" in t
    assert t["mssr.commit"] == "a" * 40 and t["mssr.dirty"] == "true" and t["mssr.bf16"] == "false"
    assert t["mssr.train_precision"] == t["mssr.eval_precision"] == "fp32" and t["mssr.threads"] == "2"
    assert t["mssr.version.torch"] == "2.13.0" and t["mssr.version.peft"] == "unknown"
    assert all(isinstance(v, str) for v in t.values())
    assert tags(to_dict(_provenance())) == tags(_provenance())
    assert tags(Provenance())["mssr.commit"] == "unknown"


def test_pairing_key_separates_processors_and_precisions_only():
    p = _provenance()
    assert pairing_key(to_dict(p)) == ("AMD EPYC", "fp32", "fp32")
    for other in (
        _provenance(processor="Intel Xeon Platinum", processor_kind="Intel Xeon"),
        _provenance(train_precision="bf16-autocast"),
        _provenance(eval_precision="bf16-autocast"),
        _provenance(device="NVIDIA H100", processor_kind="NVIDIA H100 80GB HBM3"),
    ):
        assert pairing_key(to_dict(other)) != pairing_key(to_dict(p))
    # another commit, thread count or processor model of the same family: still paired
    same = _provenance(commit="c" * 40, dirty=True, threads=4, processor="AMD EPYC 9B14")
    assert pairing_key(to_dict(same)) == pairing_key(to_dict(p)) == pairing_key(p)
    assert pairing_key({}) == pairing_key(None) == ("unknown", "unknown", "unknown")


def test_an_older_summary_gets_its_precisions_from_its_own_fields():
    old = {"weights_dtype": "float32", "autocast": "none", "eval_autocast": "bf16", "wall_seconds": 3.0}
    p = summary_provenance(old)
    assert (p["train_precision"], p["eval_precision"]) == ("fp32", "bf16-autocast")
    assert p["processor_kind"] == p["processor"] == p["device"] == "unknown" and p["commit"] is None
    assert summary_provenance({})["train_precision"] == "unknown"
    assert summary_provenance({"provenance": to_dict(_provenance())}) == to_dict(_provenance())


def test_the_console_line():
    line = provenance.describe(_provenance(dirty=True, eval_precision="bf16-autocast"))
    assert line == "machine: AMD EPYC 7B13, 2 threads, commit aaaaaaa (dirty), train fp32, eval bf16-autocast"


# -- mssr provenance ----------------------------------------------------------------------------
MSSR = Path(sys.executable).parent / "mssr"


def _mssr(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [str(MSSR)] if MSSR.exists() else [sys.executable, "-m", "pipelines.cli"]
    return subprocess.run([*command, "provenance", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def _run_dirs(parent: Path) -> None:
    new = parent / "b-new"
    new.mkdir(parents=True)
    p = _provenance(dirty=True, eval_precision="bf16-autocast")
    summary = {"weights_dtype": "float32", "autocast": "none", "eval_autocast": "bf16", "wall_seconds": 12.5}
    (new / "summary.json").write_text(json.dumps({**summary, "provenance": to_dict(p)}))
    old = parent / "a-old"
    (old / "ray" / "train").mkdir(parents=True)  # its checkpoints hold no summary
    (old / "summary.json").write_text(json.dumps({**summary, "eval_autocast": "none", "wall_seconds": 99.0}))
    (old / "config.yaml").write_text("seed: 0\n")
    (parent / "not-a-run").mkdir()
    (parent / "summary.json").write_text(json.dumps(summary))  # a --summary-json copy beside the runs
    artifacts = parent / "mlartifacts" / "mssr" / "0123" / "artifacts"  # MLflow's copies of a run's files
    artifacts.mkdir(parents=True)
    shutil.copy(old / "summary.json", artifacts)
    shutil.copy(old / "config.yaml", artifacts)


def test_the_table_of_two_runs(tmp_path):
    _run_dirs(tmp_path / "runs")
    out = tmp_path / "tables" / "provenance.csv"
    proc = _mssr("runs", "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(out.open()))
    assert [r["run"] for r in rows] == ["a-old", "b-new"]  # sorted by name
    assert list(rows[0]) == [
        "run",
        "commit",
        "dirty",
        "processor",
        "processor_kind",
        "bf16",
        "threads",
        "device",
        "train_precision",
        "eval_precision",
        "torch",
        "ray",
        "transformers",
        "peft",
        "wall_seconds",
    ]
    old, new = rows
    assert (old["train_precision"], old["eval_precision"], old["wall_seconds"]) == ("fp32", "fp32", "99.0")
    assert old["commit"] == old["processor"] == old["processor_kind"] == old["threads"] == old["torch"] == "unknown"
    assert (new["commit"], new["dirty"], new["processor"], new["processor_kind"]) == (
        "a" * 40,
        "yes",
        "AMD EPYC 7B13",
        "AMD EPYC",
    )
    assert (new["bf16"], new["threads"], new["device"], new["train_precision"], new["eval_precision"]) == (
        "no",
        "2",
        "cpu",
        "fp32",
        "bf16-autocast",
    )
    assert (new["torch"], new["ray"], new["transformers"], new["peft"], new["wall_seconds"]) == (
        "2.13.0",
        "2.60.0",
        "unknown",
        "unknown",
        "12.5",
    )
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("| run | commit | dirty |") and lines[1].startswith("|---|")
    assert lines[2].startswith("| a-old | unknown |") and lines[3].startswith("| b-new | aaaaaaa | yes |")
    # run directories named one by one: the same rows
    again = _mssr("runs/b-new", "runs/a-old", cwd=tmp_path)
    assert again.returncode == 0 and again.stdout.splitlines()[2].startswith("| b-new |")


def test_the_table_of_nothing_is_a_one_line_error(tmp_path):
    proc = _mssr(str(tmp_path / "missing"), cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert (
        proc.stderr.strip()
        == f"mssr: error: {tmp_path / 'missing'}: no such directory (give run directories or a directory above them)"
    )
    (tmp_path / "empty").mkdir()
    proc = _mssr(str(tmp_path / "empty"), cwd=tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "no run directory" in proc.stderr
