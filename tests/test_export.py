"""mssr export on a real finished run (tiny model, real Ray, real MLflow): the adapter loads in
plain peft in a process that never imports mssr and gives the run's own final evaluation; the
merged model gives the same as the adapter; bad input is refused with one line."""

import json
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

ROOT = Path(__file__).resolve().parent.parent

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
