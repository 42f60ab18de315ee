"""Verify QStash's `Upstash-Signature` with the official SDK's Receiver."""

from __future__ import annotations

import base64
import hashlib

import jwt
from qstash import Receiver
from qstash.errors import SignatureError

# Seconds of clock difference tolerated between QStash and us. The SDK's `clock_tolerance` has
# no effect (qstash 3.4.0 hands it to PyJWT inside `options`, which PyJWT ignores), so a token
# whose iat/nbf is a fraction of a second ahead of our clock would be refused: with iat in whole
# seconds, even 100 ms of skew refuses about one delivery in ten.
CLOCK_TOLERANCE_S = 5


class InvalidSignature(Exception):
    """The request was not signed by our QStash for this URL and body."""


def verify(
    raw_body: bytes,
    signature: str | None,
    url: str,
    *,
    current_key: str | None,
    next_key: str | None,
    clock_tolerance_s: int = CLOCK_TOLERANCE_S,
) -> None:
    """Check the JWT against the raw body and the public URL QStash was told to call.

    The Receiver tries the current key, then the next one (key rotation). Fails closed:
    missing keys or a missing header are invalid, never "skip verification".

    Raises:
        InvalidSignature: missing, forged, tampered, expired or for another URL.
    """
    if not current_key or not next_key:
        raise InvalidSignature("QStash signing keys are not configured")
    if not signature:
        raise InvalidSignature("missing Upstash-Signature header")
    try:
        body = raw_body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidSignature("body is not UTF-8") from None
    try:
        Receiver(current_signing_key=current_key, next_signing_key=next_key).verify(
            signature=signature, body=body, url=url
        )
    except SignatureError as exc:
        # The Receiver's error hides why the current key failed (it re-raises the next key's),
        # so a refusal is re-checked once with leeway; anything but skew still fails there.
        if not _valid_with_leeway(
            signature, raw_body, url, (current_key, next_key), clock_tolerance_s
        ):
            raise InvalidSignature(f"invalid signature: {exc}") from None
    except (KeyError, ValueError) as exc:  # KeyError: a token without a body claim
        raise InvalidSignature(f"invalid signature: {exc}") from None


def _valid_with_leeway(
    signature: str, raw_body: bytes, url: str, keys: tuple[str, str], leeway_s: int
) -> bool:
    """The Receiver's checks (key, issuer, expiry, subject, body hash), with clock leeway."""
    digest = base64.urlsafe_b64encode(hashlib.sha256(raw_body).digest()).decode().rstrip("=")
    for key in keys:
        try:
            claims = jwt.decode(
                signature,
                key,
                algorithms=["HS256"],
                issuer="Upstash",
                options={"require": ["iss", "sub", "exp", "nbf"]},
                leeway=leeway_s,
            )
        except jwt.PyJWTError:
            continue
        return bool(claims.get("sub") == url and str(claims.get("body", "")).rstrip("=") == digest)
    return False
