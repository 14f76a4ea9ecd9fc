"""Upload shapes shared by REST and MCP."""

from __future__ import annotations

from pydantic import Field

from app.core.schema import PublicModel


class UploadRead(PublicModel):
    """A stored upload: pass `url` as an input image (input_urls, image_urls) of a task."""

    id: str = Field(description="file_... id of the upload")
    url: str = Field(description="Signed download URL, valid until expiresAt")
    content_type: str = Field(description="Detected from the bytes: image/png, jpeg, webp, gif")
    size_bytes: int = Field(alias="bytes", description="Size of the stored file")
    width: int
    height: int
    sha256: str = Field(description="Hex SHA-256 of the stored bytes")
    expires_at: int = Field(description="When the upload is deleted, epoch milliseconds")
