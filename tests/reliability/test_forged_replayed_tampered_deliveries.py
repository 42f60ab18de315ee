"""Scenario: forged, replayed and tampered QStash deliveries, end to end over real HTTP.

Fault: an attacker (or a confused proxy) sends deliveries signed with a key we do not hold,
genuine signatures over altered bodies, signatures for another URL, and a genuine delivery
captured on the wire and replayed later, once within and once after its 5-minute lifetime.
Must hold: forged and tampered → 401 and nothing booked; a replay within the token's lifetime
→ 200 and nothing booked again (the claim); after expiry → 401. The real prebooking books once.
"""

import json
from datetime import UTC, datetime, timedelta

import jwt.api_jwt
import pytest

from flask_app.config import DEV_QSTASH_CURRENT_SIGNING_KEY
from qstash_dev import signing
from tests.reliability.helpers import (
    DAY,
    create,
    delivery_body,
    post_delivery,
    record_deliveries,
    row,
    store_cookies,
    wait_status,
)
from tests.reliability.stack import EXECUTE_URL, wait_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.parametrize("db_url", ["postgresql"], indirect=True),
]
EMAIL = "eve-target@example.com"


@pytest.fixture
def booked(live_app, sandbox):
    """One prebooking booked through a genuine delivery, and that delivery as captured."""
    recorder = record_deliveries(live_app)
    client = live_app.test_client()
    store_cookies(client, EMAIL)
    opens = datetime.now(UTC) + timedelta(seconds=1.5)
    sandbox.add_class("2001", DAY, opens_at=opens, capacity=5)
    sandbox.add_class("2002", DAY, opens_at=None, capacity=5)
    first = create(client, EMAIL, opens, "2001")
    assert wait_status(client, first["id"], {"completed"})["executed_by"] == "qstash"
    wait_until(lambda: recorder.seen, "the delivery's response", timeout_s=10)
    [(headers, raw, status)] = recorder.seen
    assert status == 200
    # A second prebooking, far ahead: the attacker wants it booked now.
    later = create(client, EMAIL, datetime.now(UTC) + timedelta(hours=1), "2002")
    return first, later, headers["Upstash-Signature"], raw


def assert_nothing_more_booked(live_app, sandbox, later):
    assert len(sandbox.arrivals()) == 1 and len(sandbox.bookings()) == 1
    assert row(live_app.test_client(), later["id"])["status"] == "pending"


def test_a_forged_delivery_is_refused_and_books_nothing(live_app, sandbox, booked):
    first, later, _, _ = booked
    body = delivery_body(later)
    url = live_app.config["APP_BASE_URL"] + EXECUTE_URL
    forged = signing.sign(signing.new_signing_key(), url, body)
    assert post_delivery(live_app, body, forged).status_code == 401
    assert post_delivery(live_app, body, None).status_code == 401
    claims = {"iss": "Upstash", "sub": url, "exp": 2**31, "nbf": 0, "body": "x"}
    unsigned = jwt.encode(claims, None, algorithm="none")  # the classic alg=none forgery
    assert post_delivery(live_app, body, unsigned).status_code == 401
    assert_nothing_more_booked(live_app, sandbox, later)


def test_a_tampered_delivery_is_refused_and_books_nothing(live_app, sandbox, booked):
    first, later, genuine, raw = booked
    swapped = raw.replace(first["id"].encode(), later["id"].encode())
    assert swapped != raw
    assert post_delivery(live_app, swapped, genuine).status_code == 401
    spaced = json.dumps(json.loads(raw), indent=1).encode()  # same JSON, other bytes
    assert post_delivery(live_app, spaced, genuine).status_code == 401
    other_url = "http://127.0.0.1:1/api/qstash/prebooking-execute"
    body = delivery_body(later)
    wrong_sub = signing.sign(DEV_QSTASH_CURRENT_SIGNING_KEY, other_url, body)
    assert post_delivery(live_app, body, wrong_sub).status_code == 401
    assert_nothing_more_booked(live_app, sandbox, later)


def test_a_replayed_delivery_answers_200_and_books_nothing_again(live_app, sandbox, booked):
    first, later, genuine, raw = booked
    for _ in range(3):
        resp = post_delivery(live_app, raw, genuine)
        assert resp.status_code == 200
        assert resp.json()["action"] == "lost_claim"  # the claim, not the signature, stops it
    done = row(live_app.test_client(), first["id"])
    assert (done["status"], done["result"]["outcome"]) == ("completed", "booked")
    assert_nothing_more_booked(live_app, sandbox, later)


def test_a_delivery_replayed_after_the_token_expired_is_refused(
    live_app, sandbox, booked, monkeypatch
):
    first, later, genuine, raw = booked

    class FiveMinutesLater(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.now(tz) + timedelta(seconds=signing.TOKEN_LIFETIME_S + 10)

    # The app's clock as PyJWT reads it (the verifier runs in this process) moves past `exp`.
    monkeypatch.setattr(jwt.api_jwt, "datetime", FiveMinutesLater)
    assert post_delivery(live_app, raw, genuine).status_code == 401
    monkeypatch.undo()
    assert post_delivery(live_app, raw, genuine).status_code == 200  # same bytes: the clock did it
    assert_nothing_more_booked(live_app, sandbox, later)
