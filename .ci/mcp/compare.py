"""Compare a conformance run with .ci/mcp/expected-failures.txt.

Usage: python3 compare.py RESULTS_DIR SUITE_STDOUT EXPECTED_FILE

RESULTS_DIR is the suite's `--output-dir` (one `server-<scenario>-<timestamp>/checks.json`
per scenario), SUITE_STDOUT its captured stdout (its `=== Running scenario: X ===` lines
say which scenarios ran, so a scenario that crashed before writing checks.json still
counts, as a failure). A scenario fails when any check is FAILURE or WARNING, the rule the
suite's own `--expected-failures` baseline uses.

EXPECTED_FILE has one `scenario-name  # why it does not apply` per line; blank lines and
lines starting with `#` are comments. Every entry needs a reason.

Prints a table (one line per scenario) and exits 1 on: an unexpected failure, an expected
failure that now passes (remove it from the file), an entry naming a scenario that did not
run, an entry without a reason, or no scenario run at all.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

TIMESTAMP = re.compile(r"-\d{4}-\d{2}-\d{2}T[\d-]+Z$")
RUNNING = re.compile(r"^=== Running scenario: (\S+) ===$", re.M)


def read_expected(path: Path) -> tuple[dict[str, str], list[str]]:
    expected: dict[str, str] = {}
    problems: list[str] = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, _, reason = line.partition("#")
        name, reason = name.strip(), reason.strip()
        if not reason:
            problems.append(f"{path.name}:{number}: '{name}' has no '# reason'")
        if name in expected:
            problems.append(f"{path.name}:{number}: '{name}' listed twice")
        expected[name] = reason
    return expected, problems


def read_results(results_dir: Path) -> dict[str, list[dict]]:
    results: dict[str, list[dict]] = {}
    for checks_file in sorted(results_dir.glob("*/checks.json")):
        name = TIMESTAMP.sub("", checks_file.parent.name)
        name = name.removeprefix("server-")
        try:
            results[name] = json.loads(checks_file.read_text())
        except (OSError, ValueError) as exc:
            message = f"unreadable checks.json: {exc}"
            results[name] = [{"id": name, "status": "FAILURE", "errorMessage": message}]
    return results


def summarize(checks: list[dict]) -> tuple[bool, str]:
    bad = [c for c in checks if c.get("status") in ("FAILURE", "WARNING")]
    if not checks:
        return False, "no checks recorded"
    if not bad:
        return True, f"{len(checks)} checks ok"
    first = bad[0]
    detail = (
        first.get("errorMessage")
        or (first.get("details") or {}).get("message")
        or first.get("description", "")
    )
    more = f" (+{len(bad) - 1} more)" if len(bad) > 1 else ""
    return False, f"{first.get('status')} {first.get('id')}: {detail}"[:160] + more


def main() -> int:
    results_dir, stdout_file, expected_file = (Path(a) for a in sys.argv[1:4])
    expected, problems = read_expected(expected_file)
    results = read_results(results_dir)
    ran = RUNNING.findall(stdout_file.read_text()) if stdout_file.exists() else []
    scenarios = list(dict.fromkeys(ran + sorted(results)))
    if not scenarios:
        print("conformance: no scenario ran")
        return 1

    width = max(len(s) for s in scenarios)
    unexpected: list[str] = []
    stale: list[str] = []
    n_pass = n_expected = 0
    for name in scenarios:
        passed, detail = summarize(results.get(name, []))
        if name not in results:
            detail = "crashed: no checks.json written (see the suite's output above)"
        if passed and name in expected:
            verdict = "STALE"  # passes now: the expected-failures entry must go
            stale.append(name)
        elif passed:
            verdict = "pass"
            n_pass += 1
        elif name in expected:
            verdict = "xfail"
            n_expected += 1
            detail = expected[name]
        else:
            verdict = "FAIL"
            unexpected.append(name)
        print(f"  {name:<{width}}  {verdict:<5}  {detail}")

    for name in expected:
        if name not in scenarios:
            problems.append(f"{expected_file.name}: '{name}' did not run (renamed or removed?)")

    for name in unexpected:
        print(f"conformance: UNEXPECTED FAILURE {name}")
    for name in stale:
        print(f"conformance: NOW PASSES, remove from {expected_file.name}: {name}")
    for problem in problems:
        print(f"conformance: {problem}")
    ok = not unexpected and not stale and not problems
    print(
        f"conformance: {len(scenarios)} scenarios: {n_pass} passed, "
        f"{n_expected} expected failures, {len(unexpected)} unexpected failures, "
        f"{len(stale)} stale entries -> {'OK' if ok else 'FAILED'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
