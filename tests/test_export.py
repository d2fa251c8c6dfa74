"""mssr export on a real finished run (tiny model, real Ray, real MLflow): the adapter loads in
plain peft in a process that never imports mssr and gives the run's own final evaluation; the
merged model gives the same as the adapter; bad input is refused with one line."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mssr.config import Config
from mssr.models import load_tokenizer
from mssr.tasks import load_stream
from mssr.tokenize import PromptEncoder, encoder_options
from pipelines.cli import main
from pipelines.tracking import mlflow_client
from tests.conftest import ROOT, chromium_path, run_cli

# plain transformers + peft: each row's answer loss and whether greedy decoding reproduces the answer
PLAIN = r"""
import json, sys, torch
from transformers import AutoModelForCausalLM
folder, rows_path, kind = sys.argv[1:4]
if kind == "merged":
    model = AutoModelForCausalLM.from_pretrained(folder)
else:
    from peft import PeftModel
    base = json.load(open(folder + "/adapter_config.json"))["base_model_name_or_path"]
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), folder)
model.eval()
rows = []
with torch.no_grad():
    for ids, plen in json.load(open(rows_path)):
        x = torch.tensor([ids])
        logits, target = model(input_ids=x).logits[0, plen - 1 : -1], x[0, plen:]
        loss = torch.nn.functional.cross_entropy(logits.float(), target)
        rows.append([float(loss), bool((logits.argmax(-1) == target).all())])
print(json.dumps({"rows": rows, "mssr_imported": any(m == "mssr" or m.startswith("mssr.") for m in sys.modules)}))
"""


def _plain(folder, rows_path, kind):
    proc = subprocess.run(
        [sys.executable, "-c", PLAIN, str(folder), str(rows_path), kind], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not out["mssr_imported"]
    return np.array([r[0] for r in out["rows"]]), np.array([r[1] for r in out["rows"]])


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    out, summary, _ = tiny_run
    run_dir = out / "tiny"
    where = tmp_path_factory.mktemp("export")
    assert main(["export", str(run_dir), "--out", str(where / "adapter")]) == 0
    assert main(["export", str(run_dir), "--merge", "--out", str(where / "merged")]) == 0
    cfg = Config.model_validate(__import__("yaml").safe_load((run_dir / "config.yaml").read_text()))
    last = load_stream(cfg.stream)[-1]
    enc = PromptEncoder(load_tokenizer(cfg.model), **encoder_options(cfg.stream)).encode_many(
        [e.prompt for e in last.test], [e.answer for e in last.test]
    )
    rows_path = where / "rows.json"
    rows_path.write_text(json.dumps([[list(map(int, i)), int(p)] for i, p in zip(enc["input_ids"], enc["prompt_len"])]))
    return run_dir, summary, where, rows_path


@pytest.mark.e2e
def test_the_adapter_in_plain_peft_gives_the_runs_final_evaluation(exported):
    run_dir, summary, where, rows_path = exported
    files = {p.name for p in (where / "adapter").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "README.md"} <= files
    losses, reproduced = _plain(where / "adapter", rows_path, "adapter")
    final = json.loads((run_dir / "eval_rows.json").read_text())
    assert losses == pytest.approx(final["losses"][-1][-1], rel=0.01)  # the run scored in bf16 autocast
    assert float(np.mean(reproduced)) == pytest.approx(summary["accuracy_matrix"][-1][-1])
    card = (where / "adapter" / "README.md").read_text()
    n = len(summary["tasks"])
    assert f"after task {n} of {n}" in card and "Accuracy matrix" in card and "replay:" in card


@pytest.mark.e2e
def test_the_merged_model_gives_the_same_as_the_adapter(exported):
    _, _, where, rows_path = exported
    assert (where / "merged" / "model.safetensors").is_file() and (where / "merged" / "config.json").is_file()
    adapter_losses, _ = _plain(where / "adapter", rows_path, "adapter")
    merged_losses, _ = _plain(where / "merged", rows_path, "merged")
    assert merged_losses == pytest.approx(adapter_losses, abs=1e-4)


@pytest.mark.e2e
def test_bad_export_requests_get_one_line_and_exit_2(exported, tmp_path, capsys):
    run_dir, _, where, _ = exported
    unfinished = tmp_path / "unfinished"
    shutil.copytree(run_dir, unfinished, ignore=shutil.ignore_patterns("ray"))
    (unfinished / "summary.json").unlink()
    cases = [
        ([str(unfinished), "--out", str(tmp_path / "a")], "has not finished"),
        ([str(run_dir), "--after-task", "7", "--out", str(tmp_path / "b")], "no checkpoint after task 7"),
        ([str(run_dir), "--after-task", "0", "--out", str(tmp_path / "c")], "numbered from 1"),
        ([str(run_dir), "--out", str(where / "adapter")], "is not empty"),
        ([str(tmp_path), "--out", str(tmp_path / "d")], "not a run directory"),
    ]
    for args, message in cases:
        assert main(["export", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


@pytest.mark.e2e
def test_eval_of_the_run_and_of_its_export_gives_the_runs_last_row(exported, tmp_path, capsys):
    run_dir, summary, where, _ = exported
    config = str(ROOT / "configs" / "tiny.yaml")
    rows = {}
    for name, source in (("run", run_dir), ("export", where / "adapter"), ("merged", where / "merged")):
        out = tmp_path / f"{name}.json"
        assert main(["eval", str(source), config, f"run.output_dir={tmp_path}", "--json", str(out)]) == 0
        rows[name] = json.loads(out.read_text())
    for row in rows.values():
        assert row["tasks"] == summary["tasks"]
        assert row["accuracy_row"] == pytest.approx(summary["accuracy_matrix"][-1])
        assert row["loss_row"] == pytest.approx(summary["loss_matrix"][-1], rel=0.01)  # rows batched otherwise
    client = mlflow_client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("mssr").experiment_id], "tags.`mssr.kind` = 'evaluation'")
    assert len(runs) == 3 and all("score/mean" in r.data.metrics for r in runs)
    assert main(["eval", str(run_dir), config, f"run.output_dir={tmp_path}", "--after-task", "9"]) == 2
    assert "no checkpoint after task 9" in capsys.readouterr().err


_LOAD_PYFUNC = """
import json, sys
import mlflow
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model(sys.argv[2])
prompts = json.loads(sys.argv[3])
answers = model.predict(prompts)
texts = [model.unwrap_python_model().prompt_text(p) for p in prompts]
assert not [m for m in sys.modules if m.split(".")[0] in ("mssr", "pipelines")], "imported MSSR"
print(json.dumps({"answers": answers, "texts": texts}))
"""


@pytest.mark.e2e
def test_the_runs_mlflow_model_answers_as_the_run_generates(tiny_run, tmp_path):
    """The run logs its final model (on by default); MLflow loads it in a process that never
    imports MSSR, and it answers the test prompts as the run's own greedy generation does."""
    import re

    from mssr.evaluation import generate_answers
    from pipelines.export import run_model

    out, summary, stdout = tiny_run
    uri = f"sqlite:///{out / 'mlflow.db'}"
    model_uri = re.search(r"MLflow model: (\S+)", stdout).group(1)
    client = mlflow_client(uri)
    logged = client.get_logged_model(model_uri.split("/")[-1])
    assert logged.source_run_id == summary["mlflow_run_id"] and logged.name == "model"
    run_dir = out / "tiny"
    model, tok, cfg, _, _ = run_model(run_dir, None)
    prompts = [e.prompt for t in load_stream(cfg.stream) for e in t.test[:3]]
    encoder = PromptEncoder(tok, **encoder_options(cfg.stream))
    expected, _ = generate_answers(model, encoder, prompts, cfg.eval.max_new_tokens, batch_size=1)
    proc = subprocess.run(
        [sys.executable, "-c", _LOAD_PYFUNC, uri, model_uri, json.dumps(prompts)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    # the prompts exactly as the run wrote them, and the same greedy answers (the tiny random
    # model may answer with the end of sequence at once: the prompt check keeps the test meaningful)
    assert got["texts"] == [encoder.prompt_text(p) for p in prompts]
    assert got["answers"] == expected


@pytest.mark.e2e
def test_register_adds_a_version_seen_on_the_models_page(tmp_path, mlflow_server):
    from mlflow import MlflowClient

    out = tmp_path / "out"
    args = ["run", str(ROOT / "configs" / "tiny.yaml"), f"run.output_dir={out}", f"mlflow.tracking_uri={mlflow_server}"]
    first = run_cli(
        *args, "run.name=week1", "--register", "tiny-continual", "--summary-json", str(out / "w1.json"), cwd=tmp_path
    )
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "registered as 'tiny-continual'" in first.stdout
    versions = MlflowClient(mlflow_server).search_model_versions("name='tiny-continual'")
    run_id = json.loads((out / "w1.json").read_text())["mlflow_run_id"]
    assert [(v.version, v.run_id) for v in versions] == [("1", run_id)]
    refused = run_cli(*args, "run.name=x", "mlflow.log_model=false", "--register", "tiny-continual", cwd=tmp_path)
    assert refused.returncode == 2 and "--register: the run logs no model" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1

    chromium = chromium_path()
    from playwright.sync_api import sync_playwright

    shots = Path(os.environ.get("MSSR_TEST_ARTIFACTS", ROOT / "test-artifacts"))
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1500, "height": 900})
        page.goto(f"{mlflow_server}/#/models")
        page.get_by_text("tiny-continual", exact=True).first.wait_for(timeout=60_000)
        page.goto(f"{mlflow_server}/#/models/tiny-continual")
        page.get_by_text("Version 1", exact=True).first.wait_for(timeout=60_000)
        page.screenshot(path=str(shots / "registered_model.png"), full_page=True)
        browser.close()
    assert (shots / "registered_model.png").stat().st_size > 10_000
