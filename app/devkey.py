"""The development account and key that `make run` creates on first start."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.service import create_account
from app.core.config import Settings
from app.core.errors import AuthenticationFailed
from app.keys.service import authenticate, create_api_key


def dev_key_path(settings: Settings) -> Path:
    return settings.var_dir / "dev-api-key"


async def ensure_dev_key(session: AsyncSession, settings: Settings) -> str | None:
    """Create the development account and key unless a working one is saved.

    Returns the new key (to be shown once), or None when the saved key still works.
    """
    path = dev_key_path(settings)
    if path.exists():
        try:
            await authenticate(session, token=path.read_text().strip())
            return None
        except AuthenticationFailed:
            pass  # the database was reset: issue a new key below
    account = await create_account(session, name="development", credits=settings.dev_credits)
    _key, plain = await create_api_key(
        session, account_id=account.id, name="development", tier="pro"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(plain + "\n")
    path.chmod(0o600)
    return plain
