"""Jinja2 templates of the console, and `render`, which gives every page its user, CSRF token
and navigation."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from app.console.session import ConsoleUser, login_csrf_token, set_login_cookie

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"
STATIC_PATH = "/console/static"

# (label, path); Sign out is a form in the layout, not a link.
NAV: tuple[tuple[str, str], ...] = (
    ("Overview", "/console"),
    ("Playground", "/console/playground"),
    ("Gallery", "/console/gallery"),
    ("Keys", "/console/keys"),
    ("Webhooks", "/console/webhooks"),
    ("Ledger", "/console/ledger"),
    ("Connect MCP", "/console/mcp"),
)


def format_ms(value: int | None) -> str:
    """Milliseconds since the epoch as a UTC time a person reads; an em dash for none."""
    if value is None:
        return "—"
    return datetime.fromtimestamp(value / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


templates = Jinja2Templates(
    env=jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
    )
)
templates.env.filters["ms"] = format_ms


def _nav_active(path: str) -> str:
    """The nav entry a page belongs to: the longest prefix of its path."""
    best = ""
    for _label, href in NAV:
        if (path == href or path.startswith(href + "/")) and len(href) > len(best):
            best = href
    return best


def render(
    request: Request,
    name: str,
    context: Mapping[str, Any],
    *,
    user: ConsoleUser | None,
    status_code: int = 200,
) -> HTMLResponse:
    """A console page; a page without a user also gets the sign-in form's CSRF token."""
    fresh_nonce = None
    if user is not None:
        csrf_token = user.csrf_token
    else:
        csrf_token, fresh_nonce = login_csrf_token(request)
    response = templates.TemplateResponse(
        request,
        name,
        {
            "message": None,
            "error": None,
            **context,
            "user": user,
            "csrf_token": csrf_token,
            "nav": NAV,
            "nav_active": _nav_active(request.url.path),
            "static": STATIC_PATH,
        },
        status_code=status_code,
    )
    if fresh_nonce is not None:
        set_login_cookie(request, response, fresh_nonce)
    # Pages show account data: never cached, never framed.
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = "frame-ancestors 'none'"
    response.headers["Referrer-Policy"] = "same-origin"
    return response
