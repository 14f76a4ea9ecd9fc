"""Every table model, imported in one place so Alembic and tests see the whole schema."""

from sqlmodel import SQLModel

from app.accounts.models import Account
from app.callbacks.models import CallbackAttempt, CallbackDelivery, WebhookSecret
from app.channels.models import TaskAttempt
from app.console.models import ConsoleSession
from app.credits.models import LedgerEntry
from app.jobs.models import Task, TaskGroup
from app.keys.models import ApiKey
from app.maintenance.models import MaintenanceJob
from app.media.models import MediaFile
from app.oauth.models import GrantToken, OAuthClient, OAuthCode, OAuthGrant, OAuthRequest

metadata = SQLModel.metadata

__all__ = [
    "Account",
    "ApiKey",
    "CallbackAttempt",
    "CallbackDelivery",
    "ConsoleSession",
    "GrantToken",
    "LedgerEntry",
    "MaintenanceJob",
    "MediaFile",
    "OAuthClient",
    "OAuthCode",
    "OAuthGrant",
    "OAuthRequest",
    "Task",
    "TaskAttempt",
    "TaskGroup",
    "WebhookSecret",
    "metadata",
]
