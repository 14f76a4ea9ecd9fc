"""Identifiers and clock: prefixed, time-ordered ids and epoch milliseconds."""

from __future__ import annotations

import secrets
import time


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_id(prefix: str) -> str:
    """`prefix_` + 12 hex digits of milliseconds + 16 random hex digits: sortable by creation."""
    return f"{prefix}_{now_ms():012x}{secrets.token_hex(8)}"
