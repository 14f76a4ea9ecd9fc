"""Side effects that must wait until the transaction that decided them has committed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

_KEY = "after_commit"


class AppSession(Session):
    """The sync session behind every AsyncSession; carries after-commit callbacks."""


def after_commit(session: AsyncSession, callback: Callable[[], None]) -> None:
    """Run `callback` once the current transaction commits; drop it if it rolls back."""
    session.sync_session.info.setdefault(_KEY, []).append(callback)


@event.listens_for(AppSession, "after_commit")
def _run_callbacks(session: Session) -> None:
    for callback in session.info.pop(_KEY, []):
        callback()


@event.listens_for(AppSession, "after_soft_rollback")
def _drop_callbacks(session: Session, _previous_transaction: Any) -> None:
    session.info.pop(_KEY, None)
