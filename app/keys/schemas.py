from pydantic import Field

from app.core.schema import PublicModel
from app.core.text import SafeText
from app.keys.models import ApiKey
from app.keys.scopes import Scope


class ApiKeyCreate(PublicModel):
    name: SafeText = Field(min_length=1, max_length=200)
    scopes: list[Scope] | None = Field(
        default=None, description="defaults to the calling key's scopes"
    )


class ApiKeyRead(PublicModel):
    id: str
    account_id: str
    name: str
    prefix: str
    tier: str
    scopes: list[str]
    disabled: bool
    create_time: int
    last_used_time: int | None
    revoke_time: int | None

    @classmethod
    def of(cls, key: ApiKey) -> "ApiKeyRead":
        return cls(
            id=key.id,
            account_id=key.account_id,
            name=key.name,
            prefix=key.prefix,
            tier=key.tier,
            scopes=key.scopes.split(),
            disabled=key.disabled,
            create_time=key.created_at,
            last_used_time=key.last_used_at,
            revoke_time=key.revoked_at,
        )


class ApiKeyCreated(ApiKeyRead):
    key: str = Field(description="the secret key; shown only in this response")
