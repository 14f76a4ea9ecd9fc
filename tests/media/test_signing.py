import re
from collections.abc import Callable

import pytest

from app.media.signing import sign_media, verify_media

SECRET = "s3cret-for-tests"
FILE_ID = "media_0190000000001234567890abcdef"
EXP = 1_900_000_000


def test_signature_is_base64url_without_padding() -> None:
    sig = sign_media(SECRET, FILE_ID, EXP)
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", sig)
    assert sig == sign_media(SECRET, FILE_ID, EXP)


def test_roundtrip_verifies_until_expiry() -> None:
    sig = sign_media(SECRET, FILE_ID, EXP)
    assert verify_media(SECRET, FILE_ID, EXP, sig, now_s=EXP - 1)
    assert not verify_media(SECRET, FILE_ID, EXP, sig, now_s=EXP)
    assert not verify_media(SECRET, FILE_ID, EXP, sig, now_s=EXP + 3600)


def _flip(sig: str, index: int) -> str:
    return sig[:index] + ("A" if sig[index] != "A" else "B") + sig[index + 1 :]


@pytest.mark.parametrize(
    ("file_id", "exp", "mangle"),
    [
        ("media_other", EXP, lambda s: s),
        (FILE_ID, EXP + 1, lambda s: s),
        (FILE_ID, EXP, lambda s: _flip(s, 0)),
        (FILE_ID, EXP, lambda s: _flip(s, 42)),
        (FILE_ID, EXP, lambda s: s + "A"),
        (FILE_ID, EXP, lambda s: ""),
        (FILE_ID, EXP, lambda s: "é" * 43),
    ],
)
def test_tampering_fails(file_id: str, exp: int, mangle: Callable[[str], str]) -> None:
    sig = mangle(sign_media(SECRET, FILE_ID, EXP))
    assert not verify_media(SECRET, file_id, exp, sig, now_s=EXP - 10)


def test_other_secret_fails() -> None:
    sig = sign_media(SECRET, FILE_ID, EXP)
    assert not verify_media("another-secret", FILE_ID, EXP, sig, now_s=EXP - 10)
