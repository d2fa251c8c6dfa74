"""A Tune trial that fits a ``TorchTrainer`` and is stopped by Tune (as ASHA stops one),
in a Ray started by ``pipelines.startup.init_ray``, with the orphan removal ``mssr tune`` runs. Prints, as
JSON, the cluster's CPUs and how many are free again after the stop.

    python tests/stopped_trial.py STORAGE_DIR
"""

import json
import os
import sys
import time

os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")

import ray  # noqa: E402
from ray import tune  # noqa: E402

from mssr.config import load_config  # noqa: E402
from pipelines.placement_groups import removing_orphaned_placement_groups  # noqa: E402
from pipelines.startup import init_ray  # noqa: E402

STORAGE = sys.argv[1]


def loop(config):
    for i in range(600):
        time.sleep(0.5)
        ray.train.report({"reports": i + 1})


def trial(params):
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    TorchTrainer(
        loop,
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.45}),
        run_config=RunConfig(name="train", storage_path=STORAGE, callbacks=[TuneReportCallback()]),
    ).fit()


if __name__ == "__main__":
    init_ray(load_config(os.path.join(os.path.dirname(__file__), "..", "configs", "tiny.yaml")))
    total = ray.cluster_resources()["CPU"]
    tuner = tune.Tuner(
        tune.with_resources(trial, {"CPU": 0.05}),
        param_space={},
        run_config=tune.RunConfig(name="tune", storage_path=STORAGE, stop={"reports": 2}, verbose=0),
    )
    with removing_orphaned_placement_groups():  # in a sweep, more trials would follow
        tuner.fit()
        deadline, free = time.time() + 30, 0.0
        while time.time() < deadline:
            free = ray.available_resources().get("CPU", 0.0)
            if free >= total:
                break
            time.sleep(1)
    print(json.dumps({"total": total, "free": free}))
