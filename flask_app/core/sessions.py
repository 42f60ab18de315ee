"""AimHarder cookies at rest: MultiFernet-encrypted, bound to their owner's email."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from flask import Flask, current_app
from sqlalchemy import select
from sqlalchemy.orm import Session

from flask_app.models import UserSession

_EXT = "session_cipher"


class SessionKeyError(Exception):
    """SESSION_ENCRYPTION_KEYS is missing or malformed."""


class SessionTampered(Exception):
    """A stored session does not decrypt with our keys, or belongs to another user."""


def load_cipher(raw_keys: str | None) -> MultiFernet:
    """MultiFernet from comma-separated Fernet keys, newest first.

    Raises:
        SessionKeyError: no keys, or a key that is not a Fernet key.
    """
    keys = [k.strip() for k in (raw_keys or "").split(",") if k.strip()]
    if not keys:
        raise SessionKeyError("SESSION_ENCRYPTION_KEYS is not set")
    try:
        return MultiFernet([Fernet(k) for k in keys])
    except (ValueError, TypeError):
        raise SessionKeyError(
            "SESSION_ENCRYPTION_KEYS holds a value that is not a Fernet key"
        ) from None


def init_app(app: Flask) -> None:
    """Parse the keys once; a missing key leaves the session API answering 503."""
    try:
        app.extensions[_EXT] = load_cipher(app.config.get("SESSION_ENCRYPTION_KEYS"))
    except SessionKeyError as exc:
        app.extensions[_EXT] = exc


def get_cipher(app: Flask | None = None) -> MultiFernet:
    """The app's cipher.

    Raises:
        SessionKeyError: the app has no usable keys.
    """
    cipher = (app or current_app).extensions[_EXT]
    if isinstance(cipher, SessionKeyError):
        raise cipher
    assert isinstance(cipher, MultiFernet)
    return cipher


def seal(cipher: MultiFernet, email: str, cookies: Mapping[str, str]) -> str:
    """Encrypt the cookies together with the owner's email (so rows cannot be swapped)."""
    payload = json.dumps({"email": email, "cookies": dict(cookies)}, sort_keys=True)
    return cipher.encrypt(payload.encode()).decode()


def unseal(cipher: MultiFernet, email: str, token: str) -> dict[str, str]:
    """Decrypt a sealed session and check it belongs to `email`.

    Raises:
        SessionTampered: wrong keys, corrupted token, or another user's session.
    """
    try:
        payload = json.loads(cipher.decrypt(token.encode()))
    except (InvalidToken, ValueError):
        raise SessionTampered("stored session cannot be decrypted with the current keys") from None
    if payload.get("email") != email:
        raise SessionTampered("stored session belongs to another user")
    cookies: dict[str, str] = payload["cookies"]
    return cookies


def store_cookies(
    session: Session,
    cipher: MultiFernet,
    email: str,
    cookies: Mapping[str, str],
    *,
    notify_url: str | None = None,
) -> UserSession:
    """Insert or replace the user's cookies, and their default notify_url when given (caller
    commits)."""
    row = session.get(UserSession, email)
    if row is None:
        row = UserSession(user_email=email, cookies_encrypted=seal(cipher, email, cookies))
        session.add(row)
    else:
        row.cookies_encrypted = seal(cipher, email, cookies)
    if notify_url is not None:
        row.notify_url = notify_url
    return row


def load_cookies(session: Session, cipher: MultiFernet, email: str) -> dict[str, str] | None:
    """The user's cookies, or None when none are stored.

    Raises:
        SessionTampered: the stored row does not decrypt or is not this user's.
    """
    row = session.get(UserSession, email)
    return None if row is None else unseal(cipher, email, row.cookies_encrypted)


def load_many(
    session: Session, cipher: MultiFernet, emails: Iterable[str]
) -> dict[str, dict[str, str] | SessionTampered]:
    """Many users' cookies in one query: email -> cookies, or the reason they are unusable.

    Users with no stored session are absent from the result.
    """
    wanted = sorted(set(emails))
    if not wanted:
        return {}
    stmt = select(UserSession.user_email, UserSession.cookies_encrypted).where(
        UserSession.user_email.in_(wanted)
    )
    found: dict[str, dict[str, str] | SessionTampered] = {}
    for email, token in session.execute(stmt):
        try:
            found[email] = unseal(cipher, email, token)
        except SessionTampered as exc:
            found[email] = exc
    return found


def rotate_all(session: Session, cipher: MultiFernet) -> int:
    """Re-encrypt every stored session with the newest key; returns how many (caller commits)."""
    rows = session.scalars(select(UserSession)).all()
    for row in rows:
        row.cookies_encrypted = cipher.rotate(row.cookies_encrypted.encode()).decode()
    return len(rows)
