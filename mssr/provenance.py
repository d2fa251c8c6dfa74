"""Where and how a run ran: commit, machine, threads, library versions and the precision it
actually trained and evaluated in.

Why a run records it: the same config and seed give different floats on different processors
(their matmul kernels sum in other orders and other widths: AVX2, AVX-512, AMX, a GPU's
tensor cores) and in different precisions (bf16 weights or bf16 autocast round every matmul),
so two runs may be paired in a comparison, where the noise between seeds is cancelled by
taking differences, only when they ran on the same kind of processor in the same precisions
(``pairing_key``). The commit says which code produced a number, ``dirty`` whether that code
was exactly the commit's, and the versions which libraries computed it.

Collected by rank 0 of the training workers, where the training happens (``collect``), it
crosses to the driver as a dict in the workers' ``Progress`` (``to_dict`` / ``from_dict``), is
written to ``summary.json`` under ``"provenance"`` and set as tags of the MLflow run (``tags``).
``mssr provenance`` tabulates it for a set of run directories (``pipelines/provenance_table.py``).

    p = collect(device, *precisions(learner.weights_dtype, learner.precision, learner.eval_precision))
    summary["provenance"] = to_dict(p)
    pairing_key(summary_a["provenance"]) == pairing_key(summary_b["provenance"])   # may be paired

This module imports no Ray, and torch only inside ``collect``.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import subprocess
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping, Optional, Union

PACKAGES = ("torch", "ray", "transformers", "peft", "mlflow")  # whose versions a run records
UNKNOWN = "unknown"  # what an older run's summary, which recorded nothing, gets
CPUINFO = Path("/proc/cpuinfo")
_PACKAGE_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Provenance:
    """Where and how a run ran: a small typed message from rank 0 of the training workers to
    the driver (as ``to_dict``'s dict). Every field is what was in force while training, not
    what the config asked for: ``auto`` settings resolve differently on different machines."""

    # the code: git HEAD of the checkout the ``mssr`` package was imported from, and whether
    # tracked files differed from it (None: not a git checkout, or git is missing)
    commit: Optional[str] = None
    dirty: Optional[bool] = None
    # the processor's model ("AMD EPYC 7B13", "Intel(R) Xeon(R) Platinum 8481C"): its kernels
    # decide the floats
    processor: str = UNKNOWN
    # the family whose runs may be paired ("AMD EPYC", "Intel Xeon"; a GPU run: the GPU's name)
    processor_kind: str = UNKNOWN
    # bf16 matrix instructions (CPU: AVX512-BF16 or AMX-BF16; CUDA: the GPU supports bf16):
    # what ``auto`` precision settings resolve by
    bf16_instructions: Optional[bool] = None
    amx: Optional[bool] = None  # Intel AMX tiles (much faster bf16 matmuls where present)
    threads: Optional[int] = None  # torch's intra-op threads of the worker: sums split differently
    device: str = UNKNOWN  # "cpu", or the CUDA device's name
    versions: dict = field(default_factory=dict)  # python and PACKAGES; None for a missing package
    # what training and evaluation actually ran in (``precision_name``): "fp32", "bf16-autocast",
    # "bf16-weights", "bf16-weights+autocast", "nf4-weights" (QLoRA), ...
    train_precision: str = UNKNOWN
    eval_precision: str = UNKNOWN


# -- the parts ---------------------------------------------------------------------------
def _git(repo: Path, *args: str) -> Optional[str]:
    """``git -C repo ARGS``'s output, None when git is missing or fails. No optional locks: a
    status must not take the index lock of a checkout someone is working in."""
    try:
        proc = subprocess.run(
            ["git", "-C", str(repo), *args],
            capture_output=True,
            text=True,
            timeout=20,
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def git_state(repo: Union[str, Path, None] = None) -> tuple[Optional[str], Optional[bool]]:
    """(commit, dirty) of the git checkout at ``repo`` (default: the directory the ``mssr``
    package is imported from). commit: ``git rev-parse HEAD``; dirty: tracked files modified
    (``git status --porcelain --untracked-files=no``; untracked files are not code a run ran,
    and a run directory inside the checkout would make every run dirty). (None, None) when
    ``repo`` is not in a git checkout, its files are not tracked there (a package installed
    into a virtualenv that lies inside some checkout), or git is missing."""
    path = Path(repo).resolve() if repo is not None else _PACKAGE_DIR
    tracked = _git(path, "ls-files", "--cached", "--", ".")
    if not tracked or not tracked.strip():
        return None, None
    head = _git(path, "rev-parse", "HEAD")
    if head is None:
        return None, None
    status = _git(path, "status", "--porcelain", "--untracked-files=no")
    return head.strip(), (bool(status.strip()) if status is not None else None)


def read_cpuinfo(path: Union[str, Path] = CPUINFO) -> tuple[Optional[str], frozenset[str]]:
    """The first processor's "model name" and "flags" in ``/proc/cpuinfo`` (None and no flags
    where the file or the line does not exist: not Linux, or an ARM kernel)."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return None, frozenset()
    model, flags = None, frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip() or None
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
        if model is not None and flags:
            break
    return model, flags


def processor_model(cpuinfo: Union[str, Path] = CPUINFO) -> str:
    """The processor's model: ``/proc/cpuinfo``'s "model name", else ``platform.processor()``,
    else ``platform.machine()``."""
    model, _ = read_cpuinfo(cpuinfo)
    return model or platform.processor() or platform.machine() or UNKNOWN


_FAMILIES = (  # (words in the model name, family), first match wins
    (("epyc",), "AMD EPYC"),
    (("ryzen",), "AMD Ryzen"),
    (("threadripper",), "AMD Threadripper"),
    (("xeon",), "Intel Xeon"),
    (("intel", "core"), "Intel Core"),
    (("apple",), "Apple"),
    (("neoverse",), "ARM Neoverse"),
)


def processor_kind(model: str) -> str:
    """The short family of a processor model, the unit at which runs are paired: "AMD EPYC"
    for "AMD EPYC 7B13 64-Core Processor", "Intel Xeon" for "Intel(R) Xeon(R) Platinum 8481C
    CPU @ 2.70GHz", else the model itself. (Cloud machines often report just the family.)"""
    words = model.lower()
    for needles, family in _FAMILIES:
        if all(n in words for n in needles):
            return family
    return model.strip() or UNKNOWN


def cpu_bf16(flags: frozenset[str]) -> tuple[bool, bool]:
    """(bf16 matrix instructions, AMX) from a CPU's flags: AVX512-BF16 or AMX-BF16; AMX-TILE or
    AMX-BF16. The same test as ``mssr.optim.has_bf16_matmul``, which the ``auto`` settings use."""
    return bool({"avx512_bf16", "amx_bf16"} & flags), bool({"amx_tile", "amx_bf16"} & flags)


def precision_name(weights_dtype: str, autocast: str, finetune: Optional[str] = None) -> str:
    """What a phase ran in, from the learner's resolved values: ``weights_dtype``
    (``resolve_dtype``: "float32" or "bfloat16") and the phase's autocast (``resolve_autocast``:
    "bf16" or "none"). "fp32"; "bf16-autocast" (fp32 weights, matmuls in bf16); "bf16-weights"
    (bf16 base weights, fp32 adapters); "bf16-weights+autocast"; with ``finetune="qlora"`` the
    base weights are 4-bit: "nf4-weights" (bf16 compute), "nf4-weights+autocast". Training and
    evaluation use the same weights with their own autocast setting."""
    if finetune == "qlora":
        base = "nf4-weights"
    elif weights_dtype in ("bfloat16", "bf16"):
        base = "bf16-weights"
    elif weights_dtype in ("float32", "fp32"):
        base = None
    else:
        base = f"{weights_dtype}-weights"
    if autocast == "bf16":
        return f"{base}+autocast" if base else "bf16-autocast"
    if autocast not in ("none", None, ""):
        return f"{base}+{autocast}" if base else str(autocast)
    return base or "fp32"


def precisions(
    weights_dtype: str, autocast: str, eval_autocast: str, finetune: Optional[str] = None
) -> tuple[str, str]:
    """(train precision, eval precision) of a learner from its resolved values
    (``Learner.weights_dtype``, ``.precision``, ``.eval_precision``) and ``model.finetune``."""
    return precision_name(weights_dtype, autocast, finetune), precision_name(weights_dtype, eval_autocast, finetune)


def package_versions() -> dict[str, Optional[str]]:
    """Python's version and each of ``PACKAGES``' installed version (None where missing)."""
    versions: dict[str, Optional[str]] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


# -- collection ---------------------------------------------------------------------------
def collect(
    device: Any,
    train_precision: str,
    eval_precision: str,
    repo: Union[str, Path, None] = None,
    cpuinfo: Union[str, Path] = CPUINFO,
) -> Provenance:
    """This process's provenance: call it where the training runs (rank 0 of the workers, after
    ``torch.set_num_threads``). ``device``: a ``torch.device`` or its string ("cpu", "cuda:0");
    on a CUDA device the GPU's name is the device and the processor kind, and its bf16 support
    the bf16 flag. ``train_precision``/``eval_precision``: ``precision_name`` of the learner's
    resolved values. ``repo``: where to read the commit (default: the ``mssr`` package's
    directory)."""
    import torch

    device = torch.device(device) if not isinstance(device, torch.device) else device
    model = processor_model(cpuinfo)
    _, flags = read_cpuinfo(cpuinfo)
    bf16, amx = cpu_bf16(flags)
    kind, name = processor_kind(model), "cpu"
    if device.type == "cuda" and torch.cuda.is_available():
        name = torch.cuda.get_device_name(device)
        kind, bf16 = name, bool(torch.cuda.is_bf16_supported())
    elif device.type != "cpu":
        name = str(device)
    commit, dirty = git_state(repo)
    return Provenance(
        commit=commit,
        dirty=dirty,
        processor=model,
        processor_kind=kind,
        bf16_instructions=bf16,
        amx=amx,
        threads=torch.get_num_threads(),
        device=name,
        versions=package_versions(),
        train_precision=train_precision,
        eval_precision=eval_precision,
    )


# -- in and out ----------------------------------------------------------------------------
def to_dict(p: Provenance) -> dict:
    """The provenance as JSON-ready data (``summary.json``'s ``"provenance"``)."""
    return dataclasses.asdict(p)


def from_dict(data: Optional[Mapping]) -> Provenance:
    """A provenance from ``to_dict``'s data; keys it does not know are dropped, missing ones
    (an older file) keep their defaults ("unknown", None)."""
    known = {f.name for f in dataclasses.fields(Provenance)}
    values = {k: v for k, v in (data or {}).items() if k in known}
    if not isinstance(values.get("versions", {}), dict):
        values.pop("versions")
    return Provenance(**values)


def summary_provenance(summary: Mapping) -> dict:
    """A run summary's provenance as a ``to_dict`` dict. A summary written before runs recorded
    one gets its precisions from its ``weights_dtype``/``autocast``/``eval_autocast`` (missing
    ``weights_dtype``: fp32, the only weights of those versions) and "unknown" elsewhere."""
    if summary.get("provenance"):
        return to_dict(from_dict(summary["provenance"]))
    weights = summary.get("weights_dtype") or "float32"
    train = summary.get("autocast")
    evaluation = summary.get("eval_autocast")
    return to_dict(
        Provenance(
            device=UNKNOWN,
            train_precision=precision_name(weights, train) if train else UNKNOWN,
            eval_precision=precision_name(weights, evaluation) if evaluation else UNKNOWN,
        )
    )


def pairing_key(p_dict: Union[Mapping, Provenance, None]) -> tuple:
    """(processor_kind, train_precision, eval_precision): two runs whose keys differ must not be
    paired in a comparison, as their floats differ for reasons other than the strategy (another
    processor's kernels, another precision's rounding). Missing values read "unknown" (an older
    run), so two older runs pair with each other and not with a recorded one."""
    if isinstance(p_dict, Provenance):
        p_dict = to_dict(p_dict)
    p_dict = p_dict or {}
    return tuple(p_dict.get(k) or UNKNOWN for k in ("processor_kind", "train_precision", "eval_precision"))


def _text(value: Any) -> str:
    if value is None:
        return UNKNOWN
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def tags(p: Union[Provenance, Mapping]) -> dict[str, str]:
    """The provenance as MLflow tags (``mssr.commit``, ``mssr.processor_kind``, ...,
    ``mssr.version.torch``): strings, "unknown" for what was not recorded. Tags, not params:
    they describe where a run ran, not what it was asked to do, and a resumed run may set them
    again."""
    if not isinstance(p, Provenance):
        p = from_dict(p)
    out = {
        "mssr.commit": _text(p.commit),
        "mssr.dirty": _text(p.dirty),
        "mssr.processor": _text(p.processor),
        "mssr.processor_kind": _text(p.processor_kind),
        "mssr.bf16": _text(p.bf16_instructions),
        "mssr.amx": _text(p.amx),
        "mssr.threads": _text(p.threads),
        "mssr.device": _text(p.device),
        "mssr.train_precision": _text(p.train_precision),
        "mssr.eval_precision": _text(p.eval_precision),
    }
    out.update({f"mssr.version.{k}": _text(v) for k, v in p.versions.items()})
    return {k: v[:5000] for k, v in out.items()}  # MLflow's limit on a tag's value is 5000 characters


def describe(p: Union[Provenance, Mapping]) -> str:
    """One console line: "machine: AMD EPYC (bf16), 2 threads, commit 357de57 (dirty), train
    fp32, eval bf16-autocast"."""
    if not isinstance(p, Provenance):
        p = from_dict(p)
    machine = p.processor + (" (bf16)" if p.bf16_instructions else "") + (" (AMX)" if p.amx else "")
    if p.device not in ("cpu", UNKNOWN):
        machine += f", {p.device}"
    threads = f"{p.threads} thread{'s' if p.threads != 1 else ''}" if p.threads else "threads unknown"
    commit = f"commit {p.commit[:7]}" if p.commit else "no git commit"
    if p.dirty:
        commit += " (dirty)"
    return f"machine: {machine}, {threads}, {commit}, train {p.train_precision}, eval {p.eval_precision}"
