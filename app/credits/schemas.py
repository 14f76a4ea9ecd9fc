from datetime import date

from pydantic import Field

from app.core.schema import PublicModel


class LedgerEntryRead(PublicModel):
    id: int
    kind: str
    amount: int
    balance_after: int
    task_id: str | None
    note: str | None
    create_time: int


class LedgerPage(PublicModel):
    items: list[LedgerEntryRead]
    has_more: bool
    next_cursor: int | None


class DailyUsage(PublicModel):
    day: date = Field(description="a UTC day")
    held: int = Field(description="credits held by tasks created that day")
    refunded: int = Field(description="credits given back that day")
    used: int = Field(description="held minus refunded")
