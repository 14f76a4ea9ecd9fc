"""The outbound-URL policy the operator configured, for every caller that reaches out."""

from __future__ import annotations

from typing import Any

from app.core.config import Settings
from app.net.url_guard import UrlPolicy


def outbound_policy(settings: Settings, **overrides: Any) -> UrlPolicy:
    """Input fetches, URL checks at creation and callbacks: one set of rules."""
    values: dict[str, Any] = {
        "allow_private": settings.allow_private_urls,
        "allowlist": tuple(settings.outbound_allowlist),
        "max_bytes": settings.fetch_max_bytes,
        "timeout_s": settings.fetch_timeout_seconds,
    }
    return UrlPolicy(**{**values, **overrides})
