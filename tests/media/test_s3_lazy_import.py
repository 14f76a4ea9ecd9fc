"""The S3 client loads only with the s3 media backend: the local backend's processes stay
within their memory budget (an idle API process under 150 MB RSS, a worker under 120 MB).

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


def test_the_s3_backend_imports_obstore_when_its_store_is_opened(tmp_path: Path) -> None:
    """The probe above can see the lazy import happen."""
    s3 = {"GENGATE_MEDIA_BACKEND": "s3", "GENGATE_S3_BUCKET": "gengate-probe"}
    assert _loaded(STARTUP["api"], tmp_path, **s3) == []
    assert _loaded(OPEN_STORE, tmp_path, **s3) == ["obstore"]
