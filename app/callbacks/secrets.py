"""Each account's Standard Webhooks secret: made on first use, rolled with a 24 h overlap."""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from standardwebhooks import Webhook

from app.callbacks.models import WebhookSecret
from app.core.ids import now_ms

SECRET_PREFIX = "whsec_"  # noqa: S105 - the Standard Webhooks prefix, not a secret
SECRET_BYTES = 32
# After a roll, deliveries carry both signatures for this long, so receivers can switch.
ROLL_OVERLAP_MS = 24 * 3600 * 1000


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


_TABLE = WebhookSecret.metadata.tables["webhook_secret"]
_INSERTS_ONCE = {
    "postgresql": pg_insert(_TABLE).on_conflict_do_nothing(index_elements=["account_id"]),
    "sqlite": sqlite_insert(_TABLE).on_conflict_do_nothing(index_elements=["account_id"]),
}


async def get_webhook_secret(session: AsyncSession, *, account_id: str) -> WebhookSecret:
    """The account's secret, made now if it has none yet (the caller commits). Two first
    uses at once make one secret: the second insert does nothing and reads the first."""
    row = await session.get(WebhookSecret, account_id, populate_existing=True)
    if row is not None:
        return row
    insert_once = _INSERTS_ONCE[session.get_bind().dialect.name]
    await session.execute(
        insert_once, {"account_id": account_id, "secret": new_secret(), "created_at": now_ms()}
    )
    row = await session.get(WebhookSecret, account_id, populate_existing=True)
    assert row is not None  # inserted above, or by the concurrent first use that won
    return row


async def roll_webhook_secret(session: AsyncSession, *, account_id: str) -> WebhookSecret:
    """Replace the account's secret; the old one keeps signing for ROLL_OVERLAP_MS."""
    row = await get_webhook_secret(session, account_id=account_id)
    await session.refresh(row, with_for_update=True)  # two rolls at once: one after the other
    now = now_ms()
    row.previous_secret, row.previous_until = row.secret, now + ROLL_OVERLAP_MS
    row.secret, row.rolled_at = new_secret(), now
    await session.flush()
    return row


def signing_secrets(row: WebhookSecret, *, now: int) -> list[str]:
    """The secrets a delivery is signed with now: the current one, and the previous one
    during its overlap."""
    keys = [row.secret]
    if row.previous_secret and row.previous_until and now < row.previous_until:
        keys.append(row.previous_secret)
    return keys


def sign(keys: list[str], *, msg_id: str, timestamp_s: int, body: str) -> str:
    """The `webhook-signature` header: one `v1,<base64>` per secret, space-separated."""
    moment = datetime.fromtimestamp(timestamp_s, tz=UTC)
    return " ".join(Webhook(key).sign(msg_id, moment, body) for key in keys)
