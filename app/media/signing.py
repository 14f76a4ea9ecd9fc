"""Signed, expiring media URLs: the signature is the credential, so no API key is needed.

The signature covers the file id and the expiry, so neither can be changed without the
secret. Nothing is stored per URL: asking for a task again simply mints fresh ones.
"""

from __future__ import annotations

import base64
import hashlib
import hmac


def sign_media(secret: str, file_id: str, expires_at_s: int) -> str:
    """HMAC-SHA256 of `"{file_id}.{expires_at_s}"`, base64url without padding."""
    message = f"{file_id}.{expires_at_s}".encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def verify_media(
    secret: str, file_id: str, expires_at_s: int, signature: str, *, now_s: int
) -> bool:
    """True if `signature` is ours for this id and expiry and `now_s` is before the expiry."""
    expected = sign_media(secret, file_id, expires_at_s)
    # compare_digest on bytes: constant-time, and no TypeError for non-ASCII input.
    valid = hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace"))
    return valid and now_s < expires_at_s
