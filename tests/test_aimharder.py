"""The AimHarder client: classification table, transport failures, and the real sandbox."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import httpx
import pytest

from aimharder_sandbox.testing import Sandbox, run_sandbox
from flask_app.aimharder.client import (
    AimHarderClient,
    BookingOutcome,
    BookingResult,
    ListingCheck,
    SessionState,
    box_base_url,
    classify,
    classify_session,
)
from tests.factories import BOX_ID

BO = BookingOutcome
LC = ListingCheck
SS = SessionState
DAY = "20261128"
Handler = Callable[[httpx.Request], httpx.Response]
COOKIES = {"amhrdrauth": "secret-cookie-value", "PHPSESSID": "php-secret"}


def _refusal(state: int, key: str | None = None) -> dict[str, object]:
    body: dict[str, object] = {"bookState": state, "errorMssg": "no"}
    if key is not None:
        body["errorMssgLang"] = key
    return body


@pytest.mark.parametrize(
    ("status", "body", "outcome", "uncertain"),
    [
        (200, {"bookState": 1, "id": "991"}, BO.BOOKED, False),
        (200, {"bookState": "1", "id": "991"}, BO.BOOKED, False),
        (200, {"bookState": 0, "id": "992"}, BO.WAITLISTED, False),
        (200, _refusal(-12, "NOPUEDESRESERVAMISMAHORA"), BO.ALREADY_BOOKED, False),
        (200, _refusal(-12, "ERROR_ANTELACION_CLIENTE"), BO.TOO_EARLY, False),
        (200, _refusal(-12, "ERROR_ANTELACION_CLIENTE_HORAS"), BO.TOO_EARLY, False),
        (200, _refusal(-12, "HASSUPERADOLIMITCONTR"), BO.LIMIT_REACHED, False),
        (200, _refusal(-12, "SOMETHING_NEW"), BO.REJECTED, False),
        (200, _refusal(-12), BO.REJECTED, False),
        (200, _refusal(-1), BO.FULL, False),
        (200, _refusal(-2), BO.NO_CREDITS, False),
        (200, {**_refusal(-8), "max": 1}, BO.LIMIT_REACHED, False),
        (200, _refusal(-4), BO.REJECTED, False),
        (200, _refusal(-5), BO.REJECTED, False),
        (200, _refusal(-7), BO.REJECTED, False),
        (200, _refusal(-99), BO.REJECTED, False),
        (200, {"logout": 1}, BO.SESSION_EXPIRED, False),
        (200, {"id": "993"}, BO.BOOKED, False),
        (200, {"errorMssgLang": "NOPUEDESRESERVAMISMAHORA"}, BO.ALREADY_BOOKED, False),
        (200, {"errorMssg": "Algo fue mal"}, BO.REJECTED, False),
        (200, {"bookState": 7}, BO.TRANSIENT, True),
        (200, {"clasesContratadas": "WOD"}, BO.TRANSIENT, True),
        (200, {}, BO.TRANSIENT, True),
        (200, [], BO.TRANSIENT, True),
        (200, None, BO.TRANSIENT, True),
        (200, "garbage", BO.TRANSIENT, True),
        (401, None, BO.SESSION_EXPIRED, False),
        (403, None, BO.REJECTED, False),
        (404, None, BO.REJECTED, False),
        (429, None, BO.TRANSIENT, False),
        (500, None, BO.TRANSIENT, True),
        (502, {"bookState": 1}, BO.TRANSIENT, True),
        (503, None, BO.TRANSIENT, True),
    ],
)
def test_classify_maps_every_answer(status, body, outcome, uncertain):
    assert classify(status, body) == (outcome, uncertain)


@pytest.mark.parametrize(
    ("outcome", "success", "final"),
    [(o, o in {BO.BOOKED, BO.WAITLISTED, BO.ALREADY_BOOKED}, o is not BO.TRANSIENT) for o in BO],
)
def test_outcome_families(outcome, success, final):
    assert (outcome.is_success, outcome.is_final) == (success, final)


def test_box_base_url_prefers_the_override():
    assert box_base_url("mybox", None) == "https://mybox.aimharder.com"
    assert box_base_url("mybox", "http://127.0.0.1:8090/") == "http://127.0.0.1:8090"


def _client(handler: Handler) -> AimHarderClient:
    return AimHarderClient("http://aimharder.test", transport=httpx.MockTransport(handler))


def _raiser(exc_type: type[httpx.TransportError]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc_type("boom", request=request)

    return handler


def _book(
    client: AimHarderClient,
    class_id: str = "101",
    *,
    family_id: str | None = None,
    cookies: Mapping[str, str] = COOKIES,
) -> BookingResult:
    return client.book(
        box="mybox", class_id=class_id, day=DAY, family_id=family_id, cookies=cookies
    )


@pytest.mark.parametrize("exc_type", [httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout])
def test_connect_failures_were_never_sent(exc_type):
    result = _book(_client(_raiser(exc_type)))
    assert result.outcome is BO.TRANSIENT
    assert (result.request_sent, result.uncertain, result.status_code) == (False, False, None)
    assert result.raw == {}


@pytest.mark.parametrize(
    "exc_type", [httpx.ReadTimeout, httpx.WriteTimeout, httpx.ReadError, httpx.RemoteProtocolError]
)
def test_failures_after_sending_are_uncertain(exc_type):
    result = _book(_client(_raiser(exc_type)))
    assert result.outcome is BO.TRANSIENT
    assert (result.request_sent, result.uncertain) == (True, True)
    assert "secret" not in (result.message or "")


def test_book_sends_the_form_cookie_and_browser_headers():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"bookState": 1, "id": "555"})

    result = _book(_client(handler), family_id="fam7")
    request = seen[0]
    assert request.url == "http://aimharder.test/api/book"
    assert request.content.decode() == f"id=101&day={DAY}&insist=0&familyId=fam7"
    assert request.headers["Cookie"] == "amhrdrauth=secret-cookie-value; PHPSESSID=php-secret"
    assert request.headers["X-Requested-With"] == "XMLHttpRequest"
    assert request.headers["Origin"] == "http://aimharder.test"
    assert "Mozilla/5.0" in request.headers["User-Agent"]
    assert (result.outcome, result.reservation_id) == (BO.BOOKED, "555")


def test_set_cookie_from_one_user_never_reaches_another():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        headers = {"Set-Cookie": "amhrdrauth=leaked; Domain=aimharder.test; Path=/"}
        return httpx.Response(200, json={"bookState": 1, "id": "1"}, headers=headers)

    client = _client(handler)
    _book(client)
    _book(client, cookies={})
    assert "Cookie" not in seen[1].headers


def test_result_to_json_is_json_safe_and_has_no_cookies():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"bookState": -2, "errorMssg": "Sin créditos"})

    summary = _book(_client(handler)).to_json()
    text = json.dumps(summary)
    assert summary["outcome"] == "no_credits"
    assert summary["message"] == "Sin créditos"
    assert "secret" not in text
    assert datetime.fromisoformat(summary["sent_at"]).tzinfo is not None


def test_forbidden_says_it_may_be_a_geo_block():
    result = _book(_client(lambda request: httpx.Response(403, text="Forbidden")))
    assert result.outcome is BO.REJECTED
    assert "geo" in (result.message or "")


def test_garbage_body_is_uncertain():
    result = _book(_client(lambda request: httpx.Response(200, text="<html>oops")))
    assert (result.outcome, result.uncertain, result.request_sent) == (BO.TRANSIENT, True, True)


def test_warm_up_never_raises():
    _client(_raiser(httpx.ConnectError)).warm_up("mybox")


def test_listing_check_cannot_tell_after_a_transport_error():
    client = _client(_raiser(httpx.ReadTimeout))
    check = client.check_booked(
        box="b", box_id=BOX_ID, class_id="1", day=DAY, family_id=None, cookies={}
    )
    assert check is LC.UNKNOWN


def test_listing_sends_the_numeric_box_id_as_its_box_parameter():
    seen: list[httpx.Request] = []

    def listing(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"bookings": [{"id": "101", "bookState": 1}]})

    client = _client(listing)
    check = client.check_booked(
        box="mybox", box_id=BOX_ID, class_id="101", day=DAY, family_id="7", cookies=COOKIES
    )
    assert check is LC.BOOKED
    [request] = seen
    assert (request.method, request.url.path) == ("GET", "/api/bookings")
    params = dict(request.url.params)
    assert params.pop("_").isdigit()  # AimHarder's cache-buster, epoch ms
    assert params == {"day": DAY, "box": BOX_ID, "familyId": "7"}
    assert "amhrdrauth=secret-cookie-value" in request.headers["Cookie"]


def test_listing_without_a_box_id_is_impossible_and_asks_nothing():
    seen: list[httpx.Request] = []
    client = _client(lambda request: seen.append(request) or httpx.Response(200, json={}))
    check = client.check_booked(
        box="mybox", box_id=None, class_id="101", day=DAY, family_id=None, cookies=COOKIES
    )
    assert (check, seen) == (LC.IMPOSSIBLE, [])


@pytest.mark.parametrize(
    ("status", "body", "state"),
    [
        (200, {"bookings": []}, SS.ALIVE),
        (200, {"logout": 1}, SS.DEAD),
        (302, None, SS.DEAD),
        (401, None, SS.DEAD),
        (403, None, SS.UNKNOWN),
        (500, None, SS.UNKNOWN),
        (200, None, SS.UNKNOWN),
        (200, [], SS.UNKNOWN),
    ],
)
def test_session_state_from_the_listings_answer(status, body, state):
    assert classify_session(status, body) is state


def test_session_check_is_one_listing_request_and_unknown_without_answer():
    seen: list[httpx.Request] = []

    def redirect(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(302, headers={"Location": "https://login.aimharder.com/"})

    check = _client(redirect).check_session(box="mybox", box_id=BOX_ID, day=DAY, cookies=COOKIES)
    assert check is SS.DEAD
    [request] = seen
    assert (request.url.path, request.url.params["box"]) == ("/api/bookings", BOX_ID)
    failing = _client(_raiser(httpx.ConnectError))
    assert failing.check_session(box="b", box_id=None, day=DAY, cookies={}) is SS.UNKNOWN


def test_date_probe_brackets_the_request_with_our_clock():
    stamp = "Sat, 28 Nov 2026 07:00:00 GMT"
    client = _client(lambda request: httpx.Response(200, headers={"Date": stamp}))
    probe = client.probe_date("mybox")
    assert probe is not None
    assert (probe.date_header, probe.status_code) == (stamp, 200)
    assert probe.sent_at <= probe.received_at
    assert _client(_raiser(httpx.ConnectError)).probe_date("mybox") is None


def test_cookie_values_are_never_logged(caplog):
    caplog.set_level(logging.DEBUG)
    _book(_client(lambda request: httpx.Response(200, json={"bookState": 1, "id": "9"})))
    assert "secret" not in caplog.text


# --- against the real sandbox, over real HTTP --------------------------------------------


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with run_sandbox() as running:
        running.set_box_id(BOX_ID)
        yield running


@pytest.fixture
def client(sandbox: Sandbox) -> Iterator[AimHarderClient]:
    real = AimHarderClient(sandbox.url, timeout=1.0)
    yield real
    real.close()


def _is_booked(
    client: AimHarderClient,
    class_id: str,
    cookies: Mapping[str, str] = COOKIES,
    box_id: str | None = BOX_ID,
) -> bool | None:
    check = client.check_booked(
        box="mybox", box_id=box_id, class_id=class_id, day=DAY, family_id=None, cookies=cookies
    )
    return {LC.BOOKED: True, LC.NOT_BOOKED: False}.get(check)


def test_sandbox_booking_succeeds_and_shows_in_the_listing(client):
    assert _is_booked(client, "101") is None
    result = _book(client)
    assert (result.outcome, result.book_state, result.status_code) == (BO.BOOKED, 1, 200)
    assert result.reservation_id
    assert result.sent_at <= datetime.now(UTC)
    assert result.latency > timedelta(0)
    assert _is_booked(client, "101") is True
    assert _is_booked(client, "101", cookies={"amhrdrauth": "someone-else"}) is False


def test_sandbox_listing_needs_the_boxs_numeric_id(client):
    _book(client)
    assert _is_booked(client, "101", box_id="99999") is None  # another box: no such row
    wrong = client.check_booked(
        box="mybox", box_id="99999", class_id="101", day=DAY, family_id=None, cookies=COOKIES
    )
    assert wrong is LC.UNKNOWN


def test_sandbox_session_check_alive_and_dead(client):
    check = client.check_session
    assert check(box="mybox", box_id=BOX_ID, day=DAY, cookies=COOKIES) is SS.ALIVE
    dead = {"amhrdrauth": "expired-1"}
    assert check(box="mybox", box_id=BOX_ID, day=DAY, cookies=dead) is SS.DEAD


def test_sandbox_date_probe_reads_the_gyms_clock(client, sandbox):
    sandbox.set_clock(offset_ms=-3_600_000)  # an hour behind
    probe = client.probe_date("mybox")
    assert probe is not None and probe.date_header is not None
    stamped = parsedate_to_datetime(probe.date_header)
    hour = timedelta(hours=1)
    assert probe.sent_at - hour - timedelta(seconds=1) <= stamped <= probe.received_at - hour


def test_sandbox_second_booking_is_already_booked(client):
    _book(client)
    result = _book(client)
    assert result.outcome is BO.ALREADY_BOOKED
    assert result.error_key == "NOPUEDESRESERVAMISMAHORA"


def test_sandbox_before_opening_is_too_early(client, sandbox):
    sandbox.add_class("101", DAY, opens_at=datetime.now(UTC) + timedelta(days=1))
    result = _book(client)
    assert result.outcome is BO.TOO_EARLY
    assert "antelación" in (result.message or "")


def test_sandbox_full_class_and_waitlist(client, sandbox):
    sandbox.add_class("101", DAY, capacity=1, waitlist=1)
    outcomes = [_book(client, cookies={"amhrdrauth": f"user{i}"}).outcome for i in range(3)]
    assert outcomes == [BO.BOOKED, BO.WAITLISTED, BO.FULL]


def test_sandbox_expired_session_and_no_credits(client, sandbox):
    assert _book(client, cookies={"amhrdrauth": "expired-1"}).outcome is BO.SESSION_EXPIRED
    sandbox.add_session("broke", credits=0)
    assert _book(client, cookies={"amhrdrauth": "broke"}).outcome is BO.NO_CREDITS


def test_sandbox_read_timeout_is_uncertain_but_booked(client, sandbox):
    sandbox.set_fault("timeout", count=1, delay_ms=3000)
    result = _book(client)
    assert (result.outcome, result.request_sent, result.uncertain) == (BO.TRANSIENT, True, True)
    assert _is_booked(client, "101") is True


def test_sandbox_server_error_is_transient(client, sandbox):
    sandbox.set_fault("error_500", count=1)
    result = _book(client)
    assert (result.outcome, result.status_code, result.uncertain) == (BO.TRANSIENT, 500, True)
    assert _book(client).outcome is BO.BOOKED


def test_sandbox_garbage_is_uncertain(client, sandbox):
    sandbox.set_fault("garbage", count=1)
    result = _book(client)
    assert (result.outcome, result.uncertain) == (BO.TRANSIENT, True)
    assert _is_booked(client, "101") is True


def test_connection_refused_was_never_sent():
    with run_sandbox() as gone:
        url = gone.url
    client = AimHarderClient(url, connect_timeout=1.0)
    result = _book(client)
    client.close()
    assert (result.outcome, result.request_sent, result.uncertain) == (BO.TRANSIENT, False, False)


def test_warm_up_opens_the_connection_the_booking_reuses(client, sandbox):
    client.warm_up("mybox")
    assert sandbox.connections() == 1
    assert _book(client).outcome is BO.BOOKED
    assert _is_booked(client, "101") is True
    assert sandbox.connections() == 1
    assert [a["class_id"] for a in sandbox.arrivals()] == ["101"]


def test_one_client_books_from_many_threads(client, sandbox):
    sandbox.add_class("101", DAY, capacity=20)
    users = [{"amhrdrauth": f"user{i}"} for i in range(60)]
    with ThreadPoolExecutor(max_workers=30) as pool:
        outcomes = list(pool.map(lambda cookies: _book(client, cookies=cookies).outcome, users))
    assert outcomes.count(BO.BOOKED) == 20
    assert outcomes.count(BO.FULL) == 40
    assert len({a["user"] for a in sandbox.arrivals()}) == 60
