"""The admin CLI, run in-process with the test's database in the environment.

Errors: with `--json`, exactly one `{"error", "field"}` object on stdout and nothing else;
without it, readable text on stderr and nothing on stdout. Never a traceback.
"""

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from standardwebhooks import Webhook
from typer.testing import CliRunner

from app.cli import app
from app.core.config import Settings
from tests.conftest import make_customer
from tests.support.apps import eventually, running_app, runtime_of, wait_for_terminal
from tests.support.receiver import Answer, receiving

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def _json(*args: str) -> dict:  # type: ignore[type-arg]
    result = runner.invoke(app, ["--json", *args])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, f"expected one JSON object, got: {result.stdout!r}"
    return json.loads(lines[0])  # type: ignore[no-any-return]


def _one_json_error(stdout: str, stderr: str) -> dict:  # type: ignore[type-arg]
    """The single JSON object an erring `--json` command printed, and nothing else."""
    assert stderr == "", f"--json printed to stderr: {stderr!r}"
    lines = stdout.strip().splitlines()
    assert len(lines) == 1, f"expected one JSON object, got: {stdout!r}"
    payload = json.loads(lines[0])
    assert isinstance(payload, dict) and set(payload) >= {"error", "field"}, payload
    assert isinstance(payload["error"], str) and payload["error"]
    return payload


def _flat(text: str) -> str:
    """Text without rich's box drawing and line wrapping."""
    return " ".join(text.replace("│", " ").split())


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
    assert missing.exit_code == 1 and missing.stdout == ""
    assert "error: account not found" in missing.stderr
    unknown_tier = runner.invoke(app, ["keys", "create", "--account", "x", "--tier", "gold"])
    assert unknown_tier.exit_code == 2 and unknown_tier.stdout == ""
    assert "unknown tier gold (allowed: free, standard, pro)" in unknown_tier.stderr


@pytest.mark.parametrize("amount", ["0", "-3"])
def test_grant_refuses_non_positive(settings: Settings, amount: str) -> None:
    result = runner.invoke(app, ["credits", "grant", "acct_x", "--", amount])
    assert result.exit_code == 2


# (arguments, exit code, text in the error, field). ACCOUNT stands for an existing account.
ERRORS = [
    # unknown ids
    (["credits", "grant", "acct_nope", "5"], 1, "account not found", "account"),
    (["keys", "create", "--account", "acct_nope"], 1, "account not found", "account"),
    (["keys", "list", "--account", "acct_nope"], 1, "account not found", "account"),
    (["keys", "revoke", "key_nope"], 1, "key not found", "key_id"),
    (["webhooks", "secret", "--account", "acct_nope"], 1, "account not found", "account"),
    (["webhooks", "roll", "--account", "acct_nope"], 1, "account not found", "account"),
    (["webhooks", "deliveries", "--task", "task_nope"], 1, "task not found", "task"),
    # bad values the services or the settings refuse
    (
        ["keys", "create", "--account", "ACCOUNT", "--scope", "tasks:delete"],
        1,
        "unknown scope tasks:delete",
        "scope",
    ),
    (["keys", "create", "--account", "ACCOUNT", "--tier", "gold"], 2, "unknown tier gold", "tier"),
    # bad values click refuses while parsing
    (["credits", "grant", "ACCOUNT", "abc"], 2, "valid integer", "amount"),
    (["credits", "grant", "ACCOUNT", "--", "0"], 2, "greater than or equal to 1", "amount"),
    (["credits", "grant", "ACCOUNT", "10000000000000"], 2, "less than or equal to", "amount"),
    (["accounts", "create", "--credits", "many"], 2, "valid integer", "credits"),
    (["accounts", "create", "--credits", "-1"], 2, "greater than or equal to 0", "credits"),
    (["worker", "--concurrency", "0"], 2, "greater than or equal to 1", "concurrency"),
    (["serve", "--port", "http"], 2, "valid integer", "port"),
    # missing or unknown arguments, options and commands
    (["credits", "grant"], 2, "Missing argument", "account"),
    (["credits", "grant", "ACCOUNT"], 2, "Missing argument", "amount"),
    (["keys", "create"], 2, "Missing option '--account'", "account"),
    (["keys", "create", "--account"], 2, "requires an argument", "account"),
    (["keys", "revoke"], 2, "Missing argument", "key_id"),
    (["webhooks", "roll"], 2, "Missing option '--account'", "account"),
    (["webhooks", "deliveries"], 2, "Missing option '--task'", "task"),
    (["keys", "list", "--bogus"], 2, "No such option: --bogus", "bogus"),
    (["keys", "frobnicate"], 2, "No such command 'frobnicate'", None),
    (["keys"], 2, "Missing command", None),
]


@pytest.fixture
def account_id(settings: Settings) -> str:
    return str(_json("accounts", "create", "--name", "acme")["id"])


def _with_account(args: list[str], account_id: str) -> list[str]:
    return [account_id if a == "ACCOUNT" else a for a in args]


@pytest.mark.parametrize("where", ["first", "last"])
@pytest.mark.parametrize(("args", "code", "text", "field"), ERRORS)
def test_every_error_is_one_json_object_with_json(
    account_id: str, where: str, args: list[str], code: int, text: str, field: str | None
) -> None:
    args = _with_account(args, account_id)
    # "last": at the end, or just before a `--` (after which it would be a value).
    end = args.index("--") if "--" in args else len(args)
    argv = ["--json", *args] if where == "first" else [*args[:end], "--json", *args[end:]]
    result = runner.invoke(app, argv)
    assert result.exit_code == code, result.output
    payload = _one_json_error(result.stdout, result.stderr)
    assert text in payload["error"] and payload["field"] == field, payload


@pytest.mark.parametrize(("args", "code", "text", "field"), ERRORS)
def test_every_error_is_readable_text_on_stderr_without_json(
    account_id: str, args: list[str], code: int, text: str, field: str | None
) -> None:
    result = runner.invoke(app, _with_account(args, account_id))
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    assert text in _flat(result.stderr)
    assert "Traceback" not in result.stderr and not result.stderr.lstrip().startswith("{")


def test_unknown_scope_lists_the_allowed_ones(account_id: str) -> None:
    result = runner.invoke(
        app, ["--json", "keys", "create", "--account", account_id, "--scope", "admin"]
    )
    payload = _one_json_error(result.stdout, result.stderr)
    assert payload["allowed"] == ["keys:manage", "tasks:create", "tasks:read"]
    assert _json("keys", "list", "--account", account_id)["keys"] == []  # nothing was created


def test_webhook_secret_is_made_once_and_rolled_with_an_overlap(account_id: str) -> None:
    first = _json("webhooks", "secret", "--account", account_id)
    assert first["secret"].startswith("whsec_")
    assert first["previousSecretValidUntil"] is None and first["rollTime"] is None
    assert _json("webhooks", "secret", "--account", account_id) == first

    other = _json("accounts", "create", "--name", "other")["id"]
    assert _json("webhooks", "secret", "--account", other)["secret"] != first["secret"]

    rolled = _json("webhooks", "roll", "--account", account_id)
    assert rolled["secret"].startswith("whsec_") and rolled["secret"] != first["secret"]
    assert rolled["createTime"] == first["createTime"] and rolled["rollTime"] is not None
    assert rolled["previousSecretValidUntil"] == rolled["rollTime"] + 24 * 3600 * 1000
    assert _json("webhooks", "secret", "--account", account_id) == rolled


def test_webhook_secret_for_people_goes_to_stdout_only(
    account_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    shown = runner.invoke(app, ["webhooks", "secret", "--account", account_id])
    assert shown.exit_code == 0 and shown.stderr == "", shown.output
    secret = _json("webhooks", "secret", "--account", account_id)["secret"]
    assert secret in shown.stdout.split()
    assert "previous secret" not in shown.stdout

    rolled = runner.invoke(app, ["webhooks", "roll", "--account", account_id])
    assert rolled.exit_code == 0 and rolled.stderr == "", rolled.output
    new_secret = _json("webhooks", "secret", "--account", account_id)["secret"]
    assert new_secret in rolled.stdout.split() and secret not in rolled.stdout
    assert "signed with the previous secret too until" in _flat(rolled.stdout)
    assert secret not in caplog.text and new_secret not in caplog.text


async def _finished_tasks(callback_url: str) -> tuple[str, str, str]:
    """An account, a task of it that called back to `callback_url`, and one without a URL."""
    async with running_app(Settings(_env_file=None)) as (application, client):  # type: ignore[call-arg]
        customer = await make_customer(runtime_of(application))
        ids = []
        for extra in ({"callBackUrl": callback_url}, {}):
            body = {"model": "gpt-image-2-text-to-image", "input": {"prompt": "a kite"}, **extra}
            response = await client.post(
                "/api/v1/jobs/createTask", json=body, headers=customer.headers
            )
            assert response.status_code == 200, response.text
            ids.append(response.json()["data"]["taskId"])
        for task_id in ids:
            await wait_for_terminal(client, customer.headers, task_id)

        async def delivered() -> bool:
            response = await client.get(
                "/api/v1/jobs/recordInfo", params={"taskId": ids[0]}, headers=customer.headers
            )
            return bool(response.json()["data"]["callbackState"] == "delivered")

        await eventually(delivered, what="the callback to be delivered")
    return customer.account.id, ids[0], ids[1]


def test_deliveries_of_a_task(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENGATE_OUTBOUND_ALLOWLIST", '["127.0.0.1/32"]')
    monkeypatch.setenv("GENGATE_CALLBACK_RETRY_SCHEDULE", "[0.2, 0.2]")
    with receiving(lambda _request, before: Answer(500) if before == 0 else Answer()) as receiver:
        account, called, silent = asyncio.run(_finished_tasks(receiver.url + "/hook"))
    sent = receiver.on("/hook")

    listed = _json("webhooks", "deliveries", "--task", called)
    assert listed["taskId"] == called and listed["callbackState"] == "delivered"
    (delivery,) = listed["deliveries"]
    assert delivery["state"] == "delivered" and delivery["nextAttemptTime"] is None
    assert [a["number"] for a in delivery["attempts"]] == [1, 2]
    assert [a["statusCode"] for a in delivery["attempts"]] == [500, 200]
    assert [r.headers["webhook-id"] for r in sent] == [delivery["id"]] * 2
    # The secret the CLI shows is the one the callbacks were signed with.
    webhook = Webhook(_json("webhooks", "secret", "--account", account)["secret"])
    for request in sent:
        assert webhook.verify(request.body.decode(), request.headers)["data"]["taskId"] == called

    assert _json("webhooks", "deliveries", "--task", silent) == {
        "taskId": silent,
        "callbackState": "none",
        "deliveries": [],
    }

    people = runner.invoke(app, ["webhooks", "deliveries", "--task", called])
    assert people.exit_code == 0 and people.stderr == "", people.output
    lines = people.stdout.splitlines()
    assert lines[0] == f"task {called}: callback delivered"
    assert lines[1] == f"delivery {delivery['id']} (delivered) to {receiver.url}/hook"
    rows = [_flat(line).split() for line in lines[2:]]
    attempts = [(row[0], row[2]) for row in rows if row and row[0] in ("1", "2")]
    assert attempts == [("1", "500"), ("2", "200")], people.stdout


def test_a_value_after_double_dash_is_not_the_json_flag(account_id: str) -> None:
    result = runner.invoke(app, ["keys", "revoke", "--", "--json"])
    assert result.exit_code == 1 and result.stdout == ""
    assert "key not found" in result.stderr


def test_invalid_settings_are_an_error_naming_the_variable(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GENGATE_PORT", "0")
    result = runner.invoke(app, ["--json", "keys", "list"])
    assert result.exit_code == 1
    payload = _one_json_error(result.stdout, result.stderr)
    assert payload["error"].startswith("invalid settings: GENGATE_PORT")
    assert payload["field"] is None


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_redis_unreachable(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENGATE_REDIS_URL", f"redis://127.0.0.1:{_closed_port()}/0")
    result = runner.invoke(app, ["--json", "accounts", "create"])
    assert result.exit_code == 1
    payload = _one_json_error(result.stdout, result.stderr)
    assert payload["error"].startswith("redis unreachable") and payload["field"] is None


def test_a_database_without_the_schema_says_to_migrate(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GENGATE_DATABASE_URL", f"sqlite:///{tmp_path}/empty.db")
    result = runner.invoke(app, ["--json", "keys", "list"])
    assert result.exit_code == 1
    payload = _one_json_error(result.stdout, result.stderr)
    assert payload["error"].startswith("database not migrated (run `gengate db upgrade`)")
    assert _json("db", "upgrade")["status"] == "ok"
    assert _json("keys", "list") == {"keys": []}


def _gengate(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The real command line: a new process through the console-script entry point."""
    return subprocess.run(
        [sys.executable, "-c", "from app.cli import main; main()", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _unreachable_databases(tmp_path: Path) -> list[str]:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    return [
        f"postgresql://gengate@127.0.0.1:{_closed_port()}/gengate",
        f"sqlite:///{blocker}/gengate.db",
    ]


# aiosqlite finishes a failed connect in its own thread, sometimes after the CLI's event loop
# closed; the real entry point reports that in one line (app.cli.main), pytest as a warning.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize("database", ["postgresql", "sqlite"])
@pytest.mark.parametrize(
    "args",
    [
        ["db", "upgrade"],
        ["keys", "list"],
        ["accounts", "create"],
        ["credits", "grant", "acct_x", "5"],
        ["keys", "create", "--account", "acct_x"],
        ["keys", "revoke", "key_x"],
        ["webhooks", "secret", "--account", "acct_x"],
    ],
)
def test_database_unreachable(
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    database: str,
    args: list[str],
) -> None:
    if database == "postgresql":
        url = f"postgresql://gengate@127.0.0.1:{_closed_port()}/gengate"
    else:
        blocker = tmp_path / "a-file"
        blocker.write_text("not a directory")
        url = f"sqlite:///{blocker}/gengate.db"
    monkeypatch.setenv("GENGATE_DATABASE_URL", url)

    as_json = runner.invoke(app, ["--json", *args])
    assert as_json.exit_code == 1, as_json.output
    payload = _one_json_error(as_json.stdout, as_json.stderr)
    assert payload["field"] is None
    for_people = runner.invoke(app, args)
    assert for_people.exit_code == 1 and for_people.stdout == ""
    assert "Traceback" not in for_people.stderr
    assert payload["error"].startswith("database unreachable:"), payload
    assert "error: database unreachable" in for_people.stderr


def _gengate(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The real command line: a new process through the console-script entry point."""
    return subprocess.run(
        [sys.executable, "-c", "from app.cli import main; main()", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_database_unreachable_in_a_real_process(settings_env: dict[str, str]) -> None:
    url = f"postgresql://gengate@127.0.0.1:{_closed_port()}/gengate"
    env = {**settings_env, "GENGATE_DATABASE_URL": url}
    as_json = _gengate(env, "keys", "list", "--json")
    assert as_json.returncode == 1, as_json.stderr
    payload = _one_json_error(as_json.stdout, as_json.stderr)
    assert payload["error"].startswith("database unreachable: connection failed"), payload

    for_people = _gengate(env, "keys", "list")
    assert for_people.returncode == 1 and for_people.stdout == ""
    assert "error: database unreachable" in for_people.stderr
    assert "Traceback" not in for_people.stderr


def test_usage_errors_in_a_real_process(settings_env: dict[str, str]) -> None:
    as_json = _gengate(settings_env, "--json", "credits", "grant", "acct_x", "abc")
    assert as_json.returncode == 2
    assert _one_json_error(as_json.stdout, as_json.stderr)["field"] == "amount"

    for_people = _gengate(settings_env, "credits", "grant", "acct_x", "abc")
    assert for_people.returncode == 2 and for_people.stdout == ""
    assert "Invalid value for 'amount'" in _flat(for_people.stderr)
    assert "Traceback" not in for_people.stderr
