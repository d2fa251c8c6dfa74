import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MSSR = [sys.executable, "-m", "pipelines.cli"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def write_jsonl(tmp_path):
    """write_jsonl("name.jsonl", [row, ...] or raw text) -> path"""
    import json

    def write(name, rows):
        p = tmp_path / name
        if isinstance(rows, (str, bytes)):
            p.write_bytes(rows.encode() if isinstance(rows, str) else rows)
        else:
            p.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return p

    return write


def same_matrix(a, b) -> bool:
    """Two accuracy or loss matrices as a run writes them: equal cell for cell, an unscored
    (NaN) cell equal only to another unscored cell. (Python's list equality cannot say it:
    two NaNs read from JSON are never equal.)"""
    import numpy as np

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=True))


def run_cli(*args, cwd, timeout=900, env=None):
    """Run the real ``mssr`` command in a subprocess and wait for it (``env``: added variables)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run([*MSSR, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def start_cli(*args, cwd, log_path, env=None):
    """Start the real ``mssr`` command in the background, output to ``log_path``."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    log = open(log_path, "w")  # noqa: SIM115 (open for as long as the process writes to it)
    return subprocess.Popen([*MSSR, *args], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One uninterrupted run of configs/tiny.yaml, shared by the end-to-end tests."""
    out = tmp_path_factory.mktemp("e2e")
    proc = run_cli(
        "run",
        str(ROOT / "configs" / "tiny.yaml"),
        f"run.output_dir={out}",
        "run.name=tiny",
        "--summary-json",
        str(out / "summary.json"),
        cwd=out,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (out / "stderr.txt").write_text(proc.stderr)  # for the quiet-console test
    return out, json.loads((out / "summary.json").read_text()), proc.stdout


class MlflowServer:
    """A real ``mlflow server`` on a free localhost port (sqlite backend, proxied artifacts),
    which a test may stop and start again on the same port and store."""

    def __init__(self, store: Path):
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.store = store
        store.mkdir(parents=True, exist_ok=True)
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self) -> None:
        import signal
        import subprocess
        import urllib.request

        log = open(self.store / "server.log", "a")  # noqa: SIM115 (open for as long as the server writes to it)
        self.proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "mlflow"),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--backend-store-uri",
                f"sqlite:///{self.store / 'mlflow.db'}",
                "--artifacts-destination",
                str(self.store / "artifacts"),
                "--workers",
                "1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.store,
            start_new_session=True,  # its own process group: stop() ends the server's workers too
        )
        self._signal = signal
        deadline = time.time() + 300  # a busy 2-core machine has taken over 2 minutes
        while True:
            try:
                if urllib.request.urlopen(f"{self.uri}/health", timeout=2).read() == b"OK":
                    return
            except OSError:
                pass
            assert self.proc.poll() is None and time.time() < deadline, (self.store / "server.log").read_text()[-2000:]
            time.sleep(1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, self._signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:  # a graceful shutdown waiting on an open connection
                os.killpg(self.proc.pid, self._signal.SIGKILL)
                self.proc.wait(timeout=30)
        self.proc = None


@pytest.fixture
def mlflow_server_process(tmp_path):
    """An ``MlflowServer``, started; stopped at the end."""
    server = MlflowServer(tmp_path / "server")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def mlflow_server(mlflow_server_process):
    """The tracking URI of a real ``mlflow server`` (``MlflowServer``)."""
    return mlflow_server_process.uri


def chromium_path() -> str:
    """Debian's chromium for the browser checks; skipped where it is missing, failed in CI."""
    import shutil

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium is missing: scripts/setup.sh installs it when run as root")
        pytest.skip("no chromium on this machine (scripts/setup.sh installs it when run as root)")
    return chromium


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 API on a free localhost port (moto's server, in a thread of this process), and
    the environment that points pyarrow and boto3 at it: yields ``(endpoint, env)``. Buckets are
    created with ``make_bucket(env, name)``."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    yield endpoint, env
    server.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """This process's environment pointed at the ``s3_server`` (pyarrow and boto3 read it)."""
    _, env = s3_server
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


def make_bucket(env: dict, name: str):
    """A new bucket on the ``s3_server``; returns a pyarrow filesystem for writing into it."""
    import pyarrow.fs as pafs

    fs = pafs.S3FileSystem(
        endpoint_override=env["AWS_ENDPOINT_URL"],
        access_key=env["AWS_ACCESS_KEY_ID"],
        secret_key=env["AWS_SECRET_ACCESS_KEY"],
        region=env["AWS_DEFAULT_REGION"],
        allow_bucket_creation=True,
    )
    fs.create_dir(name)
    return fs
