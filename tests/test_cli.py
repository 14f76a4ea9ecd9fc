"""The admin CLI, run in-process with the test's database in the environment."""

import json

import pytest
from typer.testing import CliRunner

from app.cli import app
from app.core.config import Settings

runner = CliRunner()


def _json(*args: str) -> dict:  # type: ignore[type-arg]
    result = runner.invoke(app, ["--json", *args])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, f"expected one JSON object, got: {result.stdout!r}"
    return json.loads(lines[0])  # type: ignore[no-any-return]


def test_admin_flow_in_json(settings: Settings) -> None:
    assert _json("db", "upgrade")["status"] == "ok"
    account = _json("accounts", "create", "--name", "acme", "--credits", "250")
    assert account["id"].startswith("acct_") and account["balance"] == 250

    key = _json("keys", "create", "--account", account["id"], "--tier", "pro")
    assert key["key"].startswith("sk_") and key["id"].startswith("key_") and key["tier"] == "pro"

    listed = _json("keys", "list", "--account", account["id"])["keys"]
    assert [k["id"] for k in listed] == [key["id"]]
    assert key["key"] not in json.dumps(listed)

    granted = _json("credits", "grant", account["id"], "50")
    assert granted["balance"] == 300 and granted["id"]

    revoked = _json("keys", "revoke", key["id"])
    assert revoked["disabled"] is True


def test_json_flag_after_the_command(settings: Settings) -> None:
    result = runner.invoke(app, ["accounts", "create", "--credits", "5", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["balance"] == 5


def test_people_get_readable_output_and_errors(settings: Settings) -> None:
    created = runner.invoke(app, ["accounts", "create", "--name", "acme"])
    assert created.exit_code == 0 and "account acct_" in created.stdout
    missing = runner.invoke(app, ["credits", "grant", "acct_nope", "5"])
    assert missing.exit_code == 1 and "account not found" in missing.output
    unknown_tier = runner.invoke(app, ["keys", "create", "--account", "x", "--tier", "gold"])
    assert unknown_tier.exit_code == 2 and "tier must be one of" in unknown_tier.output


@pytest.mark.parametrize("amount", ["0", "-3"])
def test_grant_refuses_non_positive(settings: Settings, amount: str) -> None:
    result = runner.invoke(app, ["credits", "grant", "acct_x", "--", amount])
    assert result.exit_code == 2
