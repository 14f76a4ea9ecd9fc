"""app.oauth.service behind the `mcp` SDK's `OAuthAuthorizationServerProvider` protocol.

One provider per request: it knows the issuer and resource URLs of that request (the
configured public URL, else the request's own base), so metadata, codes and the audience
check agree however the server is reached. Each call is one transaction.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from urllib.parse import urlencode

from mcp.server.auth.provider import (
    AuthorizationParams,
    AuthorizeError,
    OAuthAuthorizationServerProvider,
    RegistrationError,
    TokenError,
)
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import InvalidInput
from app.core.outages import unavailable_on_outage
from app.db.engine import transaction
from app.oauth import service, tokens
from app.oauth.tokens import IssuedAccessToken, IssuedCode, IssuedRefreshToken, Lifetimes
from app.runtime import Runtime

CONSENT_PATH = "/console/oauth/consent"


class GengateOAuthProvider(
    OAuthAuthorizationServerProvider[IssuedCode, IssuedRefreshToken, IssuedAccessToken]
):
    def __init__(self, runtime: Runtime, *, resource: str) -> None:
        self._runtime = runtime
        self._resource = resource
        settings = runtime.settings
        self._lifetimes = Lifetimes(
            access_s=settings.oauth_access_token_seconds,
            refresh_s=settings.oauth_refresh_token_days * 86400,
        )

    def _transaction(self) -> AbstractAsyncContextManager[AsyncSession]:
        return transaction(self._runtime.sessions)

    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None:
        with unavailable_on_outage():
            async with self._transaction() as session:
                return await service.find_client(session, client_id=client_id)

    async def register_client(self, client_info: OAuthClientInformationFull) -> None:
        try:
            with unavailable_on_outage():
                async with self._transaction() as session:
                    await service.register_client(session, client=client_info)
        except InvalidInput as exc:
            raise RegistrationError("invalid_redirect_uri", exc.message) from exc

    async def authorize(
        self, client: OAuthClientInformationFull, params: AuthorizationParams
    ) -> str:
        """Keep the request and send the browser to the consent page."""
        try:
            with unavailable_on_outage():
                async with self._transaction() as session:
                    request_id = await service.open_request(
                        session, client=client, params=params, resource=self._resource
                    )
        except InvalidInput as exc:
            field = exc.details.get("field")
            if field == "resource":
                raise AuthorizeError("invalid_target", exc.message) from exc
            if field == "scope":
                raise AuthorizeError("invalid_scope", exc.message) from exc
            raise AuthorizeError("invalid_request", exc.message) from exc
        return f"{CONSENT_PATH}?{urlencode({'request': request_id})}"

    async def load_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: str
    ) -> IssuedCode | None:
        with unavailable_on_outage():
            async with self._transaction() as session:
                return await tokens.find_code(
                    session, client_id=client.client_id, code=authorization_code
                )

    async def exchange_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: IssuedCode
    ) -> OAuthToken:
        try:
            with unavailable_on_outage():
                async with self._transaction() as session:
                    return await tokens.exchange_code(
                        session, code=authorization_code, lifetimes=self._lifetimes
                    )
        except InvalidInput as exc:
            raise TokenError("invalid_grant", exc.message) from exc

    async def load_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: str
    ) -> IssuedRefreshToken | None:
        with unavailable_on_outage():
            async with self._transaction() as session:
                return await tokens.find_refresh_token(
                    session, client_id=client.client_id, token=refresh_token
                )

    async def exchange_refresh_token(
        self,
        client: OAuthClientInformationFull,
        refresh_token: IssuedRefreshToken,
        scopes: list[str],
    ) -> OAuthToken:
        try:
            with unavailable_on_outage():
                async with self._transaction() as session:
                    return await tokens.rotate_refresh_token(
                        session, token=refresh_token, scopes=scopes, lifetimes=self._lifetimes
                    )
        except InvalidInput as exc:
            raise TokenError("invalid_grant", exc.message) from exc

    async def load_access_token(self, token: str) -> IssuedAccessToken | None:
        with unavailable_on_outage():
            async with self._transaction() as session:
                return await tokens.find_access_token(session, token=token)

    async def revoke_token(self, token: IssuedAccessToken | IssuedRefreshToken) -> None:
        """Either token revokes its whole grant (RFC 7009 §2.1 allows it; the MCP client
        gets no half-working pair)."""
        with unavailable_on_outage():
            async with self._transaction() as session:
                await tokens.revoke_grant(session, grant_id=token.grant_id)
