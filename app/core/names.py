"""The error for a name nobody declared, with the likeliest meant one."""

from __future__ import annotations

import re
from collections.abc import Iterable
from difflib import get_close_matches

from app.core.errors import InvalidInput

_CAMEL_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def closest_name(name: str, known: Iterable[str]) -> str | None:
    """The known name `name` most likely meant (aspectRatio -> aspect_ratio), or None."""
    names = list(known)
    snake = _CAMEL_HUMP.sub("_", name).lower()
    if snake in names:
        return snake
    return next(iter(get_close_matches(snake, names, 1)), None)


def unknown_field(name: str, known: Iterable[str], *, what: str = "input field") -> InvalidInput:
    """InvalidInput naming `name`, listing what is allowed and, when close, a suggestion."""
    allowed = sorted(known)
    guess = closest_name(name, allowed)
    if guess is None:
        return InvalidInput(f"unknown {what}: {name}", field=name, allowed=allowed)
    return InvalidInput(
        f"unknown {what}: {name} (did you mean {guess}?)",
        field=name,
        allowed=allowed,
        suggestion=guess,
    )
