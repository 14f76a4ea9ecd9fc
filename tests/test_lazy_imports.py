"""Rendering libraries load where something is rendered, not with every process (issue 11:
an idle API process under 150 MB RSS, a worker under 120 MB).

Each check runs in a fresh interpreter: this test process has long imported everything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# What an API process and a worker process import before their first request or task.
STARTUP = {
    "api": "from app.main import create_app; create_app()",
    "worker": "import app.jobs.runner",
    "cli": "import app.cli",
}
# PyAV carries FFmpeg's shared libraries (about 16 MB resident); numpy is not ours to load.
RENDERING = ["av", "numpy"]


def _loaded(code: str, modules: list[str], tmp_path: os.PathLike[str]) -> list[str]:
    probe = (
        f"{code}\nimport json, sys\nprint(json.dumps([m for m in {modules!r} if m in sys.modules]))"
    )
    # The embedded defaults (SQLite under a var dir of its own): nothing here connects.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENGATE_")}
    env |= {"GENGATE_ENV": "test", "GENGATE_VAR_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    loaded: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded


@pytest.mark.parametrize("process", sorted(STARTUP))
def test_startup_does_not_import_rendering_libraries(process: str, tmp_path: os.PathLike[str]):
    assert _loaded(STARTUP[process], RENDERING, tmp_path) == []


@pytest.mark.parametrize("process", sorted(STARTUP))
def test_startup_does_not_import_pillow(process: str, tmp_path: os.PathLike[str]):
    assert _loaded(STARTUP[process], ["PIL"], tmp_path) == []


def test_rendering_loads_them_where_used(tmp_path: os.PathLike[str]):
    """The probe above can see a lazy import happen: rendering a video loads PyAV."""
    render = (
        "from app.providers.local_video import render_video\n"
        "render_video('a probe', width=64, height=64, duration_s=0.2, source=None, audio=False)"
    )
    assert _loaded(render, ["av", "PIL"], tmp_path) == ["av", "PIL"]
