"""/api/openapi.json is a valid OpenAPI 3.1 document, and real answers match it (openapi-core)."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from openapi_core import OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse
from openapi_spec_validator import validate
from werkzeug.test import EnvironBuilder

from flask_app.api import tokens
from flask_app.api.tokens import Scope
from flask_app.qstash.planning import EXECUTE_PATH
from tests.factories import make_prebooking


@pytest.fixture
def spec(client):
    document = client.get("/api/openapi.json").json
    validate(document)  # raises on an invalid OpenAPI document
    return OpenAPI.from_dict(document)


@pytest.fixture
def call(spec, client):
    """Send a request and validate it and its real answer against the document."""

    def send(method, url, *, request_too=True, **kwargs):
        response = client.open(EnvironBuilder(url, method=method, **kwargs))
        # The sent request's body is consumed; validate an identical one.
        request = WerkzeugOpenAPIRequest(EnvironBuilder(url, method=method, **kwargs).get_request())
        if request_too:
            spec.validate_request(request)
        spec.validate_response(request, WerkzeugOpenAPIResponse(response))
        return response

    return send


def body(**changes):
    return {
        "user_email": "ana@example.com",
        "available_at": (datetime.now(UTC) + timedelta(days=2)).isoformat(),
        "booking_data": {"box": "b", "class_id": "1", "day": "20261130", "family_id": None},
    } | changes


def test_the_document_is_openapi_3_1_from_the_pydantic_models(client):
    document = client.get("/api/openapi.json").json
    assert document["openapi"] == "3.1.0"
    assert {"PrebookingCreate", "PrebookingOut", "ErrorBody", "DeliveryBody"} <= set(
        document["components"]["schemas"]
    )


def test_prebooking_answers_match_the_document(call, auth):
    made = call("POST", "/api/prebookings", json=body(), headers=auth)
    assert made.status_code == 201
    pid = made.json["id"]
    call("GET", "/api/prebookings?limit=5&status=pending", headers=auth)
    call("GET", f"/api/prebookings/{pid}", headers=auth)
    assert call("DELETE", f"/api/prebookings/{pid}", headers=auth).status_code == 200
    assert call("DELETE", f"/api/prebookings/{pid}", headers=auth).status_code == 409


def test_a_finished_prebooking_matches_the_document(call, auth, session):
    row = make_prebooking(
        session, status="completed", executed_by="qstash",
        executed_at=datetime.now(UTC), result={"outcome": "booked", "book_state": 1},
    )  # fmt: skip
    call("GET", f"/api/prebookings/{row.id}", headers=auth)


def test_error_answers_match_the_document(call, auth, session):
    bad = call("POST", "/api/prebookings", json=body(user_email="nope"), headers=auth,
               request_too=False)  # fmt: skip
    assert bad.status_code == 422
    missing = "/api/prebookings/1b9c3c4e-6c8d-4a8e-9f1f-0d6f6d7a8b9c"
    assert call("GET", missing, headers=auth).status_code == 404
    assert call("GET", "/api/prebookings", request_too=False).status_code == 401
    client_token = tokens.issue(
        session, name="c", scope=Scope.CLIENT, user_email=None, now=datetime.now(UTC)
    )[1]
    denied = call("GET", "/api/parity", headers={"Authorization": f"Bearer {client_token}"})
    assert denied.status_code == 403


def test_session_health_ready_and_parity_answers_match_the_document(call, auth):
    cookies = {"cookies": {"amhrdrauth": "x"}}
    assert (
        call("PUT", "/api/sessions/ana@example.com", json=cookies, headers=auth).status_code == 200
    )
    call("GET", "/api/health")
    call("GET", "/api/ready")
    call("GET", "/api/parity?since=24h", headers=auth)
    call("GET", "/api/openapi.json")


def test_a_webhook_refusal_matches_the_document(call):
    raw = json.dumps(
        {"prebookingId": "p", "userEmail": "a@b.co", "scheduledAt": "2026-12-01T10:00:00+00:00"}
    )
    refused = call("POST", EXECUTE_PATH, data=raw, content_type="application/json",
                   headers={"Upstash-Signature": "forged"})  # fmt: skip
    assert refused.status_code == 401
