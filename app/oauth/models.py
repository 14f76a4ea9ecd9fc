"""OAuth tables: registered clients, pending authorizations, codes, grants and tokens.

Codes and tokens are stored only as their SHA-256 (they carry 256 random bits, as API keys
do, so a plain digest is enough). A grant is one approval by one API key; every token
issued from it (the first pair and each rotation) points at it, so revoking the grant, or
the key, ends them all.
"""

from sqlalchemy import BigInteger, Column, Text
from sqlmodel import Field, SQLModel


class OAuthClient(SQLModel, table=True):
    """A client registered through dynamic client registration (RFC 7591)."""

    __tablename__ = "oauth_client"

    id: str = Field(primary_key=True, max_length=64, description="the client_id")
    name: str | None = Field(default=None, max_length=200)
    registration: str = Field(
        sa_column=Column(Text, nullable=False),
        description="the registered metadata as JSON (OAuthClientInformationFull)",
    )
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))


class OAuthRequest(SQLModel, table=True):
    """An authorization request waiting for the user's consent in the console."""

    __tablename__ = "oauth_request"

    id: str = Field(primary_key=True, max_length=64, description="SHA-256 of the request id")
    client_id: str = Field(foreign_key="oauth_client.id", max_length=64)
    redirect_uri: str = Field(sa_column=Column(Text, nullable=False))
    redirect_uri_explicit: bool
    scopes: str | None = Field(default=None, max_length=200, description="as asked, or none")
    code_challenge: str = Field(max_length=128)
    state: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    resource: str = Field(sa_column=Column(Text, nullable=False))
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    expires_at: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))


class OAuthGrant(SQLModel, table=True):
    """One approval: a client acting for one API key, with some of its scopes, for one
    resource (the MCP endpoint's URL)."""

    __tablename__ = "oauth_grant"

    id: str = Field(primary_key=True, max_length=40)
    client_id: str = Field(foreign_key="oauth_client.id", index=True, max_length=64)
    key_id: str = Field(foreign_key="api_key.id", index=True, max_length=40)
    scopes: str = Field(max_length=200, description="space-separated scope names")
    resource: str = Field(sa_column=Column(Text, nullable=False))
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    revoked_at: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class OAuthCode(SQLModel, table=True):
    """An authorization code: single use, a few minutes."""

    __tablename__ = "oauth_code"

    id: str = Field(primary_key=True, max_length=64, description="SHA-256 of the code")
    grant_id: str = Field(foreign_key="oauth_grant.id", index=True, max_length=40)
    redirect_uri: str = Field(sa_column=Column(Text, nullable=False))
    redirect_uri_explicit: bool
    code_challenge: str = Field(max_length=128)
    expires_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    used_at: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class GrantToken(SQLModel, table=True):
    """An access or refresh token of a grant. A refresh token is used once: rotating it
    sets `used_at`, and presenting it again revokes the grant."""

    __tablename__ = "oauth_token"

    id: str = Field(primary_key=True, max_length=64, description="SHA-256 of the token")
    grant_id: str = Field(foreign_key="oauth_grant.id", index=True, max_length=40)
    kind: str = Field(max_length=8, description="access | refresh")
    scopes: str = Field(max_length=200, description="space-separated scope names")
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    expires_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    used_at: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
