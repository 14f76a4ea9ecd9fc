from app.core.schema import PublicModel


class TierLimitsRead(PublicModel):
    create_per_minute: int
    query_per_minute: int
    max_active_tasks: int
    window_seconds: int


class AccountRead(PublicModel):
    id: str
    name: str
    balance: int
    tier: str
    limits: TierLimitsRead
    create_time: int
