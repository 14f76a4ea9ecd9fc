"""Where the authorization server and the protected resource (the MCP endpoint) live.

The configured public URL when there is one, else the request's own base URL (the server
does not know its address before it runs): the metadata, the resource a code is issued
for and the audience check of every MCP request all come from here, so they agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.jobs.views import base_url_of
from app.runtime import Runtime
from mcp_server.server import MCP_PATH

PROTECTED_RESOURCE_PATH = "/.well-known/oauth-protected-resource"
AUTHORIZATION_SERVER_PATH = "/.well-known/oauth-authorization-server"


@dataclass(frozen=True)
class OAuthUrls:
    issuer: str  # no trailing slash: RFC 8414 compares issuers as strings
    resource: str

    @property
    def resource_metadata(self) -> str:
        """RFC 9728 §3.1: the well-known path with the resource's path appended."""
        return self.issuer + PROTECTED_RESOURCE_PATH + MCP_PATH


def oauth_urls(runtime: Runtime, request_base: str) -> OAuthUrls:
    issuer = base_url_of(runtime, request_base)
    return OAuthUrls(issuer=issuer, resource=issuer + MCP_PATH)
