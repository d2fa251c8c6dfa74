"""A user's own data and model, and a model that leaves the machine, end to end: a run of a
hub model (served by a local stand-in for the Hub) on one task read from S3 (a real S3 API
on localhost) and one from a saved Hugging Face dataset with its own column names, its
checkpoints in the same S3 bucket; then its adapter and merged model (exported from the
checkpoints in S3) and its MLflow model, each loaded in a fresh process that never imports
MSSR, with an empty Hugging Face cache, finding the base by its hub id."""

import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from tests import fake_hub
from tests.conftest import make_bucket, run_cli

ROWS = [{"prompt": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(20)]
WORDS = [{"question": f"Spell the number {i} backwards.", "solution": str(i)[::-1]} for i in range(20)]


def _bf16_tiny_model(folder):
    """The tiny test model with its weights saved in bfloat16, as most hub models are."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mssr.models import prepare_tiny_model

    source = prepare_tiny_model(0)
    AutoModelForCausalLM.from_pretrained(source, dtype=torch.bfloat16).save_pretrained(folder)
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)


@pytest.fixture(scope="module")
def portable_run(tmp_path_factory, s3_server):
    import datasets

    tmp = tmp_path_factory.mktemp("portable")
    _bf16_tiny_model(tmp / "hub" / "acme" / "tiny-bf16")
    server, endpoint, requests = fake_hub.serve(tmp / "hub")
    _, aws = s3_server
    fs = make_bucket(aws, "tasks")
    for split, rows in (("train", ROWS[:16]), ("test", ROWS[16:])):
        with fs.open_output_stream(f"tasks/sums/{split}.jsonl") as f:
            f.write("".join(json.dumps(r) + "\n" for r in rows).encode())
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(WORDS[:16]), "test": datasets.Dataset.from_list(WORDS[16:])}
    ).save_to_disk(str(tmp / "words"))
    config = {
        "seed": 0,
        "model": {"name": "acme/tiny-bf16", "lora": {"r": 4, "alpha": 8}},
        "stream": {
            "tasks": [
                {"name": "sums", "train": "s3://tasks/sums/train.jsonl", "test": "s3://tasks/sums/test.jsonl"},
                {
                    "name": "words",
                    "train": {"dataset": "./words", "split": "train"},
                    "test": {"dataset": "./words", "split": "test"},
                    "columns": {"question": "prompt", "solution": "answer"},
                },
            ]
        },
        "train": {"num_workers": 1, "batch_size": 4, "storage_path": "s3://tasks/checkpoints"},
        "eval": {"max_new_tokens": 4},
        "replay": {"strategy": "fixed", "pool_per_task": 4, "samples_per_event": 2},
    }
    (tmp / "run.yaml").write_text(yaml.safe_dump(config))
    env = {**aws, "HF_ENDPOINT": endpoint, "HF_HUB_CACHE": str(tmp / "train-cache"), "HF_HUB_OFFLINE": "0"}
    env["HF_TOKEN"] = "hf_test_token"
    proc = run_cli("run", str(tmp / "run.yaml"), f"run.output_dir={tmp / 'runs'}", "run.name=port", cwd=tmp, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    exports = {}
    for kind, extra in (("adapter", []), ("merged", ["--merge"])):
        exports[kind] = tmp / "exported" / kind
        done = run_cli("export", str(tmp / "runs" / "port"), "--out", str(exports[kind]), *extra, cwd=tmp, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
    yield tmp, proc.stdout, exports, endpoint, requests
    server.shutdown()
    server.server_close()


@pytest.mark.e2e
def test_the_run_downloads_its_hub_model_once_and_pins_the_commit(portable_run):
    tmp, stdout, _, _, requests = portable_run
    assert stdout.count("downloading acme/tiny-bf16 from the Hugging Face Hub") == 1
    saved = yaml.safe_load((tmp / "runs" / "port" / "config.yaml").read_text())
    assert saved["model"]["revision"] == fake_hub.COMMIT
    # the checkpoints went to the bucket, not to the run directory; the exports read them there
    record = json.loads((tmp / "runs" / "port" / "run.json").read_text())
    assert record["checkpoints"] == "s3://tasks/checkpoints/port/train" and not (tmp / "runs" / "port" / "ray").exists()
    summary = json.loads((tmp / "runs" / "port" / "summary.json").read_text())
    assert summary["tasks"] == ["sums", "words"] and len(summary["accuracy_matrix"]) == 3
    assert all(auth == "Bearer hf_test_token" for _, path, auth in requests if "tiny-bf16" in path)


@pytest.mark.e2e
def test_the_run_continues_from_its_checkpoints_in_the_bucket(portable_run, s3_server):
    """``mssr continue`` starts from the last checkpoint in S3 and keeps its own there."""
    tmp, _, _, endpoint, _ = portable_run
    more = {
        "stream": {
            "tasks": [
                {"name": "more_sums", "train": "s3://tasks/sums/train.jsonl", "test": "s3://tasks/sums/test.jsonl"}
            ]
        }
    }
    (tmp / "more.yaml").write_text(yaml.safe_dump(more))
    env = {**s3_server[1], "HF_ENDPOINT": endpoint, "HF_HUB_CACHE": str(tmp / "train-cache"), "HF_HUB_OFFLINE": "0"}
    proc = run_cli("continue", str(tmp / "runs" / "port"), "--tasks", str(tmp / "more.yaml"), cwd=tmp, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads((tmp / "runs" / "port-cont1" / "run.json").read_text())
    assert record["continues"]["checkpoint"] == "s3://tasks/checkpoints/port/train/task_01"
    assert record["checkpoints"] == "s3://tasks/checkpoints/port-cont1/train"
    summary = json.loads((tmp / "runs" / "port-cont1" / "summary.json").read_text())
    assert summary["tasks"] == ["sums", "words", "more_sums"] and len(summary["accuracy_matrix"]) == 4
    # the first two rows are the finished run's, measured before it was continued
    first = json.loads((tmp / "runs" / "port" / "summary.json").read_text())
    assert [row[:2] for row in summary["accuracy_matrix"][:3]] == first["accuracy_matrix"]


DEPLOY = r"""
import json, sys, torch
import mlflow
from peft import AutoPeftModelForCausalLM
from transformers import AutoModelForCausalLM, AutoTokenizer
adapter, merged, tracking, model_uri = sys.argv[1:5]
prompts = ["Question: What is 16 + 16?\nAnswer: ", "Question: Spell the number 17 backwards.\nAnswer: "]
tok = AutoTokenizer.from_pretrained(adapter)
losses = {}
for kind, model in (("adapter", AutoPeftModelForCausalLM.from_pretrained(adapter)),
                    ("merged", AutoModelForCausalLM.from_pretrained(merged))):
    model.eval()
    with torch.no_grad():
        batches = [tok(p, return_tensors="pt") for p in prompts]
        losses[kind] = [float(model(**b, labels=b["input_ids"]).loss) for b in batches]
merged_dtype = str(AutoModelForCausalLM.from_pretrained(merged).dtype)
mlflow.set_tracking_uri(tracking)
pyfunc = mlflow.pyfunc.load_model(model_uri)
three = ["What is 16 + 16?", "What is 17 + 17?", "What is 18 + 18?"]
answers = pyfunc.predict(three, params={"max_new_tokens": 2, "batch_size": 2})
sampled = pyfunc.predict(["What is 16 + 16?"], params={"temperature": 0.8})
params = {p.name: p.default for p in pyfunc.metadata.get_params_schema().params}
assert not [m for m in sys.modules if m.split(".")[0] in ("mssr", "pipelines")], "imported MSSR"
out = {"losses": losses, "merged_dtype": merged_dtype, "answers": answers, "sampled": sampled, "params": params}
print(json.dumps(out))
"""


@pytest.mark.e2e
def test_adapter_merged_and_mlflow_models_load_elsewhere_by_hub_id(portable_run, tmp_path):
    tmp, stdout, exports, endpoint, requests = portable_run
    adapter_config = json.loads((exports["adapter"] / "adapter_config.json").read_text())
    assert (adapter_config["base_model_name_or_path"], adapter_config["revision"]) == (
        "acme/tiny-bf16",
        fake_hub.COMMIT,
    )
    card = (exports["adapter"] / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["base_model"] == "acme/tiny-bf16" and meta["library_name"] == "peft" and "mssr" in meta["tags"]
    assert (
        yaml.safe_load((exports["merged"] / "README.md").read_text().split("---")[1])["library_name"] == "transformers"
    )

    model_uri = re.search(r"MLflow model: (\S+)", stdout).group(1)
    requests.clear()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "PYTHONPATH"))}
    env.update(HF_ENDPOINT=endpoint, HF_HUB_CACHE=str(tmp_path / "deploy-cache"), HF_HUB_OFFLINE="0")
    tracking = f"sqlite:///{tmp / 'runs' / 'mlflow.db'}"
    args = [str(exports["adapter"]), str(exports["merged"]), tracking, model_uri]
    proc = subprocess.run(
        [sys.executable, "-c", DEPLOY, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    # the base came from the hub by its id, at the pinned commit, into the empty cache
    fetched = {path for method, path, _ in requests if method == "GET" and "/resolve/" in path}
    assert f"/acme/tiny-bf16/resolve/{fake_hub.COMMIT}/model.safetensors" in fetched
    assert got["merged_dtype"] == "torch.bfloat16"  # the base's own dtype
    assert got["losses"]["merged"] == pytest.approx(got["losses"]["adapter"], rel=0.02)
    assert len(got["answers"]) == 3 and len(got["sampled"]) == 1
    assert got["params"] == {"max_new_tokens": 4, "temperature": 0.0, "batch_size": 24}  # the run's eval settings
    model_id = model_uri.removeprefix("models:/")  # this run's model (a continuation logs its own)
    (requirements,) = [p for p in (tmp / "runs").rglob("requirements.txt") if model_id in str(p)]
    lines = requirements.read_text().splitlines()
    assert any(line.startswith("torch==") for line in lines) and not any("+" in line for line in lines)
