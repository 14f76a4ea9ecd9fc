"""`gengate`: the operator's command line. Rich output for people, `--json` for scripts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.service import create_account
from app.core.config import Settings
from app.core.errors import AppError
from app.credits.service import grant_credits
from app.db.migrate import upgrade_database
from app.keys.models import ApiKey
from app.keys.service import create_api_key, list_api_keys, revoke_api_key
from app.runtime import Runtime

T = TypeVar("T")

app = typer.Typer(help="gengate: gateway for asynchronous image and video generation.")
db_app = typer.Typer(help="Database schema.")
accounts_app = typer.Typer(help="Accounts.")
keys_app = typer.Typer(help="API keys.")
credits_app = typer.Typer(help="Credits.")
for sub, name in ((db_app, "db"), (accounts_app, "accounts"), (keys_app, "keys")):
    app.add_typer(sub, name=name)
app.add_typer(credits_app, name="credits")

console = Console()
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object and nothing else.")]


@app.callback()
def _root(ctx: typer.Context, json_output: JsonOpt = False) -> None:
    ctx.obj = {"json": json_output}


def _wants_json(ctx: typer.Context, flag: bool) -> bool:
    return flag or bool((ctx.find_root().obj or {}).get("json"))


def _emit(
    ctx: typer.Context, flag: bool, payload: dict[str, Any], human: Callable[[], None]
) -> None:
    if _wants_json(ctx, flag):
        typer.echo(json.dumps(payload))
    else:
        human()


def _run(fn: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run one service call in one committed transaction; AppErrors become exit code 1."""

    async def main() -> T:
        runtime = await Runtime.start(Settings())
        try:
            async with runtime.sessions() as session:
                result = await fn(session)
                await session.commit()
                return result
        finally:
            await runtime.close()

    try:
        return asyncio.run(main())
    except AppError as exc:
        console.print(f"[red]error:[/red] {exc.message}", highlight=False)
        raise typer.Exit(1) from None


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
def db_upgrade(ctx: typer.Context, json_output: JsonOpt = False) -> None:
    """Migrate the database to the newest schema."""
    settings = Settings()
    upgrade_database(settings.resolved_database_url)
    _emit(
        ctx,
        json_output,
        {"status": "ok", "revision": "head"},
        lambda: console.print("[green]database is at the newest schema[/green]"),
    )


@accounts_app.command("create")
def accounts_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="Who the account is for.")] = "default",
    credits: Annotated[int, typer.Option(min=0, help="Credits granted at creation.")] = 0,
    json_output: JsonOpt = False,
) -> None:
    """Create an account."""
    account = _run(lambda s: create_account(s, name=name, credits=credits))
    _emit(
        ctx,
        json_output,
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
    json_output: JsonOpt = False,
) -> None:
    """Create an API key. The key is printed once and cannot be shown again."""
    settings = Settings()
    chosen_tier = tier or settings.default_tier
    if chosen_tier not in settings.tiers:
        console.print(f"[red]error:[/red] tier must be one of {', '.join(settings.tiers)}")
        raise typer.Exit(2)
    key, plain = _run(
        lambda s: create_api_key(s, account_id=account, name=name, tier=chosen_tier, scopes=scope)
    )
    _emit(
        ctx,
        json_output,
        {**_key_dict(key), "key": plain},
        lambda: console.print(
            f"key [bold]{key.id}[/bold] (shown once):\n{plain}", highlight=False, soft_wrap=True
        ),
    )


@keys_app.command("list")
def keys_list(
    ctx: typer.Context,
    account: Annotated[str | None, typer.Option(help="Only this account's keys.")] = None,
    json_output: JsonOpt = False,
) -> None:
    """List API keys (never their secrets)."""
    keys = _run(lambda s: list_api_keys(s, account_id=account))

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

    _emit(ctx, json_output, {"keys": [_key_dict(k) for k in keys]}, human)


@keys_app.command("revoke")
def keys_revoke(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(help="Key id (key_...).")],
    json_output: JsonOpt = False,
) -> None:
    """Disable an API key for good."""
    key = _run(lambda s: revoke_api_key(s, key_id=key_id))
    _emit(ctx, json_output, _key_dict(key), lambda: console.print(f"revoked {key.id}"))


@credits_app.command("grant")
def credits_grant(
    ctx: typer.Context,
    account: Annotated[str, typer.Argument(help="Account id.")],
    amount: Annotated[int, typer.Argument(min=1, help="Credits to add.")],
    note: Annotated[str | None, typer.Option(help="Why, for the ledger.")] = None,
    json_output: JsonOpt = False,
) -> None:
    """Grant credits to an account."""
    entry = _run(lambda s: grant_credits(s, account_id=account, amount=amount, note=note))
    _emit(
        ctx,
        json_output,
        {"id": entry.id, "account_id": account, "amount": amount, "balance": entry.balance_after},
        lambda: console.print(f"granted {amount}; balance {entry.balance_after}"),
    )


@app.command("serve")
def serve(
    host: Annotated[str | None, typer.Option(help="Defaults to GENGATE_HOST.")] = None,
    port: Annotated[int | None, typer.Option(help="Defaults to GENGATE_PORT.")] = None,
) -> None:
    """Serve the REST API and the MCP server (and, embedded, the workers)."""
    from app.serve import serve as run_server

    run_server(Settings(), host=host, port=port)


@app.command("worker")
def worker(
    concurrency: Annotated[int | None, typer.Option(min=1, help="Tasks run at once.")] = None,
) -> None:
    """Run workers in this process (scaled-out mode): claim due tasks until stopped."""
    from app.jobs.runner import run_worker

    run_worker(Settings(), concurrency=concurrency)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
