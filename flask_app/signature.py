"""Verify QStash's `Upstash-Signature` with the official SDK's Receiver."""

from __future__ import annotations

from qstash import Receiver
from qstash.errors import SignatureError


class InvalidSignature(Exception):
    """The request was not signed by our QStash for this URL and body."""


def verify(
    raw_body: bytes,
    signature: str | None,
    url: str,
    *,
    current_key: str | None,
    next_key: str | None,
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
    except (SignatureError, KeyError, ValueError) as exc:  # KeyError: token without a body claim
        raise InvalidSignature(f"invalid signature: {exc}") from None
