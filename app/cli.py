"""`gengate`: the operator's command line. Rich output for people, `--json` for scripts.

Failures are reported by app.cli_errors.ReportingGroup, the root command: with `--json`
anywhere, one `{"error", "field"}` object on stdout; without, a line on stderr.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import socket
import threading
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.service import create_account, get_account
from app.callbacks.schemas import CallbackDeliveryRead, WebhookSecretRead
from app.callbacks.service import account_secret, read_any_task_callbacks, roll_account_secret
from app.channels.attempts import list_attempts
from app.channels.report import ChannelStatus, channel_health, usage_report
from app.cli_errors import CommandFailed, ReportingGroup, from_app_error, report_thread_failure
from app.client.cli import register as register_client_commands
from app.core.config import MIN_RETENTION_DAYS, Settings
from app.core.errors import AppError
from app.core.ids import now_ms
from app.credits.service import grant_credits
from app.db.migrate import upgrade_database
from app.keys.models import ApiKey
from app.keys.service import create_api_key, list_api_keys, revoke_api_key
from app.maintenance.pruner import run_retention
from app.maintenance.retention import count_prunable, cutoff_for, iso
from app.runtime import Runtime

T = TypeVar("T")

# One grant (or initial credits) at most this much: far below what the balance column holds.
MAX_CREDITS_PER_GRANT = 10**12


app = typer.Typer(
    cls=ReportingGroup, help="gengate: gateway for asynchronous image and video generation."
)
db_app = typer.Typer(help="Database schema.")
accounts_app = typer.Typer(help="Accounts.")
keys_app = typer.Typer(help="API keys.")
credits_app = typer.Typer(help="Credits.")
webhooks_app = typer.Typer(help="Callbacks: signing secrets and deliveries.")
channels_app = typer.Typer(help="Channels: the upstreams that serve each model.")
report_app = typer.Typer(help="Reports for the operator.")
for sub, name in (
    (db_app, "db"),
    (accounts_app, "accounts"),
    (keys_app, "keys"),
    (credits_app, "credits"),
    (webhooks_app, "webhooks"),
    (channels_app, "channels"),
    (report_app, "report"),
):
    app.add_typer(sub, name=name)

console = Console()


@app.callback()
def _root(
    ctx: typer.Context,
    json_output: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print one JSON object and nothing else, also for errors. May come anywhere "
            "on the command line.",
        ),
    ] = False,
) -> None:
    ctx.obj = {"json": json_output}


def _emit(ctx: typer.Context, payload: dict[str, Any], human: Callable[[], None]) -> None:
    if (ctx.find_root().obj or {}).get("json"):
        typer.echo(json.dumps(payload))
    else:
        human()


def _run(fn: Callable[[AsyncSession], Awaitable[T]], *, field: str | None = None) -> T:
    """Run one service call in one committed transaction.

    An AppError becomes a CommandFailed naming `field` when the service named none (an
    unknown account or key is the option that carried its id).
    """
    return _run_with_runtime(lambda session, _runtime: fn(session), field=field)


def _run_with_runtime(
    fn: Callable[[AsyncSession, Runtime], Awaitable[T]], *, field: str | None = None
) -> T:
    """_run for a call that also needs the runtime (its settings, catalog or channels)."""

    async def in_transaction(runtime: Runtime) -> T:
        async with runtime.sessions() as session:
            result = await fn(session, runtime)
            await session.commit()
            return result

    return _in_runtime(in_transaction, field=field)


def _in_runtime(fn: Callable[[Runtime], Awaitable[T]], *, field: str | None = None) -> T:
    """Run `fn` with a started runtime; `fn` opens its own transactions (see _run)."""

    async def main() -> T:
        runtime = await Runtime.start(Settings(), listen=False)
        try:
            return await fn(runtime)
        finally:
            await runtime.close()

    try:
        return asyncio.run(main())
    except AppError as exc:
        raise from_app_error(exc, default_field=field) from None


def _key_dict(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "account_id": key.account_id,
        "name": key.name,
        "prefix": key.prefix,
        "tier": key.tier,
        "scopes": key.scopes.split(),
        "disabled": key.disabled,
        "created_at": key.created_at,
        "last_used_at": key.last_used_at,
    }


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Migrate the database to the newest schema."""
    settings = Settings()
    try:
        upgrade_database(settings.resolved_database_url)
    except OSError as exc:  # the SQLite file's directory cannot be made
        raise CommandFailed(f"database unreachable: {exc.strerror}: {exc.filename}") from None
    _emit(
        ctx,
        {"status": "ok", "revision": "head"},
        lambda: console.print("[green]database is at the newest schema[/green]"),
    )


@accounts_app.command("create")
def accounts_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="Who the account is for.")] = "default",
    credits: Annotated[
        int, typer.Option(min=0, max=MAX_CREDITS_PER_GRANT, help="Credits granted at creation.")
    ] = 0,
) -> None:
    """Create an account."""
    account = _run(lambda s: create_account(s, name=name, credits=credits))
    _emit(
        ctx,
        {"id": account.id, "name": account.name, "balance": account.balance},
        lambda: console.print(f"account [bold]{account.id}[/bold] balance {account.balance}"),
    )


@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    account: Annotated[str, typer.Option(help="Account id.")],
    name: Annotated[str, typer.Option(help="A label for the key.")] = "default",
    tier: Annotated[str | None, typer.Option(help="Rate-limit tier.")] = None,
    scope: Annotated[list[str] | None, typer.Option(help="Repeat for each scope.")] = None,
) -> None:
    """Create an API key. The key is printed once and cannot be shown again."""
    settings = Settings()
    chosen_tier = tier or settings.default_tier
    if chosen_tier not in settings.tiers:
        raise CommandFailed(
            f"unknown tier {chosen_tier}",
            field="tier",
            exit_code=2,
            allowed=list(settings.tiers),
        )
    key, plain = _run(
        lambda s: create_api_key(s, account_id=account, name=name, tier=chosen_tier, scopes=scope),
        field="account",
    )
    _emit(
        ctx,
        {**_key_dict(key), "key": plain},
        lambda: console.print(
            f"key [bold]{key.id}[/bold] (shown once):\n{plain}", highlight=False, soft_wrap=True
        ),
    )


@keys_app.command("list")
def keys_list(
    ctx: typer.Context,
    account: Annotated[str | None, typer.Option(help="Only this account's keys.")] = None,
) -> None:
    """List API keys (never their secrets)."""

    async def listed(session: AsyncSession) -> list[ApiKey]:
        if account is not None:
            await get_account(session, account_id=account)  # an unknown account is an error
        return await list_api_keys(session, account_id=account)

    keys = _run(listed, field="account")

    def human() -> None:
        table = Table("id", "account", "name", "prefix", "tier", "scopes", "disabled")
        for k in keys:
            table.add_row(
                k.id,
                k.account_id,
                k.name,
                k.prefix + "…",
                k.tier,
                k.scopes,
                "yes" if k.disabled else "",
            )
        console.print(table)

    _emit(ctx, {"keys": [_key_dict(k) for k in keys]}, human)


@keys_app.command("revoke")
def keys_revoke(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(help="Key id (key_...).")],
) -> None:
    """Disable an API key for good."""
    key = _run(lambda s: revoke_api_key(s, key_id=key_id), field="key_id")
    _emit(ctx, _key_dict(key), lambda: console.print(f"revoked {key.id}"))


@credits_app.command("grant")
def credits_grant(
    ctx: typer.Context,
    account: Annotated[str, typer.Argument(help="Account id.")],
    amount: Annotated[
        int, typer.Argument(min=1, max=MAX_CREDITS_PER_GRANT, help="Credits to add.")
    ],
    note: Annotated[str | None, typer.Option(help="Why, for the ledger.")] = None,
) -> None:
    """Grant credits to an account."""
    entry = _run(
        lambda s: grant_credits(s, account_id=account, amount=amount, note=note), field="account"
    )
    _emit(
        ctx,
        {"id": entry.id, "account_id": account, "amount": amount, "balance": entry.balance_after},
        lambda: console.print(f"granted {amount}; balance {entry.balance_after}"),
    )


def _time(ms: int | None) -> str:
    return (
        ""
        if ms is None
        else datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds")
    )


def _show_secret(ctx: typer.Context, secret: WebhookSecretRead, *, headline: str) -> None:
    """The secret goes to stdout only: it signs every callback of the account."""

    def human() -> None:
        console.print(f"{headline}:\n{secret.secret}", highlight=False, soft_wrap=True)
        if secret.previous_secret_valid_until is not None:
            until = _time(secret.previous_secret_valid_until)
            console.print(
                f"callbacks are signed with the previous secret too until {until}",
                highlight=False,
                soft_wrap=True,
            )

    _emit(ctx, secret.model_dump(mode="json", by_alias=True), human)


@webhooks_app.command("secret")
def webhooks_secret(
    ctx: typer.Context,
    account: Annotated[str, typer.Option(help="Account id.")],
) -> None:
    """Show the account's whsec_ secret that callbacks are signed with (made on first use)."""

    async def read(session: AsyncSession) -> WebhookSecretRead:
        await get_account(session, account_id=account)  # an unknown account is an error
        return await account_secret(session, account_id=account)

    _show_secret(ctx, _run(read, field="account"), headline=f"webhook secret of {account}")


@webhooks_app.command("roll")
def webhooks_roll(
    ctx: typer.Context,
    account: Annotated[str, typer.Option(help="Account id.")],
) -> None:
    """Make a new secret; callbacks carry the old one's signature too for 24 hours."""

    async def roll(session: AsyncSession) -> WebhookSecretRead:
        await get_account(session, account_id=account)
        return await roll_account_secret(session, account_id=account)

    _show_secret(ctx, _run(roll, field="account"), headline=f"new webhook secret of {account}")


@webhooks_app.command("deliveries")
def webhooks_deliveries(
    ctx: typer.Context,
    task: Annotated[str, typer.Option(help="Task id.")],
) -> None:
    """List a task's callback deliveries (newest first) and every attempt."""
    listed = _run(lambda s: read_any_task_callbacks(s, task_id=task), field="task")

    def human() -> None:
        console.print(f"task {listed.task_id}: callback {listed.callback_state}", highlight=False)
        for delivery in listed.deliveries:
            _print_delivery(delivery)

    _emit(ctx, listed.model_dump(mode="json", by_alias=True), human)


def _print_delivery(delivery: CallbackDeliveryRead) -> None:
    # Ids and URLs on a line of their own: a table column would fold them, and people copy them.
    state = delivery.state
    if delivery.next_attempt_time is not None:
        state += f", next attempt {_time(delivery.next_attempt_time)}"
    console.print(
        f"delivery {delivery.id} ({state}) to {delivery.url}", highlight=False, soft_wrap=True
    )
    if delivery.attempts:
        table = Table("attempt", "time (UTC)", "status", "ms", "error")
        for a in delivery.attempts:
            table.add_row(
                str(a.number),
                _time(a.time),
                "" if a.status_code is None else str(a.status_code),
                "" if a.latency_ms is None else str(a.latency_ms),
                a.error or "",
            )
        console.print(table)


@channels_app.command("list")
def channels_list(ctx: typer.Context) -> None:
    """Every channel with its models, priority, weight and health (from recent attempts)."""

    async def read(session: AsyncSession, runtime: Runtime) -> list[ChannelStatus]:
        settings = runtime.settings
        return await channel_health(
            session,
            runtime.channels.all(),
            breaker_failures=settings.breaker_failures,
            breaker_cooldown_ms=int(settings.breaker_cooldown_seconds * 1000),
            now=now_ms(),
        )

    statuses = _run_with_runtime(read)

    def human() -> None:
        table = Table("channel", "adapter", "priority", "weight", "health", "recent", "models")
        for s in statuses:
            health = (
                s.breaker
                if not s.consecutive_failures
                else (f"{s.breaker}, {s.consecutive_failures} failing in a row")
            )
            if s.last_failure:
                health += f"\nlast failure {_time(s.last_failure_at or 0)}: {s.last_failure}"
            table.add_row(
                s.channel.name,
                s.channel.adapter,
                str(s.channel.priority),
                str(s.channel.weight),
                health,
                f"{s.attempts - s.failures}/{s.attempts} ok",
                "\n".join(s.channel.models),
            )
        console.print(table)

    _emit(ctx, {"channels": [_status_dict(s) for s in statuses]}, human)


def _status_dict(status: ChannelStatus) -> dict[str, Any]:
    c = status.channel
    return {
        "name": c.name,
        "adapter": c.adapter,
        "base_url": c.base_url,
        "models": list(c.models),
        "upstream_models": dict(c.upstream_models),
        "priority": c.priority,
        "weight": c.weight,
        "breaker": status.breaker,
        "consecutive_failures": status.consecutive_failures,
        "attempts": status.attempts,
        "failures": status.failures,
        "last_success_at": status.last_success_at,
        "last_failure_at": status.last_failure_at,
        "last_failure": status.last_failure,
    }


@channels_app.command("attempts")
def channels_attempts(
    ctx: typer.Context,
    task: Annotated[str, typer.Option(help="Task id.")],
) -> None:
    """Every call made to an upstream for a task: channel, upstream id, outcome, latency."""
    attempts = _run(lambda s: list_attempts(s, task_id=task))
    rows = [a.model_dump(exclude={"task_id"}) for a in attempts]

    def human() -> None:
        table = Table("time (UTC)", "channel", "kind", "outcome", "ms", "upstream id", "note")
        for a in attempts:
            table.add_row(
                _time(a.started_at),
                a.channel,
                a.kind,
                a.outcome + (f" ({a.fail_code})" if a.fail_code else ""),
                str(a.latency_ms),
                a.upstream_id or "",
                a.message or "",
            )
        console.print(f"task {task}: {len(attempts)} upstream calls", highlight=False)
        console.print(table)

    _emit(ctx, {"task_id": task, "attempts": rows}, human)


@report_app.command("usage")
def report_usage(
    ctx: typer.Context,
    since: Annotated[
        str, typer.Option(help="How far back: 30m, 24h, 7d, or a date/time (UTC) like 2026-11-01.")
    ] = "24h",
) -> None:
    """Per model and channel: tasks, failures, upstream cost and credits charged."""
    start = _since_ms(since)
    rows = _run(lambda s: usage_report(s, since=start))

    def human() -> None:
        table = Table(
            "model", "channel", "tasks", "ok", "failed", "waiting", "credits", "upstream cost"
        )
        table.columns[0].overflow = "fold"
        for r in rows:
            cost = ", ".join(
                f"{_headline(unit, counters):g} {unit}"
                for unit, counters in r.upstream_cost.items()
            )
            table.add_row(
                r.model,
                r.channel,
                str(r.tasks),
                str(r.succeeded),
                str(r.failed),
                str(r.active),
                str(r.credits_charged),
                cost,
            )
        console.print(f"usage since {_time(start)}", highlight=False)
        console.print(table)

    payload = {"since": start, "rows": [dataclasses.asdict(r) for r in rows]}
    _emit(ctx, payload, human)


def _headline(unit: str, counters: dict[str, float]) -> float:
    """One figure per unit for people (`--json` has every counter): the total the upstream
    reported (`total_tokens`), else the counter named as the unit, else their sum."""
    for name in (f"total_{unit}", unit, unit.rstrip("s")):
        if name in counters:
            return counters[name]
    return sum(counters.values())


def _since_ms(since: str) -> int:
    """`--since` as epoch ms: a duration back from now (30m, 24h, 7d) or an ISO date/time."""
    text = since.strip()
    units = {"m": 60, "h": 3600, "d": 86400}
    if text[:-1].isdigit() and text[-1:] in units:
        return now_ms() - int(text[:-1]) * units[text[-1]] * 1000
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CommandFailed(
            f"since: {since!r} is neither a duration (30m, 24h, 7d) nor a date like 2026-11-01",
            field="since",
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


@app.command("prune")
def prune(
    ctx: typer.Context,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be deleted; delete nothing.")
    ] = False,
    older_than_days: Annotated[
        int | None,
        typer.Option(help="Retention in days instead of GENGATE_RETENTION_DAYS (at least 1)."),
    ] = None,
) -> None:
    """Delete finished tasks older than the retention, with their result files and callback
    deliveries, and old X-Request-Id keys; the credit ledger is never touched."""
    days = _retention_days(Settings(), older_than_days)
    now = now_ms()
    if dry_run:
        counts = _run(lambda s: count_prunable(s, cutoff=cutoff_for(now, days)))
        complete = True
    else:
        owner = f"gengate prune:{socket.gethostname()}:{os.getpid()}"
        run = _in_runtime(
            lambda runtime: run_retention(
                runtime, owner=owner, days=days, now=now, only_if_due=False
            )
        )
        if run is None:
            raise CommandFailed("a prune is already running in another process; try again later")
        counts, complete = run.counts, run.ended == "done"
    cutoff = cutoff_for(now, days)

    def human() -> None:
        done = "would delete" if dry_run else "deleted"
        console.print(f"{done} {counts}, finished before {iso(cutoff)}", highlight=False)
        if not complete:
            console.print("[yellow]stopped early: the media store failed; run it again[/yellow]")

    payload = {
        "dry_run": dry_run,
        "older_than_days": days,
        "cutoff": cutoff,
        "complete": complete,
        **dataclasses.asdict(counts),
    }
    _emit(ctx, payload, human)


def _retention_days(settings: Settings, older_than_days: int | None) -> int:
    """The option's days, else the setting's; refused below a day, as the setting is."""
    if older_than_days is None:
        if settings.retention_days is None:
            raise CommandFailed(
                "retention is off: set GENGATE_RETENTION_DAYS or pass --older-than-days",
                field="older_than_days",
                exit_code=2,
            )
        return settings.retention_days
    if older_than_days < MIN_RETENTION_DAYS:
        raise CommandFailed(
            f"--older-than-days must be at least {MIN_RETENTION_DAYS}: X-Request-Id idempotency "
            "keys are kept at least 24 h",
            field="older_than_days",
            exit_code=2,
        )
    return older_than_days


@app.command("serve")
def serve(
    host: Annotated[str | None, typer.Option(help="Defaults to GENGATE_HOST.")] = None,
    port: Annotated[int | None, typer.Option(help="Defaults to GENGATE_PORT.")] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="API processes on the one port (uvicorn workers). Above 1 needs PostgreSQL "
            "and Redis; each process also runs embedded task workers unless "
            "GENGATE_WORKERS_IN_PROCESS is false (they share the work through the database).",
        ),
    ] = 1,
) -> None:
    """Serve the REST API and the MCP server (and, embedded, the workers)."""
    from app.serve import serve as run_server

    run_server(Settings(), host=host, port=port, workers=workers)


@app.command("worker")
def worker(
    concurrency: Annotated[int | None, typer.Option(min=1, help="Tasks run at once.")] = None,
) -> None:
    """Run workers in this process (scaled-out mode): claim due tasks until stopped."""
    from app.jobs.runner import run_worker

    run_worker(Settings(), concurrency=concurrency)


register_client_commands(app)  # generate, status, tasks: a client of a server, over HTTP


def main() -> None:
    # A library thread failing once the command is over (aiosqlite finishing a failed connect
    # after the event loop closed) gets one line on stderr, not a traceback under the answer.
    threading.excepthook = report_thread_failure
    app()


if __name__ == "__main__":
    main()
