"""The firing line and prepared bookings: order, never early, same answers as `book()`."""

from __future__ import annotations

import datetime as dt
import ipaddress
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from aimharder_sandbox.server import make_server
from aimharder_sandbox.testing import Sandbox, run_sandbox
from flask_app.aimharder.client import (
    AimHarderClient,
    BookingOutcome,
    BookingResult,
    PreparedBooking,
)
from flask_app.aimharder.firing import FiringLine
from flask_app.core.execution import Executor
from flask_app.timing import SystemClock
from tests.fakes import FakeBookingClient, FakeClock

DAY = "20261128"
BO = BookingOutcome


class RecordingShot:
    """A shot that notes when (by its clock) and in which order it was written."""

    def __init__(self, name: int, log: list[tuple[int, Any]], now: Callable[[], Any]) -> None:
        self.name = name
        self.log = log
        self.now = now
        self.open = True

    def is_open(self) -> bool:
        return self.open

    def write(self) -> None:
        self.log.append((self.name, self.now()))


def _fire_all(line: FiringLine, shots: list[Any], instants: list[datetime]) -> list[bool]:
    """Submit every shot from its own thread, in a shuffled order; their `fire` answers."""
    written = [False] * len(shots)

    def run(i: int) -> None:
        written[i] = line.fire(shots[i], instants[i])

    order = list(range(len(shots)))
    random.Random(7).shuffle(order)
    threads = [threading.Thread(target=run, args=(i,)) for i in order]
    for thread in threads:
        thread.start()
        time.sleep(0.001)
    for thread in threads:
        thread.join(timeout=10)
    return written


def test_same_instant_shots_are_written_in_fire_order_whatever_the_submission_order():
    log: list[tuple[int, Any]] = []
    opening = datetime.now(UTC) + timedelta(milliseconds=400)
    shots = [RecordingShot(i, log, time.time_ns) for i in range(30)]
    instants = [opening + timedelta(microseconds=10 * i) for i in range(30)]
    written = _fire_all(FiringLine(SystemClock()), shots, instants)
    assert all(written)
    assert [name for name, _ in log] == list(range(30))


def test_no_shot_is_written_before_its_instant_on_the_real_clock():
    log: list[tuple[int, Any]] = []
    opening = datetime.now(UTC) + timedelta(milliseconds=200)
    instants = [opening + timedelta(microseconds=50 * i) for i in range(10)]
    shots = [RecordingShot(i, log, time.time_ns) for i in range(10)]
    _fire_all(FiringLine(SystemClock()), shots, instants)
    for name, at_ns in log:
        assert at_ns >= int(instants[name].timestamp() * 1e6) * 1000


def test_no_shot_is_written_before_its_instant_on_a_fake_clock():
    clock = FakeClock(datetime(2026, 11, 24, 7, 0, tzinfo=UTC))
    log: list[tuple[int, Any]] = []
    line = FiringLine(clock)
    at = clock.now() + timedelta(hours=2)
    assert line.fire(RecordingShot(0, log, clock.now), at)
    assert log == [(0, at)]
    assert line.fire(RecordingShot(1, log, clock.now), at - timedelta(hours=1))
    assert log[1][1] >= at - timedelta(hours=1)


def test_a_shot_whose_connection_dropped_is_handed_back_unwritten():
    log: list[tuple[int, Any]] = []
    shot = RecordingShot(0, log, time.time_ns)
    shot.open = False
    assert FiringLine(SystemClock()).fire(shot, datetime.now(UTC)) is False
    assert log == []


class _ExplodingShot(RecordingShot):
    def write(self) -> None:
        raise RuntimeError("a bug in a shot")


def test_a_shot_that_raises_still_wakes_its_owner_and_the_line_keeps_firing():
    log: list[tuple[int, Any]] = []
    line = FiringLine(SystemClock())
    assert line.fire(_ExplodingShot(0, log, time.time_ns), datetime.now(UTC)) is False
    assert line.fire(RecordingShot(1, log, time.time_ns), datetime.now(UTC)) is True
    assert [name for name, _ in log] == [1]


# --- prepared bookings against the sandbox ---------------------------------------------


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with run_sandbox() as running:
        yield running


@pytest.fixture
def client(sandbox: Sandbox) -> Iterator[AimHarderClient]:
    real = AimHarderClient(sandbox.url, timeout=1.0)
    yield real
    real.close()


def _prepare(client: AimHarderClient, user: str = "u1", class_id: str = "101") -> PreparedBooking:
    prepared = client.prepare(
        box="mybox", class_id=class_id, day=DAY, family_id=None, cookies={"amhrdrauth": user}
    )
    assert prepared is not None
    return prepared


def _fire_now(prepared: PreparedBooking) -> BookingResult | None:
    prepared.write()
    return prepared.result()


def _book(client: AimHarderClient, user: str = "u1") -> BookingResult:
    return client.book(
        box="mybox", class_id="101", day=DAY, family_id=None, cookies={"amhrdrauth": user}
    )


def test_same_instant_bookings_reach_aimharder_in_creation_order(client, sandbox):
    opening = datetime.now(UTC) + timedelta(milliseconds=500)
    sandbox.add_class("101", DAY, opens_at=opening, capacity=40)
    prepared = [_prepare(client, f"user{i:02d}") for i in range(40)]
    instants = [opening + timedelta(microseconds=10 * i) for i in range(40)]
    assert all(_fire_all(FiringLine(SystemClock()), prepared, instants))
    results = [p.result() for p in prepared]
    assert [r.outcome if r else None for r in results] == [BO.BOOKED] * 40
    arrivals = sorted(sandbox.arrivals(), key=lambda a: a["at_ns"])
    assert [a["user"] for a in arrivals] == [f"user{i:02d}" for i in range(40)]
    assert all(a["book_state"] == 1 for a in arrivals)  # none arrived before the opening


def _scenarios() -> dict[str, Callable[[Sandbox], str]]:
    """Sandbox set-ups, each returning the user to book as; one per classify branch."""

    def full(sb: Sandbox) -> str:
        sb.add_class("101", DAY, capacity=0)
        return "u1"

    def waitlisted(sb: Sandbox) -> str:
        sb.add_class("101", DAY, capacity=0, waitlist=1)
        return "u1"

    def too_early(sb: Sandbox) -> str:
        sb.add_class("101", DAY, opens_at=datetime.now(UTC) + timedelta(days=1))
        return "u1"

    def no_credits(sb: Sandbox) -> str:
        sb.add_session("broke", credits=0)
        return "broke"

    def fault(mode: str) -> Callable[[Sandbox], str]:
        def set_up(sb: Sandbox) -> str:
            sb.set_fault(mode, count=1)
            return "u1"

        return set_up

    def already(sb: Sandbox) -> str:
        sb.state.book(box="sandbox", class_id="101", day=DAY, user="u1", at_ns=time.time_ns())
        return "u1"

    return {
        "booked": lambda sb: "u1",
        "waitlisted": waitlisted,
        "full": full,
        "too early": too_early,
        "no credits": no_credits,
        "expired session": lambda sb: "expired-1",
        "already booked": already,
        "server error": fault("error_500"),
        "garbage body": fault("garbage"),
    }


def _comparable(result: BookingResult) -> tuple[Any, ...]:
    return (
        result.outcome,
        result.book_state,
        bool(result.reservation_id),
        result.message,
        result.error_key,
        result.status_code,
        result.request_sent,
        result.uncertain,
        {k: v for k, v in result.raw.items() if k != "id"},
    )


@pytest.mark.parametrize("scenario", list(_scenarios()))
def test_a_prepared_booking_is_classified_exactly_like_book(scenario, client, sandbox):
    set_up = _scenarios()[scenario]
    user = set_up(sandbox)
    plain = _book(client, user)
    sandbox.reset()
    user = set_up(sandbox)
    fired = _fire_now(_prepare(client, user))
    assert fired is not None
    assert _comparable(fired) == _comparable(plain)


def test_a_connection_that_cannot_open_is_not_prepared():
    with run_sandbox() as gone:
        url = gone.url
    client = AimHarderClient(url, connect_timeout=1.0)
    prepared = client.prepare(
        box="mybox", class_id="101", day=DAY, family_id=None, cookies={"amhrdrauth": "u1"}
    )
    client.close()
    assert prepared is None


def test_a_request_written_then_left_unanswered_is_sent_and_uncertain():
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        client = AimHarderClient(f"http://127.0.0.1:{port}", timeout=2.0)
        prepared = _prepare(client)
        conn, _ = server.accept()
        prepared.write()
        assert conn.recv(65536).startswith(b"POST /api/book HTTP/1.1\r\n")
        conn.close()  # hangs up without an answer
        result = prepared.result()
    assert result is not None
    assert (result.outcome, result.request_sent, result.uncertain) == (BO.TRANSIENT, True, True)


class _BrokenSocket:
    """A socket whose every send fails before a byte leaves."""

    def send(self, data: Any) -> int:
        raise ConnectionResetError("peer reset")

    def close(self) -> None:
        pass


def test_a_write_that_fails_before_any_byte_is_not_sent():
    prepared = PreparedBooking(
        _BrokenSocket(),  # type: ignore[arg-type]
        b"POST / HTTP/1.1\r\n\r\n",
        box="b",
        class_id="1",
        day=DAY,
    )
    prepared.write()
    assert prepared.sent is False
    assert prepared.result() is None  # the owner books through httpx instead


def test_a_connection_the_server_closed_is_seen_before_writing():
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = AimHarderClient(f"http://127.0.0.1:{server.getsockname()[1]}")
        prepared = _prepare(client)
        conn, _ = server.accept()
        assert prepared.is_open() is True
        conn.close()  # an idle keep-alive connection the server gave up on
        time.sleep(0.05)
        assert prepared.is_open() is False
        prepared.close()


def test_prepared_requests_carry_the_same_headers_as_book(client):
    prepared = _prepare(client, "secret-cookie")
    prepared.close()
    request = prepared.request.decode("latin-1")
    head = request.split("\r\n\r\n", 1)[0]
    assert "Cookie: amhrdrauth=secret-cookie" in head
    assert "X-Requested-With: XMLHttpRequest" in head
    assert request.endswith("id=101&day=20261128&insist=0&familyId=")


def test_a_cookie_that_cannot_go_out_raw_is_not_prepared(client):
    assert (
        client.prepare(
            box="mybox", class_id="101", day=DAY, family_id=None, cookies={"a": "x\r\nEvil: 1"}
        )
        is None
    )


# --- the executor: firing line, fallback ----------------------------------------------


class _Unpreparable(FakeBookingClient):
    def prepare(self, **kwargs: Any) -> None:
        return None


class _DroppedShot(RecordingShot):
    """A prepared booking whose connection the server closed before the instant."""

    def __init__(self) -> None:
        super().__init__(0, [], time.time_ns)
        self.open = False

    def result(self) -> None:
        return None

    def close(self) -> None:
        pass


class _Dropped(FakeBookingClient):
    def prepare(self, **kwargs: Any) -> Any:
        return _DroppedShot()


@pytest.mark.parametrize("client_class", [_Unpreparable, _Dropped])
def test_the_executor_falls_back_to_book_when_the_line_cannot_fire(client_class):
    fake = client_class()
    clock = FakeClock(datetime.now(UTC))
    executor = Executor(
        sessions=None,  # type: ignore[arg-type]
        client=fake,
        load_cookies=lambda s, e: {},
        clock=clock,
        line=FiringLine(clock),
    )
    at = clock.now() + timedelta(seconds=5)
    form = {"box": "b", "class_id": "1", "day": DAY, "family_id": None}
    result, fired_at = executor._book_at(at, form, {"amhrdrauth": "u"})  # noqa: SLF001
    assert result.outcome is BO.BOOKED
    assert len(fake.calls) == 1
    assert fired_at >= at


def test_the_executor_books_through_the_line_with_a_preparing_client(client, sandbox):
    clock = SystemClock()
    executor = Executor(
        sessions=None,  # type: ignore[arg-type]
        client=client,
        load_cookies=lambda s, e: {},
        clock=clock,
        line=FiringLine(clock),
    )
    at = datetime.now(UTC) + timedelta(milliseconds=100)
    form = {"box": "mybox", "class_id": "101", "day": DAY, "family_id": None}
    result, fired_at = executor._book_at(at, form, {"amhrdrauth": "u1"})  # noqa: SLF001
    assert result.outcome is BO.BOOKED
    assert fired_at == result.sent_at >= at
    assert sandbox.connections() == 1  # the prepared connection; httpx was not used


# --- https ------------------------------------------------------------------------------


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_a_prepared_booking_goes_out_over_tls(tmp_path):
    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    server = make_server("127.0.0.1", 0)
    server.socket = server_ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        port = server.server_address[1]
        trust = ssl.create_default_context(cafile=str(cert))
        client = AimHarderClient(f"https://127.0.0.1:{port}", timeout=2.0, verify=trust)
        prepared = _prepare(client)
        line = FiringLine(SystemClock())
        assert line.fire(prepared, datetime.now(UTC) + timedelta(milliseconds=50))
        result = prepared.result()
        plain = _book(client, "u2")
        client.close()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert result is not None and result.outcome is BO.BOOKED
    assert plain.outcome is BO.BOOKED
    assert [a["user"] for a in server.state.arrivals()] == ["u1", "u2"]
