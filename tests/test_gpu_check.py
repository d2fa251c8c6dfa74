"""scripts/gpu_check.py at small sizes on the CPU: the same learner, planner, collectives
(a one-process gloo group), checkpoint and evaluation code it runs on a GPU."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def test_the_gpu_check_runs_on_the_cpu_and_reports_every_figure(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--device", "cpu", "--sizes", "tiny",
         "--steps", "3", "--batch-size", "4", "--test-rows", "6", "--json", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["machine"]["device"] == "cpu"
    cases = {(r["size"], r["finetune"]): r for r in report["results"]}
    assert set(cases) == {("tiny", "lora"), ("tiny", "full")}
    for r in cases.values():
        assert r["failures"] == []
        assert r["steps"] == 6 and r["train_tokens_per_s"] > 0
        assert all(np.isfinite(r["losses_first_last"]))
        assert r["replayed"] + r["probed"] > 0
        assert 0.0 <= r["forced_vs_generate_agree"] <= 1.0 and 0.0 <= r["bf16_vs_fp32_agree"] <= 1.0
        assert r["bf16_vs_fp32_loss_diff"]["max"] < 0.5  # bf16 autocast moves a loss by little
        assert r["checkpoint_round_trip"] == "same next step"
    lora, full = cases[("tiny", "lora")], cases[("tiny", "full")]
    assert lora["trainable"] < full["trainable"] == full["params"]
    assert "tiny lora" in proc.stdout and "ok" in proc.stdout  # the table
