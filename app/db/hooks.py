"""Side effects that must wait until the transaction that decided them has committed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

_KEY = "after_commit"
_LISTENERS = "listeners"

Listener = Callable[[str], None]


class AppSession(Session):
    """The sync session behind every AsyncSession; carries after-commit callbacks."""


def after_commit(session: AsyncSession, callback: Callable[[], None]) -> None:
    """Run `callback` once the current transaction commits; drop it if it rolls back."""
    session.sync_session.info.setdefault(_KEY, []).append(callback)


def session_info(listeners: dict[str, Listener]) -> dict[str, Any]:
    """The `info` a session factory starts each session with, carrying `listeners`."""
    return {_LISTENERS: listeners}


def announce_after_commit(session: AsyncSession, topic: str, payload: str) -> None:
    """Once the transaction commits, hand `payload` to the listener the session factory
    registered for `topic` (e.g. the key cache for "key_revoked"); nothing if none is."""
    listener: Listener | None = session.sync_session.info.get(_LISTENERS, {}).get(topic)
    if listener is not None:
        after_commit(session, lambda: listener(payload))


@event.listens_for(AppSession, "after_commit")
def _run_callbacks(session: Session) -> None:
    for callback in session.info.pop(_KEY, []):
        callback()


@event.listens_for(AppSession, "after_soft_rollback")
def _drop_callbacks(session: Session, _previous_transaction: Any) -> None:
    session.info.pop(_KEY, None)
