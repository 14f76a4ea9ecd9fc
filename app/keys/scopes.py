from enum import StrEnum


class Scope(StrEnum):
    TASKS_READ = "tasks:read"
    TASKS_CREATE = "tasks:create"
    KEYS_MANAGE = "keys:manage"


ALL_SCOPES: frozenset[str] = frozenset(s.value for s in Scope)
