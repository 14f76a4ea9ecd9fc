"""The gengate client: `Client` (blocking) and `AsyncClient` (asyncio), over httpx.

It speaks HTTP only and imports nothing else of gengate, so it runs wherever httpx and
pydantic are installed (`gengate.client` is the same module)::

    from gengate.client import Client

    with Client() as gengate:  # GENGATE_URL, GENGATE_API_KEY
        created = gengate.create("gpt-image-2-text-to-image", {"prompt": "A red bicycle"})
        task = gengate.wait(created.task_id, on_update=lambda t: print(t.stage, t.progress))
        paths = gengate.download(task, "out")
"""

from app.client.aio import AsyncClient
from app.client.errors import (
    ApiError,
    AuthenticationError,
    BadRequest,
    ConfigurationError,
    Conflict,
    ConnectionFailed,
    DownloadError,
    GengateError,
    InsufficientCredits,
    NotFound,
    PermissionDenied,
    RateLimited,
    ServerError,
    TaskNotSucceeded,
    WaitTimeout,
)
from app.client.models import TASK_STATUSES, Asset, Task, TaskCreated, TaskItem, TaskPage
from app.client.plans import Polling
from app.client.sync import Client

__all__ = [
    "TASK_STATUSES",
    "ApiError",
    "Asset",
    "AsyncClient",
    "AuthenticationError",
    "BadRequest",
    "Client",
    "ConfigurationError",
    "Conflict",
    "ConnectionFailed",
    "DownloadError",
    "GengateError",
    "InsufficientCredits",
    "NotFound",
    "PermissionDenied",
    "Polling",
    "RateLimited",
    "ServerError",
    "Task",
    "TaskCreated",
    "TaskItem",
    "TaskNotSucceeded",
    "TaskPage",
    "WaitTimeout",
]
