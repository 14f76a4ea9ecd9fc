"""`gengate serve`: in development, migrate and make a dev key first; then run uvicorn."""

from __future__ import annotations

import asyncio

import uvicorn
from rich.console import Console

from app.core.config import Settings
from app.core.logging import log_config
from app.db.migrate import upgrade_database
from app.devkey import dev_key_path, ensure_dev_key
from app.main import create_app
from app.runtime import Runtime


async def _prepare_development(settings: Settings) -> str | None:
    runtime = await Runtime.start(settings)
    try:
        async with runtime.sessions() as session:
            key = await ensure_dev_key(session, settings)
            await session.commit()
            return key
    finally:
        await runtime.close()


def serve(settings: Settings, *, host: str | None, port: int | None) -> None:
    # The dev key goes to stdout, once; the server's log stream (stderr) never carries a key.
    console = Console()
    if settings.env == "development":
        upgrade_database(settings.resolved_database_url)
        key = asyncio.run(_prepare_development(settings))
        path = dev_key_path(settings)
        if key:
            console.print(f"[bold green]development API key[/bold green] (saved to {path}):")
            console.print(key, highlight=False, soft_wrap=True)
        else:
            console.print(f"development API key: see {path}")
    uvicorn.run(
        create_app(settings),
        host=host or settings.host,
        port=port or settings.port,
        log_config=log_config(settings.log_level),
        proxy_headers=False,
    )
