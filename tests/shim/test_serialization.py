"""Celery-JSON: kombu's tags round-trip; everything else fails at encode time."""

import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal

import pytest

from flask_app.shim import serialization
from flask_app.shim.exceptions import DecodeError, EncodeError, MaxRetriesExceededError

VALUES = [
    datetime(2026, 11, 30, 7, 0, 0, 123456, tzinfo=UTC),
    datetime(2026, 11, 30, 7, 0, tzinfo=timezone(timedelta(hours=1))),
    datetime(2026, 11, 30, 7, 0),
    date(2026, 11, 30),
    time(7, 30, 15),
    Decimal("10.05"),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    b"plain bytes",
    b"\xff\xfe binary",
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_tagged_values_come_back_with_their_type(value):
    back = serialization.round_trip(value)
    assert back == value and type(back) is type(value)


def test_tags_use_kombus_wire_shape():
    data = serialization.to_jsonable({"at": date(2026, 1, 2), "n": Decimal("1.5")})
    assert data == {
        "at": {"__type__": "date", "__value__": "2026-01-02"},
        "n": {"__type__": "decimal", "__value__": "1.5"},
    }


def test_tuples_become_lists_and_keys_strings_as_in_celery():
    assert serialization.round_trip({1: (1, 2), "x": [date(2026, 1, 1)]}) == {
        "1": [1, 2],
        "x": [date(2026, 1, 1)],
    }


def test_objects_with_dunder_json_are_encoded_one_way():
    class Money:
        def __json__(self):
            return {"amount": "1.00"}

    assert serialization.round_trip(Money()) == {"amount": "1.00"}


def test_other_objects_fail_to_encode():
    with pytest.raises(EncodeError, match="object is not JSON serializable|not JSON serializable"):
        serialization.dumps(object())


def test_an_unknown_tag_is_a_decode_error():
    with pytest.raises(DecodeError, match="unknown Celery-JSON type tag"):
        serialization.loads('{"__type__": "pickle", "__value__": "x"}')


def test_exceptions_are_stored_in_celerys_shape_and_rebuilt_with_their_type():
    data = serialization.exception_to_dict(KeyError("missing"))
    assert data == {"exc_type": "KeyError", "exc_message": ["missing"], "exc_module": "builtins"}
    back = serialization.exception_from_dict(data)
    assert isinstance(back, KeyError) and back.args == ("missing",)


def test_an_unimportable_exception_type_keeps_its_name():
    back = serialization.exception_from_dict(
        {"exc_type": "GoneError", "exc_message": ["x"], "exc_module": "no.such.module"}
    )
    assert type(back).__name__ == "GoneError" and back.args == ("x",)


def test_shim_exceptions_round_trip():
    back = serialization.exception_from_dict(
        serialization.exception_to_dict(MaxRetriesExceededError("limit"))
    )
    assert isinstance(back, MaxRetriesExceededError)


def test_a_module_that_is_not_allowed_is_never_imported(monkeypatch):
    import sys

    monkeypatch.delitem(sys.modules, "xml.sax.saxutils", raising=False)
    back = serialization.exception_from_dict(
        {"exc_type": "SAXException", "exc_message": ["boom"], "exc_module": "xml.sax.saxutils"}
    )
    assert "xml.sax.saxutils" not in sys.modules
    assert isinstance(back, serialization.StoredException) and back.args == ("boom",)
    assert (type(back).__name__, back.exc_type, back.exc_module) == (
        "SAXException",
        "SAXException",
        "xml.sax.saxutils",
    )


def test_an_imported_module_that_holds_no_task_is_not_allowed_either():
    # subprocess is imported (by pytest) and CalledProcessError is an exception, but no task
    # lives there: a stored result must not make the shim call arbitrary classes.
    back = serialization.exception_from_dict(
        {"exc_type": "CalledProcessError", "exc_message": [1, "rm"], "exc_module": "subprocess"}
    )
    assert isinstance(back, serialization.StoredException)
    assert type(back).__name__ == "CalledProcessError" and back.args == (1, "rm")


def test_non_exception_names_and_dunder_paths_become_generic_exceptions():
    for qualname in ("ValueError.__subclasses__", "print", "__import__", "KeyError.__class__"):
        back = serialization.exception_from_dict(
            {"exc_type": qualname, "exc_message": ["x"], "exc_module": "builtins"}
        )
        assert isinstance(back, serialization.StoredException), qualname


class TaskModuleError(Exception):
    """An exception defined next to a registered task."""


def test_an_exception_of_a_registered_task_module_keeps_its_type():
    from flask_app.shim import shared_task

    @shared_task(name="tests.shim.test_serialization.raiser")
    def raiser() -> None:
        raise TaskModuleError("from a task")

    data = serialization.exception_to_dict(TaskModuleError("from a task"))
    assert data["exc_module"] == __name__
    back = serialization.exception_from_dict(data)
    assert type(back) is TaskModuleError and back.args == ("from a task",)
