"""/api/prebookings, /api/sessions, /api/health."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from sqlalchemy.orm import Session
from werkzeug.exceptions import BadRequest

from flask_app import notify, paths, periodic
from flask_app.api.auth import AuthError, current_principal, require
from flask_app.api.errors import error
from flask_app.api.schemas import EmailOnly, ListQuery, PrebookingCreate, SessionPut
from flask_app.api.tokens import Scope
from flask_app.core import events, preflight, repository, sessions
from flask_app.core.dispatch import get_dispatcher
from flask_app.db import get_session
from flask_app.models import Prebooking
from flask_app.observe import logs, readiness
from flask_app.qstash import outbox
from flask_app.timing import SystemClock

bp = Blueprint("api", __name__)
_clock = SystemClock()


#: Endpoints anyone may call (probes and the API's description).
PUBLIC = {"api.health", "api.ready"}


@bp.before_request
def _authenticate() -> None:
    # Client tokens may use every endpoint here; a bound one only for its user (below).
    if request.endpoint not in PUBLIC:
        require(Scope.CLIENT)


def _check_acts_for(user_email: str) -> None:
    """A token bound to one user may not act for another.

    Raises:
        AuthError: 403 naming the bound user.
    """
    principal = current_principal()
    if not principal.may_act_for(user_email):
        raise AuthError(403, f"this token may only act for {principal.user_email}")


def _visible(prebooking_id: str) -> None:
    """Another user's prebooking does not exist for a bound token (404, as an unknown id).

    Raises:
        repository.NotFound
    """
    row = repository.get(get_session(), prebooking_id)
    if not current_principal().may_act_for(row.user_email):
        raise repository.NotFound(prebooking_id)


@bp.errorhandler(repository.NotFound)
def _not_found(exc: repository.NotFound) -> tuple[Response, int]:
    return error(404, f"no prebooking with id {exc}")


@bp.errorhandler(repository.Conflict)
def _conflict(exc: repository.Conflict) -> tuple[Response, int]:
    return error(409, str(exc))


@bp.errorhandler(repository.BadInput)
def _bad_input(exc: repository.BadInput) -> tuple[Response, int]:
    if exc.field is None:
        return error(422, str(exc))
    return error(422, str(exc), details=[{"field": exc.field, "problem": exc.problem}])


@bp.errorhandler(sessions.SessionKeyError)
def _no_keys(exc: sessions.SessionKeyError) -> tuple[Response, int]:
    return error(503, f"{exc}; user sessions cannot be stored")


def _app() -> Flask:
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    return app


def _json_body() -> Any:
    if not request.is_json:
        raise BadRequest("body must be JSON (Content-Type: application/json)")
    body = request.get_json(silent=True)
    if body is None:
        raise BadRequest("body is not valid JSON")
    return body


@bp.errorhandler(notify.NotifyUnavailable)
def _no_notify(exc: notify.NotifyUnavailable) -> tuple[Response, int]:
    return error(503, f"{exc}; notify_url cannot be used")


@bp.errorhandler(notify.BadNotifyUrl)
def _bad_notify_url(exc: notify.BadNotifyUrl) -> tuple[Response, int]:
    return error(422, f"notify_url: {exc}", details=[{"field": "notify_url", "problem": str(exc)}])


def _saving(session: Session, change: str) -> repository.BeforeCommit:
    """Announce the change inside its transaction (the QStash outbox writes what it owes)."""

    def announce(row: Prebooking) -> None:
        events.prebooking_saving.send(_app(), prebooking=row, session=session, change=change)

    return announce


@bp.post("/api/prebookings")
def create_prebooking() -> tuple[Response, int]:
    body = PrebookingCreate.model_validate(_json_body())
    _check_acts_for(body.user_email)
    notify.check_url(body.notify_url, current_app.config)
    session = get_session()
    row = repository.create(session, body, _clock.now(), _saving(session, "created"))
    logs.bind(prebooking_id=row.id)
    events.prebooking_created.send(_app(), prebooking=row, session=session)
    return jsonify(repository.to_json(row)), 201


@bp.get("/api/prebookings")
def list_prebookings() -> Response:
    query = ListQuery.model_validate(request.args.to_dict())
    bound = current_principal().user_email
    if bound is not None:
        _check_acts_for(query.user_email or bound)
        query = query.model_copy(update={"user_email": bound})
    page = repository.list_page(get_session(), query)
    items = [repository.to_json(row) for row in page.items]
    return jsonify({"items": items, "next_cursor": page.next_cursor})


@bp.get("/api/prebookings/<prebooking_id>")
def get_prebooking(prebooking_id: str) -> Response:
    _visible(prebooking_id)
    return jsonify(repository.to_json(repository.get(get_session(), prebooking_id)))


@bp.delete("/api/prebookings/<prebooking_id>")
def cancel_prebooking(prebooking_id: str) -> Response:
    _visible(prebooking_id)
    session = get_session()
    row = repository.cancel(session, prebooking_id, _clock.now(), _saving(session, "cancelled"))
    events.prebooking_cancelled.send(_app(), prebooking=row, session=session)
    return jsonify(repository.to_json(row))


@bp.put("/api/sessions/<user_email>")
def put_session(user_email: str) -> Response:
    email = EmailOnly.model_validate({"user_email": user_email}).user_email.lower()
    _check_acts_for(email)
    body = SessionPut.model_validate(_json_body())
    notify.check_url(body.notify_url, current_app.config)
    session = get_session()
    cipher = sessions.get_cipher()
    row = sessions.store_cookies(session, cipher, email, body.cookies, notify_url=body.notify_url)
    revived = preflight.revive(session, email, _clock.now())  # a fresh session: book them
    session.commit()
    return jsonify(
        {
            "user_email": email,
            "cookie_names": sorted(body.cookies),
            "updated_at": row.updated_at.isoformat(),
            "notify_url": row.notify_url,
            "revived": revived,
        }
    )


@bp.get("/api/health")
def health() -> tuple[Response, int]:
    """Liveness plus the flags in force; 503 when the database does not answer."""
    cfg = current_app.config
    flags = {
        name: cfg.get(name)
        for name in (
            "QSTASH_ENABLED",
            "QSTASH_SHADOW",
            "QSTASH_ROLLOUT_PERCENT",
            "LEGACY_CRON_ENABLED",
        )
        if name in cfg
    }
    configured = {
        name: bool(cfg.get(name))
        for name in ("API_TOKEN", "CRON_SECRET", "SESSION_ENCRYPTION_KEYS")
    }
    database = readiness.database(_app())
    body = {
        "status": "ok" if database.ok else "degraded",
        "database": database.detail,
        "flags": flags,
        "configured": configured,
        "paths": {p.name: paths.coverage_of(p, cfg) for p in paths.registered()},
        # This process's cached views (the background runner refreshes them): no QStash
        # call and no query per health request; null until the first check.
        "schedules": periodic.schedule_status(_app()),
        "outbox": outbox.last_stats(_app()),
        "qstash_url": cfg["QSTASH_URL"],
        "app_base_url": cfg["APP_BASE_URL"],
        # This process's admission (a full dispatcher answers QStash 503; docs/firing.md).
        "dispatcher": get_dispatcher().health(),
    }
    if not database.ok:
        body["error"] = f"database {database.detail}"
    return jsonify(body), 200 if database.ok else 503


@bp.get("/api/ready")
def ready() -> tuple[Response, int]:
    """Readiness for a load balancer: every registered check holds (observe/readiness.py)."""
    checks = readiness.run(_app())
    failed = [c.name for c in checks if not c.ok]
    body: dict[str, Any] = {
        "status": "not ready" if failed else "ready",
        "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in checks},
    }
    if failed:
        body["error"] = f"not ready: {', '.join(failed)}"
    return jsonify(body), 503 if failed else 200
