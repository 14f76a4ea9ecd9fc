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
