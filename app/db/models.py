"""Every table model, imported in one place so Alembic and tests see the whole schema."""

from sqlmodel import SQLModel

from app.accounts.models import Account
from app.credits.models import LedgerEntry
from app.keys.models import ApiKey

metadata = SQLModel.metadata

__all__ = ["Account", "ApiKey", "LedgerEntry", "metadata"]
