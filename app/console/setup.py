"""What the console adds to the app besides its routers: static files and error pages."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from app.console.errors import install_console_errors
from app.console.templating import STATIC_DIR, STATIC_PATH


def install_console(app: FastAPI) -> None:
    """Call after the API's error handlers are installed (the console wraps them)."""
    install_console_errors(app)
    app.mount(STATIC_PATH, StaticFiles(directory=STATIC_DIR), name="console-static")
