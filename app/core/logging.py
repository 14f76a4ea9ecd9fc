"""Logging for every gengate process: one stream (stderr), API keys redacted everywhere."""

from __future__ import annotations

import logging
import re
from typing import Any

_KEY = re.compile(r"(?<![A-Za-z0-9_-])sk_[A-Za-z0-9_-]{6,}")


class RedactKeys(logging.Filter):
    """Replace anything shaped like an API key, even one a client put in a URL by mistake."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "sk_" in message:
            record.msg = _KEY.sub("sk_[redacted]", message)
            record.args = None
        return True


def log_config(level: str) -> dict[str, Any]:
    """A `logging.config.dictConfig` for uvicorn and gengate alike."""
    handler = {
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
        "formatter": "plain",
        "filters": ["redact"],
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": RedactKeys}},
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
        "handlers": {"stderr": handler},
        "loggers": {
            "gengate": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn.access": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn.error": {"handlers": ["stderr"], "level": level, "propagate": False},
        },
        "root": {"handlers": ["stderr"], "level": "WARNING"},
    }
