"""Access tokens: what a registered app gets for its secret (`GET /api/v1/token`), checked without being stored.

    lltok.<appid>.<expiry in unix seconds>.<base64url HMAC-SHA256(secret, "<appid>.<expiry>")>

The secret is the keys file's, so revoking the app (or a new secret) voids its tokens. Anything that is not
of this shape, an expiry included (at most `EXPIRY_MAX_DIGITS` ASCII digits), is simply not a token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass

TOKEN_PREFIX = "lltok."
EXPIRY_MAX_DIGITS = 12  # unix seconds up to the year 33658: far beyond any token's lifetime
_SHAPE = re.compile(rf"{re.escape(TOKEN_PREFIX)}([^.]+)\.([0-9]{{1,{EXPIRY_MAX_DIGITS}}})\.([A-Za-z0-9_-]+)")


@dataclass(frozen=True)
class AccessToken:
    token: str
    expires_at: int  # unix seconds


def sign_token(secret: str, appid: str, expires: int) -> str:
    """The access token of `appid` valid until `expires` (unix seconds), signed with the file's secret."""
    mac = hmac.new(bytes.fromhex(secret), f"{appid}.{expires}".encode(), hashlib.sha256).digest()
    return f"{TOKEN_PREFIX}{appid}.{expires}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def verify_token(secret: str, token: str) -> tuple[str, int] | None:
    """The app id and expiry of `token` when `secret` signed it (whether it expired is the caller's to
    say); None when it is not a token of that secret, whatever it holds."""
    match = _SHAPE.fullmatch(token)
    if match is None:
        return None
    appid, expires = match.group(1), int(match.group(2))
    if not hmac.compare_digest(token.encode(), sign_token(secret, appid, expires).encode()):
        return None
    return appid, expires
