"""The cluster path: ``cluster.yaml`` checked with the Ray cluster launcher's own validation and
against pyproject.toml, the driver's cluster settings, and a multi-node rehearsal on this
machine (two Ray nodes, ``ray job submit``, one training worker on each node).

    python -m pytest tests/test_cluster.py -m "not e2e"    # the config checks only (seconds)
    python -m pytest tests/test_cluster.py                 # with the rehearsal (a few minutes)

Nothing here contacts a cloud: the checks stop where ``ray up`` would start asking AWS.
"""

import copy
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import yaml
from packaging.specifiers import SpecifierSet

from tests.conftest import same_matrix

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"


def load_cluster(path: Path = CLUSTER_YAML) -> dict:
    return yaml.safe_load(path.read_text())


def launcher_check(config: dict) -> dict:
    """What ``ray up`` does to a config before it contacts the cloud (ray.autoscaler._private.
    commands.create_or_update_cluster and _bootstrap_config): the provider must be known, the
    config is merged with the provider's defaults (prepare_config), then checked against
    ray-schema.json and the cross-field rules (validate_config). Raises on an invalid config."""
    from ray.autoscaler._private.providers import _NODE_PROVIDERS
    from ray.autoscaler._private.util import prepare_config, validate_config

    if _NODE_PROVIDERS.get(config["provider"]["type"]) is None:
        raise ValueError(f"unknown provider type {config['provider']['type']!r}")
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def pinned_versions() -> tuple[str, SpecifierSet]:
    """(the pinned Ray version, requires-python) from pyproject.toml."""
    text = (ROOT / "pyproject.toml").read_text()
    ray_pins = re.findall(r'"ray(?:\[[^\]]*\])?==([^"]+)"', text)
    assert len(ray_pins) == 1, ray_pins
    return ray_pins[0], SpecifierSet(re.search(r'^requires-python = "([^"]+)"', text, re.M).group(1))


def version_problems(config: dict) -> list[str]:
    """Why the cluster's Docker images do not match pyproject.toml (empty: they match)."""
    ray_version, requires_python = pinned_versions()
    docker = config.get("docker", {})
    images = {k: docker[k] for k in ("image", "head_image", "worker_image") if k in docker}
    for name, node_type in config["available_node_types"].items():
        if "worker_image" in node_type.get("docker", {}):
            images[f"{name}.worker_image"] = node_type["docker"]["worker_image"]
    if not images:
        return ["no Docker image: the nodes' Ray and Python versions are not pinned"]
    problems = []
    for key, image in images.items():
        m = re.fullmatch(r"rayproject/ray(?:-ml)?:(\d+\.\d+\.\d+)-py(\d)(\d+)(?:-\w+)?", image)
        if not m:
            problems.append(f"{key}: {image!r} is not a rayproject/ray:<version>-py<NN>[-<variant>] image")
            continue
        if m.group(1) != ray_version:
            problems.append(f"{key}: {image!r} has Ray {m.group(1)}, pyproject.toml pins ray=={ray_version}")
        python = f"{m.group(2)}.{m.group(3)}"
        if python not in requires_python:
            problems.append(f"{key}: {image!r} has Python {python}, pyproject.toml requires {requires_python}")
    return problems


# -- cluster.yaml ----------------------------------------------------------------------


def test_cluster_yaml_passes_the_launchers_validation():
    config = load_cluster()
    prepared = launcher_check(config)
    assert config["provider"]["type"] == "aws"
    types = prepared["available_node_types"]
    head = prepared["head_node_type"]
    workers = {k: v for k, v in types.items() if k != head}
    assert types[head]["resources"].get("GPU", 0) == 0, "the head is a CPU node"
    assert any(v["resources"].get("GPU", 0) >= 1 and v["min_workers"] < v["max_workers"] for v in workers.values()), (
        "an autoscaling GPU worker type"
    )


BROKEN = {
    "misspelt top-level key": lambda c: c.update(max_worker=c.pop("max_workers")),
    "head type not among the node types": lambda c: c.update(head_node_type="cpu_head"),
    "node type without resources": lambda c: c["available_node_types"]["gpu_worker"].pop("resources"),
    "GPU count as a string": lambda c: c["available_node_types"]["gpu_worker"]["resources"].update(GPU="1"),
    "more minimum workers than max_workers": lambda c: c["available_node_types"]["gpu_worker"].update(min_workers=9),
    "unknown docker option": lambda c: c["docker"].update(imag="rayproject/ray:2.60.0-py311-gpu"),
    "unknown provider": lambda c: c["provider"].update(type="nimbus"),
}


@pytest.mark.parametrize("breakage", list(BROKEN))
def test_a_broken_copy_is_rejected(breakage):
    config = load_cluster()
    BROKEN[breakage](config)
    with pytest.raises((jsonschema.ValidationError, ValueError, NotImplementedError)):
        launcher_check(config)


def test_docker_image_matches_the_pinned_ray_and_python():
    assert version_problems(load_cluster()) == []


@pytest.mark.parametrize(
    "image,problem",
    [
        ("rayproject/ray:2.59.0-py311-gpu", "has Ray 2.59.0"),
        ("rayproject/ray:2.60.0-py39-gpu", "has Python 3.9"),
        ("rayproject/ray:latest-gpu", "is not a rayproject/ray"),
    ],
)
def test_a_mismatched_image_is_reported(image, problem):
    config = load_cluster()
    config["docker"]["image"] = image
    assert any(problem in p for p in version_problems(config)), version_problems(config)


def test_nodes_install_the_project_with_the_script_ci_runs():
    """Every node, the node image and CI's scripts/setup.sh install through scripts/install.sh."""
    config = load_cluster()
    node_install = "bash scripts/install.sh python qlora"  # qlora: bitsandbytes, for model.finetune=qlora
    assert config["setup_commands"][0] == f"cd /home/ray/mssr && {node_install}"
    assert not config.get("head_setup_commands") and not config.get("worker_setup_commands")
    assert "bash scripts/install.sh .venv/bin/python test" in (ROOT / "scripts" / "setup.sh").read_text()
    assert "bash scripts/setup.sh" in (ROOT / ".ci" / "run").read_text()
    dockerfile = (ROOT / "docker" / "node.Dockerfile").read_text()
    assert f"FROM {config['docker']['image']}\n" in dockerfile
    assert f"RUN {node_install}\n" in dockerfile and "WORKDIR /home/ray/mssr\n" in dockerfile
    assert config["file_mounts"]["/home/ray/mssr"] == "."


def test_gpu_nodes_name_their_ami_and_instance_profile():
    """The two fields a user must fill in are there, as fields (not comments), with placeholders
    that ``ray up`` cannot mistake for real values."""
    node = load_cluster()["available_node_types"]["gpu_worker"]["node_config"]
    assert node["ImageId"].startswith("ami-REPLACE")
    assert re.fullmatch(
        r"arn:aws:iam::ACCOUNT_ID:instance-profile/ray-autoscaler-v1", node["IamInstanceProfile"]["Arn"]
    )
    text = CLUSTER_YAML.read_text()
    assert text.count("REQUIRED:") == 2 and "driver 580" in text


def test_no_open_ports_no_credentials_and_token_authentication():
    config = load_cluster()
    text = CLUSTER_YAML.read_text()
    # no inbound rules beyond the launcher's own (SSH, and traffic inside the cluster)
    assert "security_group" not in config["provider"]
    for bad in ("aws_access_key_id", "aws_secret_access_key", "AKIA", "MLFLOW_TRACKING_PASSWORD", "RAY_AUTH_TOKEN="):
        assert bad not in text, bad
    for commands in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        start = next(c for c in commands if "ray start" in c)
        assert "RAY_AUTH_MODE=token" in start and "RAY_AUTH_TOKEN_PATH=" in start


# -- the driver's cluster settings ------------------------------------------------------


def test_use_gpu_needs_local_gpus_only_without_a_cluster(monkeypatch):
    import torch

    from mssr.config import Config
    from mssr.errors import ConfigError
    from pipelines.preflight import check_gpus

    cfg = Config.model_validate({"train": {"use_gpu": True, "num_workers": 2}})
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        check_gpus(cfg)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match="needs 2 GPUs and this machine has 1"):
        check_gpus(cfg)
    # on a cluster the driver may run on a CPU head node: Ray places the GPU workers
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    check_gpus(cfg)


# -- multi-node rehearsal ----------------------------------------------------------------


def _rehearse(out: Path) -> tuple[int, str, str]:
    """Run scripts/rehearse_multinode.sh into ``out``: its exit status, its stdout, and the
    tail of both streams for assertion messages."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MSSR_STORAGE", "MLFLOW_"))}
    env |= {"PYTHON": sys.executable, "PYTHONPATH": str(ROOT)}
    # its own process group: on a timeout, SIGTERM reaches the script (whose trap stops both
    # nodes and the S3 server) and the processes it started, and nothing else
    proc = subprocess.Popen(
        ["bash", str(ROOT / "scripts" / "rehearse_multinode.sh"), str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=1500)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
        stdout = "TIMED OUT after 1500 s\n" + stdout
    return proc.returncode, stdout, stdout[-6000:] + stderr[-4000:]


def _check_nothing_left_running(out: Path, log: str) -> None:
    """The cluster and the S3 server are gone, whatever happened."""
    import psutil

    assert (out / "ray_temp_dir").is_file(), log
    ray_dir = (out / "ray_temp_dir").read_text().strip()

    def left_running():
        return [p.pid for p in psutil.process_iter(["cmdline"]) if any(ray_dir in a for a in (p.info["cmdline"] or []))]

    for _ in range(20):  # worker processes exit a moment after their raylet
        if not left_running():
            break
        time.sleep(1)
    assert left_running() == [], f"Ray processes left running: {left_running()}"


def _check_bucket(out: Path, summary: dict) -> None:
    """Checkpoints and MLflow's artifacts in the bucket, under the run's prefixes and nowhere else."""
    from mlflow import MlflowClient

    keys = [k for k in (out / "bucket.txt").read_text().split() if not k.endswith("/")]  # no folder markers
    assert {k.split("/")[0] for k in keys} == {"storage", "mlflow"}, keys
    assert all(k.startswith(("storage/rehearsal/train/", "mlflow/")) for k in keys), keys
    assert any(k.startswith("storage/rehearsal/train/task_04/") for k in keys)
    run = MlflowClient(tracking_uri=f"sqlite:///{out}/mlflow.db").get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.metrics["ap"] == pytest.approx(summary["ap"])
    assert run.info.artifact_uri == f"s3://rehearsal/mlflow/{run.info.run_id}/artifacts"
    artifacts = {k.removeprefix(f"mlflow/{run.info.run_id}/artifacts/") for k in keys if k.startswith("mlflow/")}
    assert {"accuracy_matrix.png", "loss_matrix.json"} <= artifacts, artifacts
    assert any(k.startswith("mlflow/") and k.endswith("/MLmodel") for k in keys), keys  # the logged model


@pytest.mark.e2e
def test_multinode_rehearsal_in_s3_survives_a_killed_worker_and_a_stopped_driver(tmp_path, tiny_run):
    """Two Ray nodes that share only an S3 bucket (moto's server); node 2's worker is SIGKILLed
    mid-task, then the driver gets Ctrl-C and a second job resumes it. The run finishes with the
    matrices and plans of the single-node run of the same seed; checkpoints and MLflow artifacts
    are in the bucket, the model is exported from it, and nothing is written elsewhere."""
    out = tmp_path / "shared"
    returncode, stdout, log = _rehearse(out)
    _check_nothing_left_running(out, log)
    assert returncode == 0, log
    assert "rehearsal: OK" in stdout and "rehearsal: cluster stopped" in stdout
    assert "node 2 sees none of" in stdout and "rehearsal: killed rank 1" in stdout, log
    assert "Ctrl-C to the driver" in stdout and "a second job resumes it" in stdout, log

    summary = json.loads((out / "summary.json").read_text())
    T = len(summary["tasks"])
    assert len(summary["accuracy_matrix"]) == T + 1 and all(len(r) == T for r in summary["accuracy_matrix"])
    run_dir = out / "runs" / "rehearsal"
    nodes = [json.loads((run_dir / "workers" / f"rank_{r}.json").read_text()) for r in (0, 1)]
    assert nodes[0]["node_id"] != nodes[1]["node_id"], nodes
    # one restore after the kill at step 20, one on --resume after the stop at step 28; each from
    # the last checkpoint Ray Train had recorded by then, which on a loaded machine can be a few
    # steps behind (CI saw 16 and 18 where an idle machine gives 18 and 24); the run is the
    # single-node run
    restores = [json.loads(line) for line in (run_dir / "restores.jsonl").read_text().splitlines()]
    assert len(restores) == 2, restores
    assert restores[0]["step"] < 20 and restores[0]["step"] <= restores[1]["step"] < 28, restores
    assert same_matrix(summary["accuracy_matrix"], tiny_run[1]["accuracy_matrix"])
    np.testing.assert_allclose(summary["loss_matrix"], tiny_run[1]["loss_matrix"], atol=1e-6)
    single = (tiny_run[0] / "tiny" / "plans" / "rank_0.jsonl").read_text()
    assert (run_dir / "plans" / "rank_0.jsonl").read_text() == single

    _check_bucket(out, summary)
    # on the head's disk: the run directory, the MLflow store and what the script itself writes
    assert sorted(p.name for p in out.iterdir()) == [
        "bucket.txt",
        "export",
        "head_only",
        "job_resume.log",
        "job_run.log",
        "mlflow.db",
        "ray_temp_dir",
        "runs",
        "summary.json",
    ]
    assert [p.name for p in (out / "runs").iterdir()] == ["rehearsal"]
    assert not (run_dir / "ray").exists() and not (run_dir / "pool").exists()
    assert json.loads((out / "export" / "adapter_config.json").read_text())["peft_type"] == "LORA"
