"""Checkpoint storage and MLflow artifacts in object storage (``pipelines.storage``), against
moto's S3 server on localhost, and the refusal of a multi-node run without durable storage on
two real Ray nodes."""

import pytest
from pydantic import ValidationError

from mssr.config import Config
from mssr.errors import ConfigError
from tests.conftest import make_bucket


def test_storage_path_from_the_config_and_mssr_storage_path_over_it(monkeypatch, tmp_path):
    from pipelines.storage import train_storage_path

    monkeypatch.delenv("MSSR_STORAGE_PATH", raising=False)
    run_dir = tmp_path / "runs" / "r1"
    assert train_storage_path(Config(), run_dir) == str(run_dir / "ray")
    cfg = Config.model_validate({"train": {"storage_path": "s3://ckpt/mssr"}})
    assert train_storage_path(cfg, run_dir) == "s3://ckpt/mssr/r1"
    monkeypatch.setenv("MSSR_STORAGE_PATH", "s3://bucket/mssr/")
    assert train_storage_path(Config(), run_dir) == train_storage_path(cfg, run_dir) == "s3://bucket/mssr/r1"


def test_storage_locations_must_be_folders_or_object_storage():
    for field in ({"train": {"storage_path": "https://host/ckpt"}}, {"mlflow": {"artifact_location": "ftp://x"}}):
        with pytest.raises(ValidationError, match="expected a folder or a URI starting with s3://"):
            Config.model_validate(field)
    Config.model_validate({"train": {"storage_path": "gs://b/p"}, "mlflow": {"artifact_location": "s3://b/m"}})


def test_a_bucket_is_written_once_before_the_run_and_a_missing_one_is_refused(s3_env, monkeypatch, tmp_path):
    """The preflight writes and deletes one object; no bucket, or no credentials, is one line
    naming the setting."""
    from pipelines.preflight import check_storage

    fs = make_bucket(s3_env, "ckpt")
    monkeypatch.delenv("MSSR_STORAGE_PATH", raising=False)
    cfg = Config.model_validate(
        {"train": {"storage_path": "s3://ckpt/mssr"}, "mlflow": {"artifact_location": "s3://ckpt/mlflow"}}
    )
    check_storage(cfg)
    import pyarrow.fs as pafs

    left = fs.get_file_info(pafs.FileSelector("ckpt", recursive=True, allow_not_found=True))
    assert [i.path for i in left if i.type == pafs.FileType.File] == []  # the probe was deleted

    with pytest.raises(ConfigError, match=r"^train.storage_path: cannot write to s3://no-such-bucket/mssr \("):
        check_storage(Config.model_validate({"train": {"storage_path": "s3://no-such-bucket/mssr"}}))
    monkeypatch.setenv("MSSR_STORAGE_PATH", "s3://no-such-bucket/x")
    with pytest.raises(ConfigError, match=r"^MSSR_STORAGE_PATH: cannot write to s3://no-such-bucket/x"):
        check_storage(Config())
    monkeypatch.delenv("MSSR_STORAGE_PATH")
    with pytest.raises(ConfigError, match=r"^mlflow.artifact_location: cannot write to s3://nope/m"):
        check_storage(Config.model_validate({"mlflow": {"artifact_location": "s3://nope/m"}}))
    check_storage(Config.model_validate({"train": {"storage_path": str(tmp_path / "local")}}))  # made with the run


def test_mlflow_artifacts_go_to_the_bucket_and_an_experiment_keeps_its_location(s3_env, tmp_path):
    """A new experiment made with ``artifact_location=s3://...`` stores a run's artifacts there
    (MLflow's S3 store, through boto3); a later run naming another location is refused."""
    import pyarrow.fs as pafs

    from pipelines.tracking import check_artifact_location, finish_run, start_run

    fs = make_bucket(s3_env, "art")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    check_artifact_location(uri, "mssr", "s3://art/mlflow")  # no store yet: nothing to compare with
    run_id = start_run(uri, "mssr", "r", {"seed": 0}, artifact_location="s3://art/mlflow")
    matrix = tmp_path / "accuracy_matrix.json"
    matrix.write_text("[[0.5]]")
    finish_run(uri, run_id, {"ap": 0.5}, artifacts=[matrix])
    stored = [
        i.path
        for i in fs.get_file_info(pafs.FileSelector("art/mlflow", recursive=True))
        if i.type == pafs.FileType.File
    ]
    assert stored == [f"art/mlflow/{run_id}/artifacts/accuracy_matrix.json"], stored
    assert not (tmp_path / "mlartifacts").exists()

    check_artifact_location(uri, "mssr", "s3://art/mlflow/")  # the same place
    check_artifact_location(uri, "mssr", None)  # unset: the experiment's own
    with pytest.raises(ConfigError, match=r"experiment 'mssr' keeps its artifacts at s3://art/mlflow"):
        check_artifact_location(uri, "mssr", "s3://other/mlflow")
    check_artifact_location(uri, "fresh", "s3://other/mlflow")  # a new experiment takes it


@pytest.mark.e2e
def test_a_cluster_of_two_nodes_without_durable_storage_is_refused(monkeypatch):
    """Two real Ray nodes on this machine (Ray's own test cluster): with the checkpoints left on
    the driver's disk the run is refused in one line; with a storage path it may go on."""
    import ray
    from ray.cluster_utils import Cluster

    from pipelines.storage import check_durable_storage

    monkeypatch.delenv("MSSR_STORAGE_PATH", raising=False)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    try:
        ray.init(address=cluster.address)
        cluster.wait_for_nodes()
        with pytest.raises(ConfigError, match=r"^train.storage_path: this Ray cluster has 2 nodes"):
            check_durable_storage(Config())
        check_durable_storage(Config.model_validate({"train": {"storage_path": "s3://bucket/mssr"}}))
    finally:
        ray.shutdown()
        cluster.shutdown()
