"""The comparison .ci/mcp/run applies to a conformance run (.ci/mcp/compare.py).

It must fail on an unexpected failure, on an expected failure that now passes, on a
scenario that crashed before writing its checks, and on a malformed expected-failures
file, and the committed expected-failures.txt must be well formed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import sys
from pathlib import Path

import pytest

MCP_CI = Path(__file__).resolve().parents[2] / ".ci" / "mcp"
_spec = importlib.util.spec_from_file_location("mcp_ci_compare", MCP_CI / "compare.py")
assert _spec and _spec.loader
compare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare)


def _run(tmp_path: Path, results: dict[str, list[str] | None], expected: str) -> tuple[int, str]:
    """results: scenario -> check statuses, or None for a scenario that wrote no checks."""
    out_dir = tmp_path / "results"
    stdout = []
    for name, statuses in results.items():
        stdout.append(f"=== Running scenario: {name} ===")
        if statuses is None:
            continue
        scenario_dir = out_dir / f"server-{name}-2026-01-02T03-04-05-678Z"
        scenario_dir.mkdir(parents=True)
        checks = [{"id": f"{name}-{i}", "status": s} for i, s in enumerate(statuses)]
        (scenario_dir / "checks.json").write_text(json.dumps(checks))
    (tmp_path / "suite.out").write_text("\n".join(stdout) + "\n")
    (tmp_path / "expected.txt").write_text(expected)
    return _main(tmp_path, out_dir)


def _main(tmp_path: Path, out_dir: Path) -> tuple[int, str]:
    argv = ["compare.py", str(out_dir), str(tmp_path / "suite.out"), str(tmp_path / "expected.txt")]
    buffer = io.StringIO()
    old_argv, sys.argv = sys.argv, argv
    try:
        with contextlib.redirect_stdout(buffer):
            code = compare.main()
    finally:
        sys.argv = old_argv
    return code, buffer.getvalue()


def test_expected_failures_only_is_ok(tmp_path: Path) -> None:
    code, out = _run(
        tmp_path,
        {"ping": ["SUCCESS"], "prompts-get-simple": ["FAILURE"]},
        "prompts-get-simple  # fixture prompt\n",
    )
    assert code == 0, out
    assert "1 passed, 1 expected failures, 0 unexpected failures, 0 stale entries -> OK" in out


@pytest.mark.parametrize(
    ("results", "expected", "message"),
    [
        ({"ping": ["FAILURE"]}, "", "UNEXPECTED FAILURE ping"),
        ({"ping": ["SUCCESS", "WARNING"]}, "", "UNEXPECTED FAILURE ping"),
        ({"ping": None}, "", "UNEXPECTED FAILURE ping"),
        ({"ping": ["SUCCESS"]}, "ping  # no longer true\n", "NOW PASSES"),
        ({"ping": ["FAILURE"]}, "ping\n", "has no '# reason'"),
        ({"ping": ["SUCCESS"]}, "gone  # renamed\n", "'gone' did not run"),
        ({}, "", "no scenario ran"),
    ],
)
def test_failures(
    tmp_path: Path, results: dict[str, list[str] | None], expected: str, message: str
) -> None:
    code, out = _run(tmp_path, results, expected)
    assert code == 1, out
    assert message in out


def test_committed_expected_failures_file_is_well_formed() -> None:
    expected, problems = compare.read_expected(MCP_CI / "expected-failures.txt")
    assert not problems
    assert expected, "expected-failures.txt lists no scenario"
    assert all(name and " " not in name for name in expected)
