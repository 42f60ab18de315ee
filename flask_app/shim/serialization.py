"""Celery's JSON conventions (kombu's codec): tagged datetimes, UUIDs, Decimals, bytes.

Tagged values are `{"__type__": tag, "__value__": value}`; tuples come back as lists and dict
keys as strings, exactly as with Celery's default `json` serializer. Exceptions stored as
results use Celery's backend shape `{"exc_type", "exc_message", "exc_module"}`.
"""

from __future__ import annotations

import base64
import builtins
import json
import sys
import uuid
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from flask_app.shim.exceptions import DecodeError, EncodeError

_PLAIN = (str, int, float, bool, type(None))


def _encode_bytes(value: bytes) -> dict[str, Any]:
    try:
        return {"__type__": "bytes", "__value__": value.decode("utf-8")}
    except UnicodeDecodeError:
        return {"__type__": "base64", "__value__": base64.b64encode(value).decode("ascii")}


def _encode_tagged(value: Any) -> dict[str, Any] | None:
    if isinstance(value, datetime):
        return {"__type__": "datetime", "__value__": value.isoformat()}
    if isinstance(value, date):
        return {"__type__": "date", "__value__": value.isoformat()}
    if isinstance(value, time):
        return {"__type__": "time", "__value__": value.isoformat()}
    if isinstance(value, Decimal):
        return {"__type__": "decimal", "__value__": str(value)}
    if isinstance(value, uuid.UUID):
        return {"__type__": "uuid", "__value__": {"hex": value.hex, "version": value.version}}
    if isinstance(value, bytes | bytearray):
        return _encode_bytes(bytes(value))
    return None


def to_jsonable(value: Any) -> Any:
    """Turn a value into plain JSON data with Celery's tags.

    Raises:
        EncodeError: the value (or something inside it) has no JSON form.
    """
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, dict):
        return {_key(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    tagged = _encode_tagged(value)
    if tagged is not None:
        return tagged
    if hasattr(value, "__json__"):
        return to_jsonable(value.__json__())
    raise EncodeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, int | float | bool) or key is None:
        return json.dumps(key)
    raise EncodeError(f"dict key of type {type(key).__name__} is not JSON serializable")


_DECODERS: dict[str, Any] = {
    "datetime": datetime.fromisoformat,
    "date": date.fromisoformat,
    "time": time.fromisoformat,
    "decimal": Decimal,
    "uuid": lambda v: uuid.UUID(hex=v["hex"], version=v.get("version")),
    "bytes": lambda v: v.encode("utf-8"),
    "base64": lambda v: base64.b64decode(v),
}


def from_jsonable(value: Any) -> Any:
    """Inverse of to_jsonable: rebuild tagged values.

    Raises:
        DecodeError: a tag is unknown or its value malformed.
    """
    if isinstance(value, list):
        return [from_jsonable(v) for v in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {"__type__", "__value__"}:
        decoder = _DECODERS.get(value["__type__"])
        if decoder is None:
            raise DecodeError(f"unknown Celery-JSON type tag {value['__type__']!r}")
        try:
            return decoder(value["__value__"])
        except (TypeError, ValueError, KeyError) as exc:
            raise DecodeError(f"bad {value['__type__']} value: {exc}") from None
    return {k: from_jsonable(v) for k, v in value.items()}


def dumps(value: Any) -> str:
    """Celery-JSON text of a value.

    Raises:
        EncodeError
    """
    return json.dumps(to_jsonable(value))


def loads(text: str) -> Any:
    """Value from Celery-JSON text.

    Raises:
        DecodeError
    """
    try:
        return from_jsonable(json.loads(text))
    except json.JSONDecodeError as exc:
        raise DecodeError(f"not JSON: {exc}") from None


def round_trip(value: Any) -> Any:
    """Encode and decode, as Celery does for eager `apply_async` arguments."""
    return loads(dumps(value))


def exception_to_dict(exc: BaseException) -> dict[str, Any]:
    """Celery's stored form of an exception."""
    try:
        message = to_jsonable(list(exc.args))
    except EncodeError:
        message = [str(exc)]
    cls = type(exc)
    return {"exc_type": cls.__qualname__, "exc_message": message, "exc_module": cls.__module__}


class StoredException(Exception):
    """A stored exception whose type is not on the allow-list, rebuilt as a generic one.

    Its class is named after the original type (so `type(exc).__name__` and the traceback read
    as before); `exc_type` and `exc_module` say where the original came from.
    """

    exc_type: str = ""
    exc_module: str = ""


#: Modules whose exception types are always rebuilt as themselves.
ALWAYS_ALLOWED = ("builtins", "flask_app.shim.exceptions")


def exception_from_dict(data: dict[str, Any]) -> BaseException:
    """Rebuild a stored exception; its own type only when the type is on the allow-list.

    Allowed: builtins, the shim's exceptions, and the modules of the registered tasks, all
    already imported. A stored result names a module and a type; importing that module, or
    calling any class it names, would let whoever can write a result run code here. Anything
    else becomes a StoredException subclass carrying the type's name and the message.
    """
    args = from_jsonable(data.get("exc_message") or [])
    if not isinstance(args, list):
        args = [args]
    module, qualname = str(data.get("exc_module") or ""), str(data.get("exc_type") or "")
    cls = _allowed_class(module, qualname)
    if cls is not None:
        try:
            return cls(*args)
        except Exception:  # a constructor with another signature: keep the type's name at least
            pass
    return _fallback_class(qualname.rsplit(".", 1)[-1] or "Exception", module)(*args)


def allowed_modules() -> set[str]:
    """Where a stored exception's type may be looked up: see exception_from_dict."""
    from flask_app.shim import _state

    tasks = _state.get_current_app().tasks.values()
    return set(ALWAYS_ALLOWED) | {type(task).__module__ for task in tasks}


def _allowed_class(module: str, qualname: str) -> type[BaseException] | None:
    if module not in allowed_modules():
        return None
    obj: Any = builtins if module == "builtins" else sys.modules.get(module)
    for part in qualname.split("."):
        obj = getattr(obj, part, None) if part and not part.startswith("_") else None
    if isinstance(obj, type) and issubclass(obj, BaseException):
        return obj
    return None


def _fallback_class(name: str, module: str) -> type[StoredException]:
    attrs = {"__module__": module or __name__, "exc_type": name, "exc_module": module}
    return type(name, (StoredException,), attrs)


def is_exception_dict(value: Any) -> bool:
    """Whether a stored result is an exception in Celery's form."""
    return isinstance(value, dict) and "exc_type" in value and "exc_message" in value
