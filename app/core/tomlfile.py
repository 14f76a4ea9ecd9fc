"""Operator files made of `[[table]]` entries (the model catalog, the channel file): read once
at start, each mistake reported with the file, the entry and the problem."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def parse_entries(
    path: Path,
    *,
    table: str,
    id_key: str,
    document: str,
    error: type[ValueError],
    parse: Callable[[Any], T],
) -> list[T]:
    """`parse` applied to every `[[table]]` entry of `path`, in file order.

    Raises `error` naming the file, and for an entry its `id_key` (or its number): for an
    unreadable file, invalid TOML, other top-level keys, no entries, a ValueError from
    `parse`, or two entries with the same `id_key`.
    """
    try:
        with path.open("rb") as file:
            content = tomllib.load(file)
    except OSError as problem:
        raise error(f"{path}: cannot read {document}: {problem}") from problem
    except tomllib.TOMLDecodeError as problem:
        raise error(f"{path}: not valid TOML: {problem}") from problem
    extra = sorted(set(content) - {table})
    if extra:
        raise error(f"{path}: unknown top-level key {extra[0]!r}; expected [[{table}]]")
    entries = content.get(table)
    if not isinstance(entries, list) or not entries:
        raise error(f"{path}: no {table}s; add one [[{table}]] table per {table}")
    parsed: list[T] = []
    seen: set[Any] = set()
    for number, entry in enumerate(entries, start=1):
        key = entry.get(id_key) if isinstance(entry, dict) else None
        label = repr(key) if isinstance(key, str) and key else f"#{number}"
        try:
            item = parse(entry)
        except ValueError as problem:
            raise error(f"{path}: {table} {label}: {problem}") from problem
        if getattr(item, id_key) in seen:
            raise error(f"{path}: {table} {label}: duplicate {id_key}")
        seen.add(getattr(item, id_key))
        parsed.append(item)
    return parsed
