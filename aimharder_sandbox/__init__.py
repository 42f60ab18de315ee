"""A local stand-in for AimHarder's booking API (reference/aimharder-and-cron.md §1).

Run it with `python -m aimharder_sandbox --port 8090 [--host 127.0.0.1]` and point the app's
`AIMHARDER_BASE_URL` at it. In tests use `aimharder_sandbox.testing.run_sandbox()`.

AimHarder endpoints (any host; the box is the `X-Sandbox-Box` header, else the first label of a
DNS `Host`, else `"sandbox"`; with an IP base URL every box is the one gym `"sandbox"`):

- `POST /api/book` form `id`, `day` (`insist`, `familyId` ignored): `bookState 1` + `id`;
  `0` + `id` waitlisted; `-12`/`ERROR_ANTELACION_CLIENTE` before `opens_at`;
  `-12`/`NOPUEDESRESERVAMISMAHORA` same user twice; `-1` full; `-2` no credits;
  `{"logout": 1}` for a missing/invalid `amhrdrauth` cookie.
- `GET /api/bookings?day=&box=<numeric box id>` the day's rows (`id`, `bookState`, `idres`,
  `ocupation`, `limit`, ...); none unless `box` is this box's id.
- `POST /api/cancelBook` form `id` (reservation id): `{"cancelState": 1}` or `3`.

Admin (JSON): `POST /_sandbox/classes` `{class_id, day, opens_at, capacity, waitlist, box?}`,
`POST /_sandbox/sessions` `{cookie, credits}`, `POST /_sandbox/faults` `{mode, count, delay_ms,
rate, seed}` (`rate`: each booking faults with that probability, seeded),
`GET|DELETE /_sandbox/arrivals`, `GET /_sandbox/state`, `POST /_sandbox/reset`.
Unknown classes are created on first touch: capacity 20, no waitlist, open now.
`POST /_sandbox/clock` `{offset_ms, jitter_ms, seed}` and `POST /_sandbox/boxes` `{box, box_id}`.

The gym has its own clock (offset + per-request jitter, `--clock-offset-ms`, `--clock-jitter-ms`):
windows open by it and the `Date` header shows it; arrivals keep the kernel receive stamp.
"""

from aimharder_sandbox.server import SandboxServer, make_server
from aimharder_sandbox.state import SandboxClass, SandboxState

__all__ = ["SandboxClass", "SandboxServer", "SandboxState", "make_server"]
