"""How the `gengate` command line reports a failure, whatever raised it.

Click parsing the command line, a service refusing, the database away: each ends as one
CommandFailed, reported once by ReportingGroup.main. With `--json` anywhere on the command
line, exactly one object `{"error", "field"}` on stdout (`field`: the option or argument at
fault, or null); without it, readable text on stderr. Either way a non-zero exit (2 for a
usage error, 1 otherwise) and never a traceback.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Sequence
from typing import Any

import typer
from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rich.console import Console
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from typer.core import TyperGroup

from app.catalog.catalog import CatalogError
from app.channels.config import ChannelError
from app.client.errors import GengateError
from app.core.errors import AppError
from app.imagine.styles import ImagineConfigError

# Services name fields as the REST API does; the CLI names them after its own options.
_CLI_FIELD_NAMES = {"scopes": "scope", "account_id": "account"}
_MAX_DETAIL = 200


class CommandFailed(Exception):
    """A command that could not be done: what went wrong and which option or argument."""

    def __init__(
        self, message: str, *, field: str | None = None, exit_code: int = 1, **extra: Any
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.exit_code = exit_code
        self.extra = extra

    def payload(self) -> dict[str, Any]:
        return {"error": self.message, "field": self.field, **self.extra}


def _lift_json_flag(args: Sequence[str]) -> tuple[list[str], bool]:
    """Move `--json` from wherever it was given to the root, where it is an option.

    Anywhere before `--`, that is: after it, `--json` is a value, not the flag. Lifting it
    lets every command and group take it, and keeps it from being read as an option's value.
    """
    end = list(args).index("--") if "--" in args else len(args)
    head = [a for a in args[:end] if a != "--json"]
    if len(head) == end:
        return list(args), False
    return ["--json", *head, *args[end:]], True


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:_MAX_DETAIL] if lines else type(exc).__name__


def _usage_field(exc: Exception) -> str | None:
    """The option or argument a click usage error is about, by its parameter name."""
    param = getattr(exc, "param", None)
    if param is not None and getattr(param, "name", None):
        return str(param.name)
    option = getattr(exc, "option_name", None)
    if option:
        return str(option).lstrip("-").replace("-", "_") or None
    return None


def _document(exc: CatalogError | ChannelError | ImagineConfigError) -> str:
    if isinstance(exc, ImagineConfigError):
        return "imagine configuration"
    return "model catalog" if isinstance(exc, CatalogError) else "channel file"


def _failure(exc: Exception) -> CommandFailed:
    """Any exception a command can end with, as a CommandFailed (nothing else escapes)."""
    if isinstance(exc, CommandFailed):
        return exc
    if isinstance(exc, AppError):
        return from_app_error(exc, default_field=None)
    if isinstance(exc, GengateError):  # a client command: the server's message and field
        return CommandFailed(exc.message, field=exc.field, **exc.details())
    if isinstance(exc, typer.TyperException):  # click's usage errors (vendored by typer)
        return CommandFailed(exc.format_message(), field=_usage_field(exc), exit_code=exc.exit_code)
    if isinstance(exc, typer.Abort):
        return CommandFailed("aborted")
    if isinstance(exc, CatalogError | ChannelError | ImagineConfigError):  # checked at start
        return CommandFailed(f"invalid {_document(exc)}: {_first_line(exc)}")
    if isinstance(exc, ValidationError):
        problems = "; ".join(
            f"GENGATE_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False)
        )
        return CommandFailed(f"invalid settings: {problems}")
    if isinstance(exc, DBAPIError) and _schema_missing(exc):
        return CommandFailed(
            f"database not migrated (run `gengate db upgrade`): {_first_line(exc.orig or exc)}"
        )
    if isinstance(exc, OperationalError | InterfaceError):
        return CommandFailed(f"database unreachable: {_first_line(exc.orig or exc)}")
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return CommandFailed(f"redis unreachable: {_first_line(exc)}")
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return CommandFailed(f"{exc.strerror or _first_line(exc)}{where}")
    return CommandFailed(f"internal error: {type(exc).__name__}: {_first_line(exc)}")


def _schema_missing(exc: DBAPIError) -> bool:
    """The database answers but has no tables yet (SQLite's message, PostgreSQL's 42P01)."""
    return "no such table" in str(exc.orig) or getattr(exc.orig, "sqlstate", None) == "42P01"


def from_app_error(exc: AppError, *, default_field: str | None) -> CommandFailed:
    details = dict(exc.details)
    field: str | None = details.pop("field", None) or default_field
    if field is not None:
        field = _CLI_FIELD_NAMES.get(field, field)
    return CommandFailed(exc.message, field=field, **details)


def _report(failure: CommandFailed, *, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(failure.payload()))
        return
    allowed = failure.extra.get("allowed")
    hint = f" (allowed: {', '.join(map(str, allowed))})" if isinstance(allowed, list) else ""
    if failure.field and failure.field not in failure.message:
        hint += f" [field: {failure.field}]"
    Console(stderr=True).print(
        f"[red]error:[/red] {failure.message}{hint}", highlight=False, soft_wrap=True
    )


class ReportingGroup(TyperGroup):
    """The root command: maps every failure to one report (see the module docstring)."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        argv, as_json = _lift_json_flag(sys.argv[1:] if args is None else args)
        try:
            # People keep typer's own usage messages; scripts get every error from here.
            result = super().main(
                argv,
                prog_name,
                complete_var,
                standalone_mode=standalone_mode and not as_json,
                **extra,
            )
        except Exception as exc:
            failure = _failure(exc)
            _report(failure, as_json=as_json)
            if not standalone_mode:
                raise failure from None
            sys.exit(failure.exit_code)
        if standalone_mode:  # reached only with --json: click's standalone exit, done here
            sys.exit(result if isinstance(result, int) else 0)
        return result


def report_thread_failure(args: threading.ExceptHookArgs) -> None:
    """A `threading.excepthook`: one line on stderr instead of a traceback."""
    if args.exc_type is not SystemExit:
        name = args.thread.name if args.thread else "a thread"
        print(
            f"warning: {name} failed: {args.exc_type.__name__}: {args.exc_value}", file=sys.stderr
        )
