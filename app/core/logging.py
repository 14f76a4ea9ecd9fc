"""Logging for every gengate process: one stream (stderr), as text or as one JSON object per
line, with secrets redacted from everything that reaches it."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any, Literal

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from app.core import correlation

LogFormat = Literal["text", "json"]
REDACTED = "[redacted]"
_PATTERNS = (
    # API keys, even one a client put in a URL by mistake; Standard Webhooks secrets.
    (re.compile(r"(?<![A-Za-z0-9_-])sk_[A-Za-z0-9_-]{6,}"), f"sk_{REDACTED}"),
    (re.compile(r"(?<![A-Za-z0-9_-])whsec_[A-Za-z0-9+/=]{6,}"), f"whsec_{REDACTED}"),
    # OAuth access and refresh tokens and codes (app.oauth), say in a token request's body.
    (re.compile(r"(?<![A-Za-z0-9_-])(gg[acr]_)[A-Za-z0-9_-]{6,}"), rf"\1{REDACTED}"),
    # Authorization header values: `Authorization: <anything>`, and a credential with its
    # scheme wherever it shows (a repr of a headers list, say).
    (re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)[^\"'\\\r\n]+"), rf"\1{REDACTED}"),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{6,}"), rf"\1 {REDACTED}"),
)
# Shorter values would redact ordinary words all over the logs.
HIDDEN_MIN_LENGTH = 8
_hidden: re.Pattern[str] | None = None
_hidden_values: set[str] = set()


def hide_in_logs(secret: str) -> None:
    """Redact this exact value (the signing secret, a channel's API key) wherever it would
    be logged: unlike gengate's own keys, such values have no shape to recognise them by."""
    global _hidden
    if len(secret) < HIDDEN_MIN_LENGTH:
        return
    # As written, and as it reads inside a JSON string (escaped quotes and backslashes).
    _hidden_values.update({secret, json.dumps(secret)[1:-1]})
    longest_first = sorted(_hidden_values, key=len, reverse=True)
    _hidden = re.compile("|".join(re.escape(value) for value in longest_first))


def redact(line: str) -> str:
    """`line` with every secret it holds replaced."""
    if _hidden is not None:
        line = _hidden.sub(REDACTED, line)
    for pattern, replacement in _PATTERNS:
        line = pattern.sub(replacement, line)
    return line


class TextLines(logging.Formatter):
    """The readable format; redacted as a whole line, so a traceback is too."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonLines(JsonFormatter):
    """One JSON object per line: time (ISO 8601, UTC), level, logger, message, then
    correlation_id and task_id when known, `extra` fields, and a traceback as `exc_info`,
    one string whose line breaks JSON escapes, so it never breaks the line.

    Redacted after serialising: a secret is caught in the message, an extra field or a
    traceback alike.
    """

    def __init__(self) -> None:
        super().__init__(
            "levelname,name,message",
            style=",",
            rename_fields={"levelname": "level", "name": "logger"},
            # uvicorn's copy of a message with terminal colours.
            reserved_attrs=[*RESERVED_ATTRS, "color_message"],
        )

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        log_data["time"] = datetime.fromtimestamp(record.created, UTC).isoformat(
            timespec="milliseconds"
        )
        super().add_fields(log_data, record, message_dict)
        context = correlation.current()
        if context.correlation_id is not None:
            log_data.setdefault("correlation_id", context.correlation_id)
        if context.task_id is not None:
            log_data.setdefault("task_id", context.task_id)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


_FORMATTERS: dict[str, dict[str, Any]] = {
    "text": {"()": TextLines, "fmt": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    "json": {"()": JsonLines},
}


def log_config(level: str, log_format: LogFormat) -> dict[str, Any]:
    """A `logging.config.dictConfig` for uvicorn (its access log too) and gengate alike."""
    handler = {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "formatter": "lines"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"lines": _FORMATTERS[log_format]},
        "handlers": {"stderr": handler},
        "loggers": {
            "gengate": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn.access": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn.error": {"handlers": ["stderr"], "level": level, "propagate": False},
        },
        "root": {"handlers": ["stderr"], "level": "WARNING"},
    }
