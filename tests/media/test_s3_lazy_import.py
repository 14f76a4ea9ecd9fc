"""The S3 client loads only with the s3 media backend, and there only at the first file:
idle processes stay within their memory budget (an API process under 150 MB RSS, a worker
under 120 MB), which the client's 10 MB would break on the API side.

Each check runs in a fresh interpreter: this test process has long imported everything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# What an API process and a worker process import before their first request or task, and
# the store each builds at start (app.runtime).
STARTUP = {
    "api": "from app.main import create_app; create_app()",
    "worker": "import app.jobs.runner",
}
OPEN_STORE = (
    "from app.core.config import Settings\n"
    "from app.media.stores import open_media_store\n"
    "store = open_media_store(Settings(_env_file=None))\n"
)
S3_CLIENTS = ["obstore", "boto3", "botocore", "aioboto3"]


def _loaded(code: str, tmp_path: Path, **env: str) -> list[str]:
    probe = (
        f"{code}\nimport json, sys\n"
        f"print(json.dumps([m for m in {S3_CLIENTS!r} if m in sys.modules]))"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GENGATE_")}
    clean |= {"GENGATE_ENV": "test", "GENGATE_VAR_DIR": str(tmp_path), **env}
    done = subprocess.run(
        [sys.executable, "-c", probe], env=clean, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    loaded: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded


@pytest.mark.parametrize("process", sorted(STARTUP))
def test_the_local_backend_never_imports_an_s3_client(process: str, tmp_path: Path) -> None:
    assert _loaded(STARTUP[process] + "\n" + OPEN_STORE, tmp_path) == []


def test_the_s3_backend_imports_obstore_at_its_first_file(tmp_path: Path) -> None:
    """Not at start: an idle process on the s3 backend keeps its memory too. The probe
    above can see the lazy import happen."""
    s3 = {
        "GENGATE_MEDIA_BACKEND": "s3",
        "GENGATE_S3_BUCKET": "gengate-probe",
        "GENGATE_S3_ENDPOINT_URL": "http://127.0.0.1:9",  # nothing listens: refused at once
    }
    assert _loaded(STARTUP["api"] + "\n" + OPEN_STORE, tmp_path, **s3) == []
    first_read = (
        OPEN_STORE
        + "try:\n    store.read_bytes('2026/01/01/task_1/0.png')\nexcept Exception:\n    pass\n"
    )
    assert _loaded(first_read, tmp_path, **s3) == ["obstore"]
