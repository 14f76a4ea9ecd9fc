"""Identifiers and clock: prefixed, time-ordered ids and epoch milliseconds."""

from __future__ import annotations

import re
import secrets
import time

_ID = re.compile(r"([a-z]+)_[0-9a-f]{28}")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_id(prefix: str) -> str:
    """`prefix_` + 12 hex digits of milliseconds + 16 random hex digits: sortable by creation."""
    return f"{prefix}_{now_ms():012x}{secrets.token_hex(8)}"


def is_id(value: str, prefix: str) -> bool:
    """Whether `value` has the shape new_id(prefix) gives (not whether such a row exists)."""
    matched = _ID.fullmatch(value)
    return matched is not None and matched[1] == prefix
