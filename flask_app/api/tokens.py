"""Scoped API tokens: admin (everything) and client (prebookings and sessions, maybe one user's).

A token is `pbk_` + 32 random bytes (URL-safe base64), shown once by `flask --app wsgi tokens
create`. Only its SHA-256 is stored: with 256 random bits a plain hash cannot be reversed or
guessed, and it can be looked up by equality (a slow password hash would cost every request).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

import click
from flask import Flask
from flask.cli import AppGroup
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from flask_app.api.schemas import EmailOnly, describe
from flask_app.db import get_db
from flask_app.models import ApiToken, is_valid_id

TOKEN_PREFIX = "pbk_"
_SHOWN = 8  # characters kept in clear (after the prefix) so operators can tell tokens apart


class Scope(StrEnum):
    """What a token may do."""

    ADMIN = "admin"  # everything: the API, parity, the admin page, metrics
    CLIENT = "client"  # create, list, read and cancel prebookings; store sessions


class UnknownToken(LookupError):
    """No token with that id."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: the scope, and the one user a bound client token acts for."""

    scope: Scope
    user_email: str | None = None
    token_id: str | None = None  # None: the API_TOKEN from the environment

    @property
    def is_admin(self) -> bool:
        return self.scope is Scope.ADMIN

    def may_act_for(self, user_email: str) -> bool:
        """True unless the token is bound to another user."""
        return self.user_email is None or self.user_email == user_email.lower()


def hash_token(token: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def issue(
    session: Session, *, name: str, scope: Scope, user_email: str | None, now: datetime
) -> tuple[ApiToken, str]:
    """Store a new token; returns the row and the token itself (never stored).

    Raises:
        ValueError: an admin token bound to a user (admin tokens see everything).
    """
    if scope is Scope.ADMIN and user_email:
        raise ValueError("admin tokens cannot be bound to a user; use --scope client")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        name=name,
        scope=scope.value,
        user_email=user_email.lower() if user_email else None,
        token_hash=hash_token(token),
        prefix=token[: len(TOKEN_PREFIX) + _SHOWN],
        created_at=now,
    )
    session.add(row)
    session.commit()
    return row, token


def find(session: Session, token: str) -> Principal | None:
    """The principal of a live stored token, or None."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    digest = hash_token(token)
    row = session.scalar(
        select(ApiToken).where(ApiToken.token_hash == digest, ApiToken.revoked_at.is_(None))
    )
    # The lookup is by equality on a hash; the comparison below is constant time regardless.
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        return None
    return Principal(Scope(row.scope), row.user_email, row.id)


def is_live(session: Session, token_id: str, scope: Scope) -> bool:
    """True while the token exists with that scope and is not revoked (admin page sessions)."""
    row = session.get(ApiToken, token_id) if is_valid_id(token_id) else None
    return row is not None and row.revoked_at is None and row.scope == scope.value


def any_live(session: Session) -> bool:
    """True when at least one stored token is usable."""
    return (
        session.scalar(select(ApiToken.id).where(ApiToken.revoked_at.is_(None)).limit(1))
        is not None
    )


def revoke(session: Session, token_id: str, now: datetime) -> ApiToken:
    """Revoke a token (kept for the record; a revoked token never authenticates again).

    Raises:
        UnknownToken: no token with that id.
    """
    row = session.get(ApiToken, token_id) if is_valid_id(token_id) else None
    if row is None:
        raise UnknownToken(token_id)
    if row.revoked_at is None:
        row.revoked_at = now
        session.commit()
    return row


# --- flask --app wsgi tokens create|list|revoke ---------------------------------------------

cli = AppGroup("tokens", help="Scoped API tokens (stored hashed; API_TOKEN stays an admin token).")


@cli.command("create")
@click.option("--name", required=True, help="What the token is for (shown by `tokens list`).")
@click.option("--scope", type=click.Choice([s.value for s in Scope]), default=Scope.CLIENT.value)
@click.option("--email", "user_email", default=None, help="Bind a client token to one user.")
def create_command(name: str, scope: str, user_email: str | None) -> None:
    """Create a token and print it once (only its hash is stored)."""
    if user_email is not None:
        try:
            user_email = EmailOnly.model_validate({"user_email": user_email}).user_email
        except ValidationError as exc:
            raise click.BadParameter(describe(exc)[0], param_hint="--email") from None
    with get_db().session() as session:
        try:
            row, token = issue(
                session, name=name, scope=Scope(scope), user_email=user_email, now=_now()
            )
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    bound = f" for {row.user_email}" if row.user_email else ""
    click.echo(f"created {row.scope} token {row.id} ({row.name}){bound}")
    click.echo("the token (shown once, keep it in a secret store):", err=True)
    click.echo(token)


@cli.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include revoked tokens.")
def list_command(show_all: bool) -> None:
    """List tokens: id, scope, bound user, prefix, name (never the token)."""
    with get_db().session() as session:
        stmt = select(ApiToken).order_by(ApiToken.created_at, ApiToken.id)
        if not show_all:
            stmt = stmt.where(ApiToken.revoked_at.is_(None))
        rows = list(session.scalars(stmt))
    for row in rows:
        revoked = f"  revoked {row.revoked_at.isoformat()}" if row.revoked_at else ""
        user = row.user_email or "-"
        click.echo(f"{row.id}  {row.scope:<6}  {user:<30}  {row.prefix}…  {row.name}{revoked}")
    if not rows:
        click.echo("no tokens (API_TOKEN, if set, is an admin token)")


@cli.command("revoke")
@click.argument("token_id")
def revoke_command(token_id: str) -> None:
    """Revoke the token with this id (see `tokens list`)."""
    with get_db().session() as session:
        try:
            row = revoke(session, token_id, _now())
        except UnknownToken:
            raise click.ClickException(f"no token with id {token_id}") from None
    click.echo(f"revoked {row.scope} token {row.id} ({row.name})")


def _now() -> datetime:
    return datetime.now(UTC)


def init_app(app: Flask) -> None:
    """Register the `tokens` command group."""
    app.cli.add_command(cli)
