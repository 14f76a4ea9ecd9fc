"""`AsyncClient`: the asyncio client. What each call does is in app.client.plans."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from app.client import downloads, plans
from app.client.models import Task, TaskCreated, TaskItem, TaskPage
from app.client.plans import Polling
from app.client.steps import (
    DEFAULT_TIMEOUT,
    USER_AGENT,
    ClientBase,
    Fetch,
    Notify,
    Plan,
    Send,
    Sleep,
    Step,
    error_from,
)

T = TypeVar("T")


class AsyncClient(ClientBase):
    """gengate over HTTP, for asyncio; `on_update` may be a coroutine function.

    `base_url` and `api_key` default to GENGATE_URL (else http://127.0.0.1:8000) and
    GENGATE_API_KEY. The key is sent to `base_url` only, never to result URLs.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        max_retries: int = 3,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(base_url, api_key, max_retries=max_retries)
        self._own_http = http_client is None
        self._http = http_client or httpx.AsyncClient(
            timeout=timeout, headers={"User-Agent": USER_AGENT}
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    # -------------------------------------------------------------------------- calls

    async def create(
        self,
        model: str,
        input: dict[str, Any] | None = None,
        *,
        callback_url: str | None = None,
        request_id: str | None = None,
    ) -> TaskCreated:
        """jobs.createTask. With `request_id` (X-Request-Id) the call is retried safely."""
        return await self._run(
            plans.create(
                self.settings,
                model,
                dict(input or {}),
                callback_url=callback_url,
                request_id=request_id,
            )
        )

    async def get(self, task_id: str) -> Task:
        """jobs.recordInfo: state, stage, progress, queue position, result URLs."""
        return await self._run(plans.get(self.settings, task_id))

    async def wait(
        self,
        task_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (the same call as Client.wait)
        on_update: Callable[[Task], Any] | None = None,
        polling: Polling = Polling(),
    ) -> Task:
        """Poll until the task succeeds or fails and return it; `on_update(task)` sees each
        change. Raises WaitTimeout after `timeout` seconds (None: as long as it takes; the
        server fails a task that outlives its model's deadline)."""
        return await self._run(
            plans.wait(
                self.settings, task_id, timeout=timeout, on_update=on_update, polling=polling
            )
        )

    async def download(
        self, task: Task | TaskItem | TaskCreated | str, directory: str | Path
    ) -> list[Path]:
        """Save every result file of a succeeded task into `directory`; returns the paths."""
        return await self._run(downloads.download(self.settings, task, Path(directory)))

    async def imagine(
        self,
        prompt: str | None = None,
        *,
        n: int | None = None,
        model: str | None = None,
        style: str | None = None,
        reference: list[str] | None = None,
        callback_url: str | None = None,
        request_id: str | None = None,
        **params: Any,
    ) -> list[str]:
        """POST /v1/imagine: `n` tasks from one request; the model's own parameters go in
        `params`. Returns the new task ids."""
        return await self._run(
            plans.imagine(
                self.settings,
                prompt=prompt,
                n=n,
                model=model,
                style=style,
                reference=reference,
                callback_url=callback_url,
                request_id=request_id,
                params=params,
            )
        )

    async def reimagine(
        self,
        task_id: str,
        index: int,
        action: str,
        *,
        prompt: str | None = None,
        reference: list[str] | None = None,
        callback_url: str | None = None,
        request_id: str | None = None,
    ) -> list[str]:
        """POST /v1/reimagine: upscale, variation or reroll of a completed task's asset
        (`index` from 1). Returns the new task ids."""
        return await self._run(
            plans.reimagine(
                self.settings,
                task_id=task_id,
                index=index,
                action=action,
                prompt=prompt,
                reference=reference,
                callback_url=callback_url,
                request_id=request_id,
            )
        )

    async def tasks(
        self,
        *,
        model: str | None = None,
        status: int | None = None,
        start: str | None = None,
        end: str | None = None,
        page: int = 1,
        page_size: int = 20,
    ) -> TaskPage:
        """GET /v1/tasks: the key's tasks, newest first. `status` 0 pending, 1 processing,
        2 completed, 3 failed; `start` / `end` YYYY-MM-DD (UTC, inclusive)."""
        return await self._run(
            plans.tasks(
                self.settings,
                model=model,
                status=status,
                start=start,
                end=end,
                page=page,
                page_size=page_size,
            )
        )

    async def task(self, task_id: str) -> TaskItem:
        """GET /v1/tasks/{id}: one task as the history lists it, with its asset ids."""
        return await self._run(plans.task_item(self.settings, task_id))

    # -------------------------------------------------------------------------- driver

    async def _run(self, plan: Plan[T]) -> T:
        outcome: Any = None
        while True:
            try:
                step = plan.send(outcome)
            except StopIteration as done:
                return done.value
            outcome = await self._do(step)

    async def _do(self, step: Step) -> Any:
        if isinstance(step, Send):
            try:
                return await self._http.request(
                    step.method,
                    self.base_url + step.path,
                    params=step.params,
                    json=step.json,
                    headers=step.headers,
                )
            except httpx.TransportError as exc:
                return exc
        if isinstance(step, Sleep):
            await asyncio.sleep(step.seconds)
            return None
        if isinstance(step, Notify):
            result = step.callback(step.task)
            return (await result) if inspect.isawaitable(result) else result
        return await self._fetch(step)

    async def _fetch(self, step: Fetch) -> Any:
        sink = step.sink
        try:
            async with self._http.stream("GET", step.url) as response:
                if response.status_code != 200:
                    await response.aread()
                    return error_from(response)
                sink.open()
                async for chunk in response.aiter_bytes():
                    sink.write(chunk)
        except httpx.TransportError as exc:
            sink.discard()
            return exc
        except BaseException:
            sink.discard()
            raise
        return sink.finish()
