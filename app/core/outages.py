"""Which failures mean "a backing service is briefly away" rather than "our code is wrong".

An outage of the database or Redis is answered 503 with `Retry-After` (REST) or an
`isError` result with `retryAfter` (MCP), and a worker retries what it was writing; any
other exception stays a logged 500. This module is the one place that tells them apart.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import redis.exceptions
from limits.errors import StorageError
from sqlalchemy import exc as sa_exc

from app.core.errors import ServiceUnavailable

# PostgreSQL SQLSTATEs that mean the server (not the statement) is the problem: class 08
# (connection exception), admin/crash shutdown, "the database system is starting up",
# and too many connections. Anything else (syntax, constraints, NUL bytes) is ours.
_PG_OUTAGE_STATES = frozenset({"57P01", "57P02", "57P03", "53300"})
# SQLite's lock contention outlasting busy_timeout: another writer holds the file.
_SQLITE_OUTAGE_MESSAGES = ("database is locked", "database is busy")
# obstore (the S3 media backend) has no exception type per transport failure: a request that
# never got an answer (refused, reset, timed out) or got a 5xx after its retries is a
# GenericError saying so. A 403 or a bad key is a different error, and ours.
_OBJECT_STORE_OUTAGE_MESSAGES = ("HTTP error", "Server returned non-2xx status code: 5")

# The exception types an outage can surface as, for transports that register a handler per
# type; each instance still goes through is_outage (a SQLAlchemyError may be a bad query).
OUTAGE_SOURCES: tuple[type[Exception], ...] = (
    sa_exc.SQLAlchemyError,
    psycopg.Error,
    sqlite3.Error,
    redis.exceptions.RedisError,
    StorageError,
    ConnectionError,
)


def is_outage(exc: BaseException) -> bool:
    """True when `exc` (or what it was raised from) says a backing service cannot be reached."""
    return _is_outage(exc, depth=0)


def _is_outage(exc: BaseException, *, depth: int) -> bool:
    if depth > 8:  # cause chains are short; this only guards against a cycle
        return False
    if isinstance(exc, BaseExceptionGroup):
        members = [e for e in exc.exceptions if not _is_cancellation(e)]
        return bool(members) and all(_is_outage(e, depth=depth + 1) for e in members)
    if _is_outage_itself(exc):
        return True
    causes = [exc.__cause__]
    if isinstance(exc, sa_exc.DBAPIError):
        causes.append(exc.orig)
    if isinstance(exc, StorageError):
        causes.append(exc.storage_error)
    return any(c is not None and _is_outage(c, depth=depth + 1) for c in causes)


def _is_outage_itself(exc: BaseException) -> bool:
    if isinstance(exc, ServiceUnavailable):
        return True
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, sa_exc.TimeoutError | sa_exc.DisconnectionError):
        return True  # no pooled connection in time / the pool could not get a live one
    if isinstance(exc, psycopg.OperationalError):
        # No SQLSTATE: the client lost (or never got) its connection.
        return (
            exc.sqlstate is None
            or exc.sqlstate.startswith("08")
            or (exc.sqlstate in _PG_OUTAGE_STATES)
        )
    if isinstance(exc, sqlite3.OperationalError):
        return any(m in str(exc) for m in _SQLITE_OUTAGE_MESSAGES)
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return True
    if isinstance(exc, StorageError):
        return True  # the rate limiter's storage (Redis) failed; `limits` wraps it for us
    if _is_object_store_outage(exc):
        return True
    # Refused, reset, aborted, broken pipe: the peer is gone, whoever the peer was.
    return isinstance(exc, ConnectionError)


def _is_object_store_outage(exc: BaseException) -> bool:
    """obstore's transport failures; looked up only once the S3 backend has loaded obstore,
    so processes on the local backend never import it."""
    errors = sys.modules.get("obstore.exceptions")
    if errors is None or not isinstance(exc, errors.GenericError):
        return False
    return any(m in str(exc) for m in _OBJECT_STORE_OUTAGE_MESSAGES)


def _is_cancellation(exc: BaseException) -> bool:
    return not isinstance(exc, Exception)


@contextmanager
def unavailable_on_outage() -> Iterator[None]:
    """Re-raise an outage inside the block as ServiceUnavailable; anything else unchanged."""
    try:
        yield
    except ServiceUnavailable:
        raise
    except Exception as exc:
        if is_outage(exc):
            raise ServiceUnavailable() from exc
        raise
