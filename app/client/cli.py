"""The client's commands of `gengate`: generate, status, tasks.

They reach a gengate server over HTTP (GENGATE_URL, else http://127.0.0.1:8000) with
GENGATE_API_KEY, through app.client, and share the admin commands' conventions: `--json`
prints one object; a failure (the server's message and field) exits non-zero, reported by
the root command (app.cli_errors). The key is read from the environment only, never from
the command line, where other users of the machine could see it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, cast

import typer
from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from app.client.errors import GengateError, TaskFailed
from app.client.models import TASK_STATUSES, Task, TaskPage
from app.client.sync import Client

console = Console()

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="GENGATE_URL",
        help="The gengate server. The API key comes from GENGATE_API_KEY.",
        show_default="http://127.0.0.1:8000",
    ),
]
WaitOption = Annotated[
    bool, typer.Option("--wait", help="Wait for the result, with a progress bar.")
]
OutOption = Annotated[
    Path | None,
    typer.Option(
        "--out", help="Save the result files into this directory (implies --wait).", file_okay=False
    ),
]
TimeoutOption = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        min=0,
        help="Give up waiting after this many seconds (the task goes on); default: as long "
        "as it takes.",
    ),
]


def register(app: typer.Typer) -> None:
    """Add the client's commands to the `gengate` command."""
    app.command("generate")(generate)
    app.command("status")(status)
    app.command("tasks")(tasks)


def _as_json(ctx: typer.Context) -> bool:
    return bool((ctx.find_root().obj or {}).get("json"))


def _parse_params(values: list[str] | None) -> list[str] | None:
    for value in values or []:
        _param(value)  # refuses a malformed one with the option's name
    return values


def _param(text: str) -> tuple[str, Any]:
    """`k=v`: v as JSON when it parses (numbers, booleans, lists, objects), else a string."""
    name, sep, raw = text.partition("=")
    if not sep or not name.strip():
        raise typer.BadParameter(f"expected name=value, got {text!r}")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return name.strip(), value


def _bad_option(ctx: typer.Context, name: str, message: str) -> typer.BadParameter:
    """A usage error naming the option `name` (as a callback's error does)."""
    param = next((p for p in ctx.command.params if p.name == name), None)
    return typer.BadParameter(message, ctx=ctx, param=cast(Any, param))


def generate(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model id (GET /api/v1/models lists them).")],
    prompt: Annotated[str | None, typer.Option("--prompt", "-p", help="What to generate.")] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            "-P",
            help="A model input as name=value; repeat for more. The value is read as JSON when "
            'it is JSON (5, true, ["https://..."]), else as text (16:9).',
            callback=_parse_params,
        ),
    ] = None,
    wait: WaitOption = False,
    out: OutOption = None,
    timeout: TimeoutOption = None,
    callback_url: Annotated[
        str | None, typer.Option("--callback-url", help="Where to POST the outcome.")
    ] = None,
    request_id: Annotated[
        str | None,
        typer.Option(
            "--request-id",
            help="X-Request-Id: the same id answers the same task instead of making another "
            "(default: a new id, so that a retried send never makes two tasks).",
        ),
    ] = None,
    url: UrlOption = None,
) -> None:
    """Create a generation task; with --wait, watch it and (--out) save its files."""
    inputs = dict(_param(p) for p in param or [])
    if prompt is not None:
        if "prompt" in inputs:
            raise _bad_option(ctx, "prompt", "give the prompt once: --prompt or --param prompt=")
        inputs = {"prompt": prompt, **inputs}
    with Client(url) as client:
        created = client.create(
            model,
            inputs,
            callback_url=callback_url,
            request_id=request_id or f"cli-{uuid.uuid4().hex}",
        )
        if not (wait or out):
            _emit(
                ctx,
                created.to_json(),
                lambda: console.print(
                    f"task {created.task_id} ({created.model}): {created.state}", highlight=False
                ),
            )
            return
        _finish(ctx, client, created.task_id, out=out, timeout=timeout)


def status(
    ctx: typer.Context,
    task_id: Annotated[str, typer.Argument(metavar="TASK", help="Task id (task_...).")],
    wait: WaitOption = False,
    out: OutOption = None,
    timeout: TimeoutOption = None,
    url: UrlOption = None,
) -> None:
    """Show a task: state, stage, queue position, progress, results."""
    with Client(url) as client:
        if wait or out:
            _finish(ctx, client, task_id, out=out, timeout=timeout)
            return
        task = client.get(task_id)
        _emit(ctx, task.to_json(), lambda: _print_task(task))


def _finish(
    ctx: typer.Context, client: Client, task_id: str, *, out: Path | None, timeout: float | None
) -> None:
    """Wait for the task (a progress bar unless --json), save its files, report it."""
    try:
        with _progress(task_id, quiet=_as_json(ctx)) as on_update:
            task = client.wait(task_id, timeout=timeout, on_update=on_update)
    except KeyboardInterrupt:
        raise GengateError(
            f"stopped waiting; task {task_id} goes on (gengate status {task_id} --wait)"
        ) from None
    if not task.succeeded:
        raise TaskFailed(task)
    files = [] if out is None else client.download(task, out)

    def human() -> None:
        _print_task(task)
        for path in files:
            console.print(str(path), highlight=False, soft_wrap=True)

    payload = task.to_json()
    if out is not None:
        payload["files"] = [str(path) for path in files]
    _emit(ctx, payload, human)


@contextmanager
def _progress(task_id: str, *, quiet: bool) -> Iterator[Any]:
    """An on_update callback drawing stage, queue position and progress on stderr."""
    if quiet:
        yield None
        return
    bar = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    line = bar.add_task(task_id, total=100)

    def on_update(task: Task) -> None:
        bar.update(line, description=_where(task), completed=task.progress)

    with bar:
        yield on_update


def _where(task: Task) -> str:
    if task.done:
        return f"{task.task_id}: {task.state}"
    if task.stage == "queued" and task.queue_position:
        place = "1000+" if task.queue_position >= 1000 else str(task.queue_position)
        return f"{task.task_id}: queued, #{place} in the queue"
    return f"{task.task_id}: {task.stage or task.state}"


def _time(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds")


def _print_task(task: Task) -> None:
    rows = [
        ("task", task.task_id),
        ("model", task.model),
        ("state", task.state if task.done else _where(task).split(": ", 1)[1]),
        ("progress", f"{task.progress}%"),
        ("credits", str(task.credits)),
        ("created", _time(task.create_time)),
        ("completed", _time(task.complete_time)),
        ("took", "" if task.cost_time is None else f"{task.cost_time / 1000:g} s"),
        ("failure", f"{task.fail_code}: {task.fail_msg}" if task.fail_code else ""),
        (
            "made from",
            f"{task.parent_task_id} ({task.action} of #{task.index})"
            if task.parent_task_id
            else "",
        ),
    ]
    for name, value in rows:
        if value:
            console.print(f"{name:>10}  {value}", highlight=False, soft_wrap=True)
    for url in task.result_urls:
        console.print(f"{'result':>10}  {url}", highlight=False, soft_wrap=True)


def _check_status(value: str | None) -> str | None:
    if value is not None and _status_code(value) is None:
        raise typer.BadParameter(f"one of {', '.join(TASK_STATUSES)} (or 0-3), got {value!r}")
    return value


def _status_code(value: str | None) -> int | None:
    """A /v1 status code from its name or number; None for none (or an unknown one)."""
    text = (value or "").strip().lower()
    if text.isdigit() and int(text) in TASK_STATUSES.values():
        return int(text)
    return TASK_STATUSES.get(text)


def tasks(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option(help="Only this model's tasks.")] = None,
    status: Annotated[
        str | None,
        typer.Option(
            help="pending, processing, completed or failed (or 0-3).", callback=_check_status
        ),
    ] = None,
    start: Annotated[str | None, typer.Option(help="First day, YYYY-MM-DD (UTC).")] = None,
    end: Annotated[str | None, typer.Option(help="Last day, YYYY-MM-DD (UTC).")] = None,
    page: Annotated[int, typer.Option(min=1, help="Page number, from 1.")] = 1,
    page_size: Annotated[int, typer.Option(min=1, max=100, help="Tasks a page.")] = 20,
    url: UrlOption = None,
) -> None:
    """List your tasks, newest first (GET /v1/tasks)."""
    with Client(url) as client:
        listed = client.tasks(
            model=model,
            status=_status_code(status),
            start=start,
            end=end,
            page=page,
            page_size=page_size,
        )
    _emit(ctx, listed.to_json(), lambda: _print_page(listed))


_STATUS_NAMES = {code: name for name, code in TASK_STATUSES.items()}


def _print_page(listed: TaskPage) -> None:
    # Ids are never cut (people copy them); the other columns fold on a narrow terminal.
    lineage = any(t.parent_task_id for t in listed.tasks)
    table = Table("model", "status", "credits", "created (UTC)", "files", box=box.SIMPLE_HEAD)
    table.add_column("id", no_wrap=True)
    if lineage:
        table.add_column("made from")
    for column in table.columns:
        column.overflow = "ellipsis" if column.header == "id" else "fold"
    table.columns.insert(0, table.columns.pop(-2 if lineage else -1))
    for t in listed.tasks:
        row = [
            t.id,
            t.model,
            _STATUS_NAMES.get(t.status, str(t.status)),
            str(t.cost),
            (t.created_at or "").replace("T", " ").rstrip("Z"),
            str(len(t.response.assets)),
        ]
        if lineage:
            row.append(f"{t.action} of {t.parent_task_id} #{t.index}" if t.parent_task_id else "")
        table.add_row(*row)
    console.print(table)
    total = f"{listed.total}+" if listed.total_is_estimate else str(listed.total)
    console.print(f"page {listed.page}, {len(listed.tasks)} of {total} tasks", highlight=False)


def _emit(ctx: typer.Context, payload: dict[str, Any], human: Any) -> None:
    if _as_json(ctx):
        typer.echo(json.dumps(payload))
    else:
        human()
