"""Errors on console pages are pages: the API's handlers decide status and message once,
and under /console their JSON envelope becomes an error page with the same status."""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from app.console.session import LoginRequired, console_user, login_redirect
from app.console.templating import STATIC_PATH, render

Handler = Callable[[Request, Any], Response | Awaitable[Response]]
CONSOLE_PREFIX = "/console"


def is_console(request: Request) -> bool:
    path = request.url.path
    return (path == CONSOLE_PREFIX or path.startswith(CONSOLE_PREFIX + "/")) and not (
        path.startswith(STATIC_PATH + "/")
    )


async def _login_required(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoginRequired)
    target = login_redirect(exc)
    if request.headers.get("HX-Request"):
        # htmx swaps what it gets; this makes it load the sign-in page instead.
        return Response(status_code=204, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


def _message_of(answer: Response) -> tuple[str, str | None]:
    """The envelope's message and field (the API's handlers wrote them)."""
    try:
        envelope = json.loads(bytes(answer.body))
        data = envelope.get("data") or {}
        field = data.get("field") if isinstance(data, dict) else None
        return str(envelope["msg"]), str(field) if field else None
    except (ValueError, KeyError, TypeError, AttributeError):
        return ("internal error" if answer.status_code >= 500 else "request failed"), None


def _as_page(handler: Handler) -> Handler:
    async def handle(request: Request, exc: Exception) -> Response:
        answer = handler(request, exc)
        if inspect.isawaitable(answer):
            answer = await answer
        if not is_console(request):
            return answer
        message, field = _message_of(answer)
        try:
            user = await console_user(request)
        except Exception:  # the database may be what failed: the page still answers
            user = None
        page = render(
            request,
            "error.html",
            {"status": answer.status_code, "error_message": message, "field": field},
            user=user,
            status_code=answer.status_code,
        )
        for name in ("Retry-After", "Allow"):
            if name in answer.headers:
                page.headers[name] = answer.headers[name]
        return page

    return handle


def install_console_errors(app: FastAPI) -> None:
    """Wrap every installed handler (call after app.api.errors.install_error_handlers)."""
    for kind, handler in list(app.exception_handlers.items()):
        app.add_exception_handler(kind, _as_page(handler))
    app.add_exception_handler(LoginRequired, _login_required)
