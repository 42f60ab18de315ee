"""`Upstash-Signature` JWTs that the SDK receivers (PyJWT, jose) accept."""

from __future__ import annotations

import base64
import hashlib
import secrets
import string
import time

import jwt

_ALPHABET = string.ascii_letters + string.digits
TOKEN_LIFETIME_S = 300


def sign(key: str, url: str, body: bytes, now_s: float | None = None) -> str:
    """Sign a delivery of `body` to `url` with the signing key (HS256 over the key's bytes)."""
    issued = int(time.time() if now_s is None else now_s)  # truncate: PyJWT rejects future iat
    digest = hashlib.sha256(body).digest()
    claims = {
        "iss": "Upstash",
        "sub": url,
        "iat": issued,
        "nbf": issued,
        "exp": issued + TOKEN_LIFETIME_S,
        "jti": f"jwt_{secrets.token_hex(12)}",
        "body": base64.urlsafe_b64encode(digest).decode(),
    }
    return jwt.encode(claims, key.encode(), algorithm="HS256")


def new_signing_key() -> str:
    """A fresh key shaped like the real ones: `sig_` and 28 random characters (32 bytes)."""
    return "sig_" + "".join(secrets.choice(_ALPHABET) for _ in range(28))
