"""Where a task's rows come from: a local file, a remote file, or a Hugging Face dataset.

    data, name = read_bytes("s3://bucket/tasks/gcd/train.jsonl")   # or a local path, gs://, https://
    records = dataset_records(DatasetSource(dataset="./saved", split="test"))   # list of dicts

Remote files are read whole into memory, once, on the machine that starts the run: a task's
rows are validated before any compute starts and then travel to the workers with the run.

* ``s3://`` and ``gs://`` go through pyarrow's filesystems (the ones Ray's own storage uses),
  which take their credentials and endpoint from the usual environment: ``AWS_ACCESS_KEY_ID``,
  ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL`` (an S3-compatible server such as MinIO),
  ``AWS_DEFAULT_REGION``; ``GOOGLE_APPLICATION_CREDENTIALS`` for GCS.
* ``http://`` and ``https://`` are one GET with the standard library.
* A Hugging Face dataset is either a folder written by ``save_to_disk`` or a hub name
  (``org/name``), loaded with the ``datasets`` library; a hub name needs the network unless
  the dataset is already in the local cache.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from mssr.errors import DataError

if TYPE_CHECKING:
    from mssr.config import DatasetSource

REMOTE_SCHEMES = ("s3://", "gs://", "gcs://", "http://", "https://")
_HTTP_TIMEOUT_S = 60  # a stalled server fails the run's start instead of hanging it


def is_remote(location: str) -> bool:
    return location.startswith(REMOTE_SCHEMES)


def is_hub_name(name: str) -> bool:
    """``org/name`` that is no local path: a model or dataset to take from the Hugging Face Hub."""
    return not name.startswith((".", "/", "~")) and name.count("/") == 1 and not Path(name).expanduser().exists()


def read_bytes(location: str) -> bytes:
    """The whole file at ``location`` (a local path or a remote URI), or DataError naming it."""
    if location.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(location, timeout=_HTTP_TIMEOUT_S) as response:
                return response.read()
        except urllib.error.HTTPError as e:
            raise DataError(f"{location}: cannot read: HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError) as e:
            raise DataError(f"{location}: cannot read: {getattr(e, 'reason', e)}") from None
    if is_remote(location):
        import pyarrow.fs as pafs

        try:
            fs, path = pafs.FileSystem.from_uri(location)
            with fs.open_input_stream(path) as f:
                return f.read()
        except FileNotFoundError:
            raise DataError(f"{location}: file not found") from None
        except (OSError, ValueError) as e:  # pyarrow's errors for denied access, bad buckets, bad URIs
            raise DataError(f"{location}: cannot read: {str(e).splitlines()[0]}") from None
    p = Path(location)
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    return p.read_bytes()


def dataset_records(source: DatasetSource) -> list[dict]:
    """The rows of one split of a Hugging Face dataset, as dicts, in the dataset's order."""
    try:
        import datasets
    except ImportError:
        raise DataError(f"{source.dataset}: reading a Hugging Face dataset needs the datasets package") from None
    datasets.disable_progress_bars()
    folder = Path(source.dataset).expanduser()
    try:
        if folder.is_dir():
            loaded = datasets.load_from_disk(str(folder))
        else:
            if not is_hub_name(source.dataset):
                raise DataError(f"{source.dataset}: neither a save_to_disk folder nor a hub dataset name (org/name)")
            loaded = datasets.load_dataset(source.dataset, source.config, revision=source.revision)
    except DataError:
        raise
    except Exception as e:  # datasets raises many types (missing, offline, bad folder)
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
        hint = " (HF_HUB_OFFLINE is set: only cached datasets load)" if offline and not folder.is_dir() else ""
        raise DataError(f"{source.dataset}: cannot load the dataset: {str(e).splitlines()[0]}{hint}") from None
    if isinstance(loaded, datasets.DatasetDict):
        splits = list(loaded)
        if source.split is None and len(splits) == 1:
            return loaded[splits[0]].to_list()
        if source.split not in loaded:
            wanted = "name one with split" if source.split is None else f"no split {source.split!r}"
            raise DataError(f"{source.dataset}: {wanted}; the dataset has splits {', '.join(splits)}")
        return loaded[source.split].to_list()
    if source.split is not None:
        raise DataError(f"{source.dataset}: split {source.split!r} given, but the folder holds a single split")
    return loaded.to_list()
