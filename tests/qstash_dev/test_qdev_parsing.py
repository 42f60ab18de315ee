"""Pure helpers: durations, booleans, flow control, retry-delay expressions, signatures."""

from __future__ import annotations

import pytest
import qstash

from qstash_dev import cron, expr, signing
from qstash_dev.errors import BadRequest
from qstash_dev.parsing import (
    FlowLimits,
    parse_bool,
    parse_duration_s,
    parse_flow_control,
    parse_retry_after_s,
)
from qstash_dev.publishing import split_destination


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30", 30), ("10s", 10), ("1m", 60), ("1h30m3s", 5403), ("1d", 86400), ("500ms", 0.5)],
)
def test_durations_are_parsed_to_seconds(text, seconds):
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "10x", "1m abc"])
def test_bad_durations_are_rejected(text):
    with pytest.raises(BadRequest):
        parse_duration_s(text)


@pytest.mark.parametrize(("text", "value"), [("True", True), ("true", True), ("False", False)])
def test_booleans_accept_python_and_js_spellings(text, value):
    assert parse_bool(text) is value


def test_flow_control_value_any_subset_and_spacing():
    assert parse_flow_control("parallelism=2, rate=10, period=1m") == FlowLimits(2, 10, 60)
    assert parse_flow_control("rate=5,period=3") == FlowLimits(0, 5, 3)
    assert parse_flow_control("") == FlowLimits()


@pytest.mark.parametrize(
    ("text", "retried", "ms"),
    [
        ("1000", 0, 1000),
        ("1000 * (1 + retried)", 2, 3000),
        ("pow(2, retried) * 1000", 3, 8000),
        ("max(10, min(sqrt(16), abs(-3)))", 0, 10),
        ("floor(exp(1)) + ceil(0.2) + round(1.6)", 0, 5),
    ],
)
def test_retry_delay_expressions(text, retried, ms):
    assert expr.evaluate(text, retried) == ms


@pytest.mark.parametrize(
    "text", ["__import__('os')", "retried.__class__", "open('x')", "[1]", "a + 1", "pow(2, 9999)"]
)
def test_unsafe_or_invalid_expressions_are_rejected(text):
    with pytest.raises(BadRequest):
        expr.evaluate(text, 1)


def test_retry_after_forms():
    assert parse_retry_after_s("7", 0) == 7
    assert parse_retry_after_s("6m5s", 0) == 365
    assert parse_retry_after_s("Thu, 01 Jan 1970 00:01:00 GMT", 0) == 60
    assert parse_retry_after_s("soon", 0) is None


def test_destination_keeps_query_but_drops_token_and_config():
    dest, config = split_destination(
        "https:/example.com/x", "a=1&qstash_token=t&upstash-retries=2&b=%20"
    )
    assert dest == "https://example.com/x?a=1&b=%20"
    assert config == [("upstash-retries", "2")]
    assert split_destination("https%3A%2F%2Fexample.com%2Fy", "")[0] == "https://example.com/y"


def test_cron_timezone_prefix_shifts_the_next_time():
    utc = cron.next_fire_ms("0 9 * * *", 0)
    madrid = cron.next_fire_ms("CRON_TZ=Europe/Madrid 0 9 * * *", 0)
    assert utc - madrid == 3600 * 1000
    with pytest.raises(BadRequest):
        cron.validate("CRON_TZ=Nowhere/City 0 9 * * *")


def test_signature_is_accepted_by_the_sdk_receiver():
    key = "sig_7kYjw48mhY7kAjqNGcy6cr29RJ6r"
    token = signing.sign(key, "http://h/x?y=1", b'{"a": 1}')
    qstash.Receiver(key, "sig_5ZB6DVzB1wjE8S6rZ7eenA8Pdnhs").verify(
        signature=token, body='{"a": 1}', url="http://h/x?y=1"
    )
    with pytest.raises(qstash.errors.SignatureError):
        qstash.Receiver(key, key).verify(signature=token, body="other", url="http://h/x?y=1")
