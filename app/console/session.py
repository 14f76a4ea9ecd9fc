"""Who is signed in to the console, and the CSRF check of every form.

The cookie `gengate_console` holds a random token (HttpOnly, SameSite=Lax, Secure outside
development and tests); app.console.service keeps its hash with the key it was exchanged
for. Every request re-reads the session with its key, so revoking the key ends the session
at once, in every process. A page that needs a user depends on `require_user` (`UserDep`);
a form handler on `require_csrf` as well (`CsrfUserDep`).

Before signing in there is no session to hold a CSRF token, so the sign-in form's token is
an HMAC (keyed with the signing secret) of a random value in a cookie of its own.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import RedirectResponse, Response

from app.console.service import end_session, find_session
from app.core.errors import PermissionDenied
from app.db.engine import transaction
from app.keys.service import Principal
from app.runtime import Runtime

SESSION_COOKIE = "gengate_console"
LOGIN_COOKIE = "gengate_console_login"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
LOGIN_PATH = "/console/login"
HOME_PATH = "/console"
CSRF_REFUSED = "invalid or missing CSRF token"
_UNSET = object()


@dataclass(frozen=True)
class ConsoleUser:
    principal: Principal
    session_id: str
    csrf_token: str


class LoginRequired(Exception):
    """Raised by `require_user`; the console answers it with a redirect to the sign-in page."""

    def __init__(self, next_path: str) -> None:
        super().__init__("sign in first")
        self.next_path = next_path


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def secure_cookies(request: Request) -> bool:
    return _runtime(request).settings.env not in ("development", "test")


async def console_user(request: Request) -> ConsoleUser | None:
    """The signed-in user of this request, or None (read once per request)."""
    cached = getattr(request.state, "console_user", _UNSET)
    if cached is None or isinstance(cached, ConsoleUser):
        return cached
    user = None
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        async with transaction(_runtime(request).sessions) as session:
            found = await find_session(session, token=token)
        if found is not None:
            row, principal = found
            user = ConsoleUser(principal=principal, session_id=row.id, csrf_token=row.csrf_token)
    request.state.console_user = user
    return user


async def require_user(request: Request) -> ConsoleUser:
    """The signed-in user. Raises LoginRequired (a redirect to the sign-in page)."""
    user = await console_user(request)
    if user is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(target)
    return user


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a path on this site, else the overview."""
    if (
        not value
        or not value.startswith("/")
        or value.startswith("//")
        or "\\" in value
        or any(ord(c) < 0x20 for c in value)
    ):
        return HOME_PATH
    return value


def login_redirect(exc: LoginRequired) -> str:
    return f"{LOGIN_PATH}?next={quote(safe_next(exc.next_path), safe='/')}"


async def require_csrf(request: Request, user: ConsoleUser | None) -> None:
    """Refuse a state-changing request whose CSRF token (form field `csrf_token` or header
    `X-CSRF-Token`) is missing or wrong; with `user` None, the sign-in form's token.
    Raises PermissionDenied."""
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        form = await request.form()
        field = form.get(CSRF_FIELD)
        sent = field if isinstance(field, str) else None
    expected = user.csrf_token if user is not None else _login_token_expected(request)
    if not sent or not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise PermissionDenied(CSRF_REFUSED, field=CSRF_FIELD)


async def checked_user(request: Request) -> ConsoleUser:
    """`require_user` and `require_csrf`, for form handlers."""
    user = await require_user(request)
    await require_csrf(request, user)
    return user


UserDep = Annotated[ConsoleUser, Depends(require_user)]
CsrfUserDep = Annotated[ConsoleUser, Depends(checked_user)]


def _login_token_for(request: Request, nonce: str) -> str:
    secret = _runtime(request).signing_secret.encode()
    return hmac.new(secret, b"console-login:" + nonce.encode(), hashlib.sha256).hexdigest()


def _login_token_expected(request: Request) -> str | None:
    nonce = request.cookies.get(LOGIN_COOKIE)
    return _login_token_for(request, nonce) if nonce else None


def login_csrf_token(request: Request) -> tuple[str, str | None]:
    """The sign-in form's CSRF token, and the nonce cookie to set when the browser has none."""
    nonce = request.cookies.get(LOGIN_COOKIE)
    fresh = None
    if not nonce:
        nonce = fresh = secrets.token_urlsafe(24)
    return _login_token_for(request, nonce), fresh


def set_login_cookie(request: Request, response: Response, nonce: str) -> None:
    response.set_cookie(
        LOGIN_COOKIE,
        nonce,
        httponly=True,
        samesite="lax",
        secure=secure_cookies(request),
        path="/",
    )


def set_session_cookie(request: Request, response: Response, token: str, max_age_s: int) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=max_age_s,
        httponly=True,
        samesite="lax",
        secure=secure_cookies(request),
        path="/",
    )


async def sign_out(request: Request, user: ConsoleUser) -> Response:
    """Delete the session and its cookie; answers the redirect to the sign-in page."""
    async with transaction(_runtime(request).sessions) as session:
        await end_session(session, session_id=user.session_id)
    response = RedirectResponse(LOGIN_PATH, status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax")
    return response
