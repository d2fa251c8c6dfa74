"""A model named by hub id is downloaded through huggingface_hub's real download path, from a
local stand-in for the Hub (``tests/fake_hub.py``), pinned to a commit, and loads for training.
Each check runs in a fresh process, as a user's would: huggingface_hub reads ``HF_ENDPOINT``
and ``HF_HUB_OFFLINE`` once, when it is imported."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from mssr.models import prepare_tiny_model
from tests import fake_hub
from tests.conftest import ROOT


@pytest.fixture
def hub(tmp_path):
    """The tiny model published as ``acme/tiny-chat`` on a local hub, and the environment of a
    user online with a token and an empty Hugging Face cache."""
    shutil.copytree(prepare_tiny_model(0), tmp_path / "hub" / "acme" / "tiny-chat")
    server, endpoint, requests = fake_hub.serve(tmp_path / "hub")
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(HF_ENDPOINT=endpoint, HF_HUB_CACHE=str(tmp_path / "hf-cache"), HF_TOKEN="hf_test_token")
    env["PYTHONPATH"] = str(ROOT)
    yield env, requests
    server.shutdown()
    server.server_close()


def _python(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


DOWNLOAD_AND_LOAD = """
import json
from mssr.config import ModelConfig
from mssr.models import load_model, pinned_revision
said = []
commit = pinned_revision("acme/tiny-chat", None, log=said.append)
print(json.dumps({"commit": commit, "said": said}), flush=True)
model, tok = load_model(ModelConfig(name="acme/tiny-chat", revision=commit))
print(json.dumps({"layers": model.base_model.model.config.num_hidden_layers, "trainable": sum(
    p.numel() for p in model.parameters() if p.requires_grad)}))
"""


def test_hub_model_downloads_once_with_the_token_and_pins_its_commit(hub):
    env, requests = hub
    proc = _python(DOWNLOAD_AND_LOAD, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    pinned, loaded = (json.loads(line) for line in proc.stdout.splitlines()[-2:])
    assert pinned == {
        "commit": fake_hub.COMMIT,
        "said": ["downloading acme/tiny-chat from the Hugging Face Hub into its cache (once)"],
    }
    assert loaded["layers"] == 2 and loaded["trainable"] > 0
    files = [path for method, path, _ in requests if method == "GET" and "/resolve/" in path]
    assert sorted(p.rsplit("/", 1)[1] for p in files) == sorted(
        p.name for p in prepare_tiny_model(0).iterdir()
    )  # each file once: the load after the download found them in the cache
    assert all(auth == "Bearer hf_test_token" for _, path, auth in requests if "acme" in path)

    requests.clear()
    offline = dict(env, HF_HUB_OFFLINE="1")  # the same commit, later, with no network: from the cache
    proc = _python(
        DOWNLOAD_AND_LOAD.replace(
            'pinned_revision("acme/tiny-chat", None', 'pinned_revision("acme/tiny-chat", "' + fake_hub.COMMIT + '"'
        ),
        offline,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.splitlines()[-2])["said"] == [] and requests == []


def test_missing_hub_model_and_offline_cache_miss_are_one_line_errors(hub):
    env, requests = hub
    check = """
from mssr.errors import ModelError
from mssr.models import pinned_revision
try:
    pinned_revision({name!r}, None)
except ModelError as e:
    print(e)
"""
    missing = _python(check.format(name="acme/nope"), env)
    assert missing.stdout.splitlines()[-1].startswith("model.name: cannot download hub model 'acme/nope': ")
    offline = _python(check.format(name="acme/tiny-chat"), dict(env, HF_HUB_OFFLINE="1"))
    assert "is not in the local Hugging Face cache and HF_HUB_OFFLINE is set" in offline.stdout, offline.stderr[-2000:]
    assert not [r for r in requests if "tiny-chat" in r[1]]  # offline: no request at all
