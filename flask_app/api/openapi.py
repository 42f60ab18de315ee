"""GET /api/openapi.json: an OpenAPI 3.1 document assembled from the pydantic models.

Request bodies and query parameters come from flask_app.api.schemas (what the views validate
with), answers from flask_app.api.responses; pydantic's JSON Schema (2020-12) is OpenAPI 3.1's
schema dialect, so the models' schemas go in unchanged.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from flask_app.api import responses as r
from flask_app.api.schemas import ListQuery, PrebookingCreate, SessionPut
from flask_app.qstash.planning import EXECUTE_PATH
from flask_app.qstash.webhook import DeliveryBody

bp = Blueprint("openapi", __name__)
_EXT = "openapi"
VERSION = "1"

_MODELS: list[tuple[type[BaseModel], JsonSchemaMode]] = [
    (PrebookingCreate, "validation"),
    (ListQuery, "validation"),
    (SessionPut, "validation"),
    (DeliveryBody, "validation"),
    (r.ErrorBody, "serialization"),
    (r.PrebookingOut, "serialization"),
    (r.PrebookingPage, "serialization"),
    (r.SessionStored, "serialization"),
    (r.Health, "serialization"),
    (r.Ready, "serialization"),
    (r.ParityReport, "serialization"),
    (r.DeliveryAnswer, "serialization"),
]
_ERRORS = {
    "400": "malformed request (not JSON, bad CSRF token)",
    "401": "missing or unknown bearer token",
    "403": "the token may not do this (client token on an admin endpoint, or another user)",
    "404": "no such resource (or not visible to this token)",
    "409": "the prebooking is not in a state that allows this",
    "413": "request body too large",
    "422": "invalid input; `details` names each field",
    "503": "not configured, or a dependency is down",
}


def build() -> dict[str, Any]:
    """The whole document."""
    keys, found = models_json_schema(_MODELS, ref_template="#/components/schemas/{model}")
    schemas = found.get("$defs", {})

    def ref(model: type[BaseModel], mode: JsonSchemaMode = "serialization") -> dict[str, Any]:
        return keys[(model, mode)]

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "AimHarder prebooking service",
            "version": VERSION,
            "description": "Book a CrossFit class the instant its booking window opens.",
        },
        "paths": _paths(ref, _query_params(schemas, keys[(ListQuery, "validation")])),
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "upstashSignature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Upstash-Signature",
                    "description": "QStash's JWT over the raw body (docs/qstash_path.md)",
                },
            },
        },
    }


def _paths(ref: Any, list_params: list[dict[str, Any]]) -> dict[str, Any]:
    id_param = _path_param("prebooking_id", {"type": "string"})
    email_param = _path_param("user_email", {"type": "string", "format": "email"})
    bearer: list[dict[str, list[str]]] = [{"bearer": []}]
    return {
        "/api/prebookings": {
            "post": _op("Create a prebooking", bearer, ref(r.PrebookingOut), "201",
                        body=ref(PrebookingCreate, "validation")),
            "get": _op("List prebookings in creation order", bearer, ref(r.PrebookingPage),
                       params=list_params),
        },
        "/api/prebookings/{prebooking_id}": {
            "parameters": [id_param],
            "get": _op("Read one prebooking", bearer, ref(r.PrebookingOut)),
            "delete": _op("Cancel a pending prebooking (and its QStash message)", bearer,
                          ref(r.PrebookingOut)),
        },
        "/api/sessions/{user_email}": {
            "parameters": [email_param],
            "put": _op("Store the user's AimHarder cookies (encrypted)", bearer,
                       ref(r.SessionStored), body=ref(SessionPut, "validation")),
        },
        "/api/parity": {
            "get": _op("Parity report between the delivery paths (admin)", bearer,
                       ref(r.ParityReport), params=[_query("since", {"type": "string"})]),
        },
        EXECUTE_PATH: {
            "post": _op("QStash delivery of a prebooking's message", [{"upstashSignature": []}],
                        ref(r.DeliveryAnswer), body=ref(DeliveryBody, "validation")),
        },
        "/api/health": {"get": _op("Liveness, database and flags", [], ref(r.Health))},
        "/api/ready": {"get": _op("Readiness for a load balancer", [], ref(r.Ready))},
        "/api/openapi.json": {"get": _op("This document", [], {"type": "object"})},
    }  # fmt: skip


def _op(
    summary: str,
    security: list[dict[str, list[str]]],
    answer: dict[str, Any],
    status: str = "200",
    *,
    body: dict[str, Any] | None = None,
    params: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    error = {"$ref": "#/components/schemas/ErrorBody"}
    found: dict[str, Any] = {
        "summary": summary,
        "security": security,
        "responses": {status: _json(answer, "success")}
        | {code: _json(error, why) for code, why in _ERRORS.items()},
    }
    if body is not None:
        found["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if params:
        found["parameters"] = params
    return found


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _path_param(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


def _query_params(schemas: dict[str, Any], model_ref: dict[str, Any]) -> list[dict[str, Any]]:
    """A query model's fields as OpenAPI parameters (their $refs point at the components)."""
    name = model_ref["$ref"].rsplit("/", 1)[-1]
    properties = schemas[name]["properties"]
    return [_query(field, schema) for field, schema in properties.items()]


@bp.get("/api/openapi.json")
def openapi_json() -> Response:
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    if _EXT not in app.extensions:
        app.extensions[_EXT] = build()
    return jsonify(app.extensions[_EXT])
