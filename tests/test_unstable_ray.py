"""The private Ray APIs behind ``pipelines/unstable_ray.py``: each is still in the installed
Ray (an upgrade that drops one fails here, loudly), and each function keeps a run going
without it (the module simulated missing)."""

import sys

import pytest
from ray.exceptions import RayActorError

from pipelines import unstable_ray


def test_the_installed_ray_still_has_every_private_api_used():
    import ray._private.node
    import ray._private.worker
    from ray._private.state import state
    from ray.core.generated import gcs_pb2

    assert len(unstable_ray.worker_death_errors()) == 2
    assert hasattr(ray._private.worker, "_global_node") and hasattr(ray._private.node.Node, "get_logs_dir_path")
    assert unstable_ray.quiet_train_report_logger() is True
    assert hasattr(state, "_connect_and_get_accessor")
    table = gcs_pb2.PlacementGroupTableData
    assert {"placement_group_id", "state", "creator_actor_id", "creator_actor_dead", "is_detached"} <= set(
        table.DESCRIPTOR.fields_by_name
    )
    assert all(hasattr(table, s) for s in ("PENDING", "PREPARED", "CREATED", "RESCHEDULING"))
    assert unstable_ray.ray_data_logging_config() == str(unstable_ray.RAY_DATA_LOGGING)


@pytest.mark.parametrize(
    "module",
    [
        "ray.train.v2._internal.exceptions",
        "ray._private.worker",
        "ray.train.v2._internal.execution",
        "ray._private.state",
    ],
)
def test_each_function_falls_back_when_its_module_is_gone(monkeypatch, module):
    monkeypatch.setitem(sys.modules, module, None)  # importing it now raises ImportError
    assert unstable_ray.worker_death_errors()[0] is RayActorError
    assert isinstance(unstable_ray.session_logs_dir(), str)
    if module == "ray.train.v2._internal.exceptions":
        assert unstable_ray.worker_death_errors() == (RayActorError,)
    if module == "ray._private.worker":
        assert unstable_ray.session_logs_dir() == unstable_ray.SESSION_LOGS_FALLBACK
    if module == "ray.train.v2._internal.execution":
        assert unstable_ray.quiet_train_report_logger() is False
    if module == "ray._private.state":
        assert list(unstable_ray.placement_group_records()) == []


def test_a_logging_layout_naming_a_class_ray_lacks_is_not_used(tmp_path, monkeypatch):
    layout = tmp_path / "layout.yaml"
    layout.write_text(unstable_ray.RAY_DATA_LOGGING.read_text().replace("PlainRayHandler", "GoneHandler"))
    monkeypatch.setattr(unstable_ray, "RAY_DATA_LOGGING", layout)
    assert unstable_ray.ray_data_logging_config() is None
