"""gengate's logging as a process configures it, written to memory for a test to read."""

from __future__ import annotations

import io
import json
import logging
import logging.config
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from app.core.logging import LogFormat, log_config

_CONFIGURED = ("gengate", "uvicorn", "uvicorn.access", "uvicorn.error", "")


class LogLines:
    """What a log stream holds so far: `read` gives its text."""

    def __init__(self, read: Callable[[], str]) -> None:
        self.text = read

    def records(self) -> list[dict[str, Any]]:
        """Every line, each parsed as one JSON object (a line that is not one fails)."""
        lines = self.text().splitlines()
        parsed = [json.loads(line) for line in lines]
        assert all(isinstance(record, dict) for record in parsed), lines
        return parsed

    def about(self, task_id: str) -> list[dict[str, Any]]:
        """The records whose message names the task."""
        return [r for r in self.records() if task_id in r["message"]]


@contextmanager
def captured_logs(log_format: LogFormat = "json", level: str = "INFO") -> Iterator[LogLines]:
    """`log_config` applied, its stream a buffer; the loggers it set up restored after."""
    loggers = [logging.getLogger(name or None) for name in _CONFIGURED]
    saved = [(lg, lg.handlers[:], lg.level, lg.propagate, lg.disabled) for lg in loggers]
    stream = io.StringIO()
    config = log_config(level, log_format)
    config["handlers"]["stderr"]["stream"] = stream
    logging.config.dictConfig(config)
    try:
        yield LogLines(stream.getvalue)
    finally:
        for logger, handlers, lvl, propagate, disabled in saved:
            for handler in logger.handlers:
                if handler not in handlers:
                    handler.close()
            logger.handlers[:] = handlers
            logger.setLevel(lvl)
            logger.propagate, logger.disabled = propagate, disabled
