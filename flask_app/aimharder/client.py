"""The only code that talks to AimHarder: book a class, re-read the day's listing.

AimHarder publishes no API; the wire format follows reference/aimharder-and-cron.md §1.
`classify` is pure and maps one `/api/book` answer to a `BookingOutcome`; `AimHarderClient`
wraps one pooled, thread-safe `httpx.Client` shared by every user. Cookies go out in a
`Cookie` header built per request and are never logged or stored by the client.

For firing at an exact instant, `AimHarderClient.prepare` builds a `PreparedBooking` ahead: its
own open (TLS) connection and the request fully serialised, so the firing line
(`flask_app.aimharder.firing`) writes it with one raw `send` at the instant; its answer is
classified by the same code as `book()`'s.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

__all__ = [
    "AimHarderClient",
    "BookingOutcome",
    "BookingResult",
    "DateProbe",
    "ListingCheck",
    "PreparedBooking",
    "SessionState",
    "box_base_url",
    "classify",
    "classify_session",
]

log = logging.getLogger(__name__)

USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
ALREADY_BOOKED_KEYS = frozenset({"NOPUEDESRESERVAMISMAHORA"})
TOO_EARLY_KEYS = frozenset({"ERROR_ANTELACION_CLIENTE", "ERROR_ANTELACION_CLIENTE_HORAS"})
LIMIT_KEYS = frozenset({"HASSUPERADOLIMITCONTR"})
FORBIDDEN_MESSAGE = "HTTP 403 forbidden: AimHarder refused the request (possibly a geo/IP block)"


class BookingOutcome(StrEnum):
    """What one booking attempt came to, as far as we can tell."""

    BOOKED = "booked"
    WAITLISTED = "waitlisted"
    ALREADY_BOOKED = "already_booked"
    TOO_EARLY = "too_early"
    FULL = "full"
    NO_CREDITS = "no_credits"
    LIMIT_REACHED = "limit_reached"
    SESSION_EXPIRED = "session_expired"
    REJECTED = "rejected"
    TRANSIENT = "transient"

    @property
    def is_success(self) -> bool:
        """The user holds (or queues for) the place."""
        return self in _SUCCESS

    @property
    def is_final(self) -> bool:
        """Retrying the same request cannot change the answer."""
        return self is not BookingOutcome.TRANSIENT


class ListingCheck(StrEnum):
    """What re-reading the day's listing said about one class (the stale-claim recovery)."""

    BOOKED = "booked"  # the user holds or queues for it
    NOT_BOOKED = "not_booked"
    UNKNOWN = "unknown"  # asked, could not tell (network, HTTP error, no such row, bad body)
    IMPOSSIBLE = "impossible"  # could not ask: the prebooking has no numeric box id


class SessionState(StrEnum):
    """What one cheap authenticated read said about a stored session (the pre-flight)."""

    ALIVE = "alive"
    DEAD = "dead"  # `logout`, a redirect to the login page, or 401
    UNKNOWN = "unknown"  # network trouble, 5xx, 403 (geo block), or an answer we can't read


_SUCCESS = frozenset(
    {BookingOutcome.BOOKED, BookingOutcome.WAITLISTED, BookingOutcome.ALREADY_BOOKED}
)
_BOOK_STATES: dict[int, BookingOutcome] = {
    1: BookingOutcome.BOOKED,
    0: BookingOutcome.WAITLISTED,
    -1: BookingOutcome.FULL,
    -2: BookingOutcome.NO_CREDITS,
    -8: BookingOutcome.LIMIT_REACHED,
}


@dataclass(frozen=True)
class BookingResult:
    """One `/api/book` attempt: its outcome, what AimHarder said, and when."""

    outcome: BookingOutcome
    book_state: int | None
    reservation_id: str | None
    message: str | None
    error_key: str | None
    status_code: int | None
    request_sent: bool
    uncertain: bool
    sent_at: datetime
    latency: timedelta
    raw: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe summary for the prebooking's `result` column."""
        return {
            "outcome": self.outcome.value,
            "success": self.outcome.is_success,
            "book_state": self.book_state,
            "reservation_id": self.reservation_id,
            "message": self.message,
            "error_key": self.error_key,
            "status_code": self.status_code,
            "request_sent": self.request_sent,
            "uncertain": self.uncertain,
            "sent_at": self.sent_at.isoformat(),
            "latency_ms": round(self.latency / timedelta(milliseconds=1), 3),
            "raw": self.raw,
        }


def box_base_url(box: str, override: str | None) -> str:
    """The base URL for a box: `AIMHARDER_BASE_URL` when set, else the box's own host."""
    if override:
        return override.rstrip("/")
    return f"https://{box}.aimharder.com"


def _as_int(value: Any) -> int | None:
    """`bookState` as an int; AimHarder sometimes sends numbers as strings."""
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _classify_status(status_code: int) -> tuple[BookingOutcome, bool] | None:
    """Outcomes decided by the HTTP status alone; None for a 2xx."""
    if 200 <= status_code < 300:
        return None
    if status_code == 401:
        return BookingOutcome.SESSION_EXPIRED, False
    if status_code == 429:
        return BookingOutcome.TRANSIENT, False
    if status_code >= 500:
        # The request reached AimHarder; it may have booked before failing.
        return BookingOutcome.TRANSIENT, True
    return BookingOutcome.REJECTED, False


def _classify_state(state: int, error_key: str | None) -> tuple[BookingOutcome, bool]:
    """Map a `bookState` (and its `errorMssgLang`) to an outcome."""
    if error_key in LIMIT_KEYS:
        return BookingOutcome.LIMIT_REACHED, False
    if state == -12 and error_key in ALREADY_BOOKED_KEYS:
        return BookingOutcome.ALREADY_BOOKED, False
    if state == -12 and error_key in TOO_EARLY_KEYS:
        return BookingOutcome.TOO_EARLY, False
    if state in _BOOK_STATES:
        return _BOOK_STATES[state], False
    if state < 0:
        return BookingOutcome.REJECTED, False
    # An unknown positive state: the caller should re-read the listing.
    return BookingOutcome.TRANSIENT, True


def _classify_body(body: dict[str, Any]) -> tuple[BookingOutcome, bool]:
    """Classify a 2xx JSON object body."""
    if body.get("logout"):
        return BookingOutcome.SESSION_EXPIRED, False
    error_key = body.get("errorMssgLang") or None
    state = _as_int(body.get("bookState"))
    if state is not None:
        return _classify_state(state, error_key)
    if body.get("id"):
        return BookingOutcome.BOOKED, False
    if error_key is not None:
        return _classify_state(-12, error_key)
    if body.get("errorMssg"):
        return BookingOutcome.REJECTED, False
    return BookingOutcome.TRANSIENT, True


def classify(status_code: int, body: Any) -> tuple[BookingOutcome, bool]:
    """Map an `/api/book` answer to `(outcome, uncertain)`.

    `body` is the parsed JSON, or anything else (e.g. None) when it did not parse.
    `uncertain` means the class may have been booked anyway: re-read the listing.
    """
    by_status = _classify_status(status_code)
    if by_status is not None:
        return by_status
    if isinstance(body, dict) and body:
        return _classify_body(body)
    # `[]`, `{}` or garbage with a 200: reported once as a success; verify by re-reading.
    return BookingOutcome.TRANSIENT, True


def _cookie_header(cookies: Mapping[str, str]) -> str:
    """The `Cookie` header for a name -> value mapping."""
    return "; ".join(f"{name}={value}" for name, value in cookies.items())


def _no_cookie_jar() -> CookieJar:
    """A jar that stores nothing, so one user's Set-Cookie never reaches another user."""
    return CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))


def _parse_body(response: httpx.Response) -> Any:
    """The JSON body, or None when it is not JSON."""
    try:
        return response.json()
    except ValueError:
        return None


def _str_or_none(value: Any) -> str | None:
    """A present, non-empty value as a string."""
    if value is None or value == "":
        return None
    return str(value)


def _describe_failure(outcome: BookingOutcome, status_code: int, body: Any) -> str | None:
    """A short message when AimHarder gave none."""
    if status_code == 403:
        return FORBIDDEN_MESSAGE
    if not 200 <= status_code < 300:
        return f"HTTP {status_code}"
    if not isinstance(body, dict):
        return "unparseable or non-object response body" if body is None else "non-object body"
    if not body:
        return "empty response body"
    if outcome is BookingOutcome.SESSION_EXPIRED:
        return "session expired (logout)"
    return None


# Errors raised before the request could have left this process.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


@dataclass(frozen=True)
class _Attempt:
    """When a request went out and how long it took."""

    sent_at: datetime
    started: float

    def latency(self) -> timedelta:
        return timedelta(seconds=time.perf_counter() - self.started)


def _start() -> _Attempt:
    return _Attempt(sent_at=datetime.now(UTC), started=time.perf_counter())


def _transport_result(exc: httpx.TransportError, attempt: _Attempt) -> BookingResult:
    """A result for a request that got no HTTP answer."""
    return _no_answer_result(exc, sent=not isinstance(exc, _NOT_SENT), attempt=attempt)


def _no_answer_result(exc: Exception, *, sent: bool, attempt: _Attempt) -> BookingResult:
    """A transient result for a request that got no HTTP answer (uncertain once sent)."""
    return BookingResult(
        outcome=BookingOutcome.TRANSIENT,
        book_state=None,
        reservation_id=None,
        message=f"transport error: {type(exc).__name__}",
        error_key=None,
        status_code=None,
        request_sent=sent,
        uncertain=sent,
        sent_at=attempt.sent_at,
        latency=attempt.latency(),
        raw={},
    )


def _response_result(response: httpx.Response, attempt: _Attempt) -> BookingResult:
    """A result for an HTTP answer."""
    latency = attempt.latency()
    return _answer_result(response.status_code, _parse_body(response), attempt, latency)


def _answer_result(
    status_code: int, body: Any, attempt: _Attempt, latency: timedelta
) -> BookingResult:
    """A result for an HTTP status and its parsed body (None: not JSON)."""
    outcome, uncertain = classify(status_code, body)
    raw: dict[str, Any] = body if isinstance(body, dict) else {}
    return BookingResult(
        outcome=outcome,
        book_state=_as_int(raw.get("bookState")),
        reservation_id=_str_or_none(raw.get("id")) if outcome.is_success else None,
        message=_str_or_none(raw.get("errorMssg")) or _describe_failure(outcome, status_code, body),
        error_key=_str_or_none(raw.get("errorMssgLang")),
        status_code=status_code,
        request_sent=True,
        uncertain=uncertain,
        sent_at=attempt.sent_at,
        latency=latency,
        raw=raw,
    )


def classify_session(status_code: int, body: Any) -> SessionState:
    """Map a `/api/bookings` answer to the state of the session that asked (reference §1.2)."""
    if status_code == 401 or 300 <= status_code < 400:
        return SessionState.DEAD  # AimHarder redirects dead sessions to its login page
    if status_code != 200 or not isinstance(body, dict):
        return SessionState.UNKNOWN
    return SessionState.DEAD if body.get("logout") else SessionState.ALIVE


@dataclass(frozen=True)
class DateProbe:
    """One cheap request's `Date` header and when, by our clock, it left and its answer came.

    The box host stamped the header at some instant between `sent_at` and `received_at`.
    """

    sent_at: datetime
    received_at: datetime
    date_header: str | None
    status_code: int


def _ns_datetime(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, UTC)


def _row_is_booked(row: Mapping[str, Any]) -> bool:
    """A listing row the caller holds (booked or waitlisted)."""
    return _as_int(row.get("bookState")) in (0, 1) or bool(row.get("idres"))


def _find_row(body: Any, class_id: str) -> Mapping[str, Any] | None:
    """The listing row for a class session id, if the body has one."""
    rows = body.get("bookings") if isinstance(body, dict) else None
    if not isinstance(rows, list):
        return None
    for row in rows:
        if isinstance(row, dict) and str(row.get("id")) == str(class_id):
            return row
    return None


def _log_result(box: str, class_id: str, day: str, result: BookingResult) -> None:
    log.info(
        "aimharder book box=%s class=%s day=%s outcome=%s state=%s status=%s uncertain=%s",
        box,
        class_id,
        day,
        result.outcome.value,
        result.book_state,
        result.status_code,
        result.uncertain,
    )


def _ssl_context(verify: ssl.SSLContext | bool) -> ssl.SSLContext:
    """The TLS context for raw connections, matching httpx's `verify`."""
    if isinstance(verify, ssl.SSLContext):
        return verify
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _serialise(
    netloc: str, path: str, form: Mapping[str, str], headers: list[tuple[str, str]]
) -> bytes | None:
    """An HTTP/1.1 POST of `form`, as bytes; None if a header value cannot go out safely."""
    body = urlencode(form).encode("ascii")
    lines = [f"POST {path} HTTP/1.1", f"Host: {netloc}"]
    for name, value in [*headers, ("Content-Length", str(len(body)))]:
        if "\r" in value or "\n" in value:
            return None
        lines.append(f"{name}: {value}")
    try:
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    except UnicodeEncodeError:
        return None
    return head + body


class PreparedBooking:
    """One `/api/book` request ready to go: its own open connection and its bytes.

    `write()` (the firing line's thread) sends it; `result()` (the owner's thread, afterwards)
    reads and classifies the answer like `book()`. Nothing written means nothing sent: the
    owner falls back to `book()`. A failure once any byte went out is sent and uncertain.
    """

    def __init__(
        self, sock: socket.socket, request: bytes, *, box: str, class_id: str, day: str
    ) -> None:
        self._sock = sock
        self._request = request
        self._where = (box, class_id, day)
        self._attempt: _Attempt | None = None
        self._written = 0
        self._write_error: OSError | None = None
        self._reusable = False

    @property
    def request(self) -> bytes:
        """The serialised request (for tests and diagnostics; it carries the cookies)."""
        return self._request

    def is_open(self) -> bool:
        """The server has neither closed the connection nor spoken first."""
        timeout = self._sock.gettimeout()
        self._sock.settimeout(0)
        try:
            self._sock.recv(1)  # TLS: also processes session tickets sent after the handshake
        except (BlockingIOError, ssl.SSLWantReadError):
            return True
        except OSError:
            return False
        finally:
            self._sock.settimeout(timeout)
        return False

    def write(self) -> None:
        """Send the request now; never raises (a failure is kept for `result()`)."""
        self._attempt = _start()
        view = memoryview(self._request)
        try:
            while self._written < len(view):
                self._written += self._sock.send(view[self._written :])
        except OSError as exc:
            self._write_error = exc

    @property
    def sent(self) -> bool:
        """At least one byte of the request left."""
        return self._written > 0

    def fileno(self) -> int:
        """The connection's file descriptor (to wait for the answer with a selector)."""
        return self._sock.fileno()

    def result(self, *, keep_open: bool = False) -> BookingResult | None:
        """The classified answer; None when nothing was sent (book through `book()`).

        keep_open: leave a keep-alive connection open after a complete answer, so `again()`
        can re-send the same request over it without a new handshake.
        """
        attempt = self._attempt
        if attempt is None or not self.sent:
            self.close()
            return None
        try:
            result = self._read(attempt)
        finally:
            if not (keep_open and self._reusable):
                self.close()
        _log_result(*self._where, result)
        return result

    def _read(self, attempt: _Attempt) -> BookingResult:
        if self._write_error is not None:
            return _no_answer_result(self._write_error, sent=True, attempt=attempt)
        response = http.client.HTTPResponse(self._sock, method="POST")
        try:
            response.begin()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            return _no_answer_result(exc, sent=True, attempt=attempt)
        finally:
            response.close()
        self._reusable = not response.will_close
        latency = attempt.latency()
        return _answer_result(response.status, _json_or_none(data), attempt, latency)

    def again(self) -> PreparedBooking | None:
        """The same request, ready to go again over this connection (None: it was closed)."""
        if not self._reusable:
            return None
        self._reusable = False
        box, class_id, day = self._where
        return PreparedBooking(self._sock, self._request, box=box, class_id=class_id, day=day)

    def expire(self) -> None:
        """Make a pending read give up at once (the answer's deadline passed)."""
        try:
            self._sock.settimeout(0.001)
        except OSError:
            pass

    def close(self) -> None:
        """Close the connection (it serves one booking)."""
        try:
            self._sock.close()
        except OSError:
            pass


def _json_or_none(data: bytes) -> Any:
    """The JSON body, or None when it is not JSON."""
    try:
        return json.loads(data)
    except ValueError:
        return None


def _book_form(class_id: str, day: str, family_id: str | None) -> dict[str, str]:
    """The `/api/book` form, the same whether httpx sends it or the firing line does."""
    return {"id": class_id, "day": day, "insist": "0", "familyId": family_id or ""}


class AimHarderClient:
    """A pooled, thread-safe AimHarder client shared by every user and box."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        timeout: float = 8.0,
        connect_timeout: float = 3.0,
        transport: httpx.BaseTransport | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self._base_url = base_url
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._custom_transport = transport is not None
        self._ssl_context = _ssl_context(verify)
        self._http = httpx.Client(
            verify=verify,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            limits=httpx.Limits(
                max_connections=200, max_keepalive_connections=200, keepalive_expiry=60.0
            ),
            transport=transport,
            cookies=_no_cookie_jar(),
            follow_redirects=False,
            headers={"User-Agent": USER_AGENT},
        )

    def _url(self, box: str, path: str) -> str:
        return box_base_url(box, self._base_url) + path

    def _headers(self, box: str, cookies: Mapping[str, str]) -> dict[str, str]:
        """Browser-like headers, as AimHarder's own pages send them."""
        origin = box_base_url(box, self._base_url)
        headers = {
            "Accept": "application/json, text/javascript, */*; q=0.01",
            "X-Requested-With": "XMLHttpRequest",
            "Origin": origin,
            "Referer": origin + "/",
        }
        if cookies:
            headers["Cookie"] = _cookie_header(cookies)
        return headers

    def book(
        self,
        *,
        box: str,
        class_id: str,
        day: str,
        family_id: str | None,
        cookies: Mapping[str, str],
    ) -> BookingResult:
        """POST `/api/book` once and classify the answer; never raises for network trouble."""
        form = _book_form(class_id, day, family_id)
        headers = self._headers(box, cookies)
        attempt = _start()
        try:
            response = self._http.post(self._url(box, "/api/book"), data=form, headers=headers)
        except httpx.TransportError as exc:
            result = _transport_result(exc, attempt)
        else:
            result = _response_result(response, attempt)
        _log_result(box, class_id, day, result)
        return result

    def prepare(
        self,
        *,
        box: str,
        class_id: str,
        day: str,
        family_id: str | None,
        cookies: Mapping[str, str],
    ) -> PreparedBooking | None:
        """Open a connection and serialise the `/api/book` request now, to write it later.

        None when that is not possible (a custom transport, a header that cannot go out raw,
        a connection that would not open): the caller then books through `book()`.
        """
        if self._custom_transport:
            return None
        form = _book_form(class_id, day, family_id)
        url = urlsplit(self._url(box, "/api/book"))
        request = _serialise(url.netloc, url.path, form, self._raw_headers(box, cookies))
        if request is None or url.hostname is None or url.scheme not in ("http", "https"):
            return None
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            sock = self._connect(url.hostname, port, tls=url.scheme == "https")
        except OSError as exc:
            log.info("aimharder prepare failed box=%s: %s", box, type(exc).__name__)
            return None
        return PreparedBooking(sock, request, box=box, class_id=class_id, day=day)

    def _raw_headers(self, box: str, cookies: Mapping[str, str]) -> list[tuple[str, str]]:
        """The headers `book()` sends through httpx, for a raw request."""
        return [
            ("User-Agent", USER_AGENT),
            ("Accept-Encoding", "identity"),
            ("Connection", "keep-alive"),
            *self._headers(box, cookies).items(),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ]

    def _connect(self, host: str, port: int, *, tls: bool) -> socket.socket:
        """A connected socket (TLS handshake done), Nagle off, read timeout set."""
        sock = socket.create_connection((host, port), timeout=self._connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if tls:
                sock = self._ssl_context.wrap_socket(sock, server_hostname=host)
            sock.settimeout(self._timeout)
        except BaseException:
            sock.close()
            raise
        return sock

    def _listing(
        self,
        box: str,
        box_id: str | None,
        day: str,
        family_id: str | None,
        cookies: Mapping[str, str],
    ) -> httpx.Response | None:
        """GET the day's listing (reference §1.3: `box` is the NUMERIC box id); None: no answer."""
        params = {"day": day, "familyId": family_id or "", "_": str(time.time_ns() // 1_000_000)}
        if box_id:
            params["box"] = box_id
        try:
            return self._http.get(
                self._url(box, "/api/bookings"), params=params, headers=self._headers(box, cookies)
            )
        except httpx.TransportError as exc:
            log.warning("aimharder listing failed box=%s: %s", box, type(exc).__name__)
            return None

    def check_booked(
        self,
        *,
        box: str,
        box_id: str | None,
        class_id: str,
        day: str,
        family_id: str | None,
        cookies: Mapping[str, str],
    ) -> ListingCheck:
        """Re-read the day's listing for one class session (asks nothing without `box_id`)."""
        if not box_id:
            return ListingCheck.IMPOSSIBLE
        response = self._listing(box, box_id, day, family_id, cookies)
        if response is None or response.status_code != 200:
            return ListingCheck.UNKNOWN
        row = _find_row(_parse_body(response), class_id)
        if row is None:
            return ListingCheck.UNKNOWN
        return ListingCheck.BOOKED if _row_is_booked(row) else ListingCheck.NOT_BOOKED

    def check_session(
        self, *, box: str, box_id: str | None, day: str, cookies: Mapping[str, str]
    ) -> SessionState:
        """One cheap authenticated read (the day's listing): is the stored session alive?"""
        response = self._listing(box, box_id, day, None, cookies)
        if response is None:
            return SessionState.UNKNOWN
        return classify_session(response.status_code, _parse_body(response))

    def probe_date(self, box: str) -> DateProbe | None:
        """One cheap unauthenticated request (`HEAD /`) for the box host's `Date` header.

        None when no answer came. Our timestamps bracket the request as closely as httpx lets
        us: the host stamped its `Date` between them.
        """
        url = self._url(box, "/")
        sent_ns = time.time_ns()
        try:
            response = self._http.head(url, headers={"Accept": "*/*"})
        except httpx.TransportError as exc:
            log.info("aimharder date probe failed box=%s: %s", box, type(exc).__name__)
            return None
        received_ns = time.time_ns()
        return DateProbe(
            _ns_datetime(sent_ns),
            _ns_datetime(received_ns),
            response.headers.get("Date"),
            response.status_code,
        )

    def host_of(self, box: str) -> str:
        """The base URL a box's requests go to (boxes behind one URL share one clock)."""
        return box_base_url(box, self._base_url)

    def warm_up(self, box: str) -> None:
        """Open (or keep) a pooled keep-alive connection to the box host; never raises."""
        try:
            self._http.head(self._url(box, "/"), headers={"Accept": "*/*"})
        except Exception:  # warming is best effort: a failure only costs a handshake later
            log.debug("aimharder warm-up failed box=%s", box, exc_info=True)

    def close(self) -> None:
        """Close every pooled connection."""
        self._http.close()
