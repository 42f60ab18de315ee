"""`python -m aimharder_sandbox --port 8090 [--host 127.0.0.1] [--clock-offset-ms -20]
[--clock-jitter-ms 2] [--box-id sandbox=10122]`: serve until Ctrl-C."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from aimharder_sandbox.clock import settings_from_ms
from aimharder_sandbox.server import make_server
from aimharder_sandbox.state import DEFAULT_BOX, SandboxState


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m aimharder_sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument(
        "--accept-any-session",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="any non-empty amhrdrauth not starting with 'expired' is a valid session",
    )
    parser.add_argument(
        "--clock-offset-ms",
        type=float,
        default=0.0,
        help="the gym's clock runs this far ahead of ours (negative: behind)",
    )
    parser.add_argument(
        "--clock-jitter-ms",
        type=float,
        default=0.0,
        help="plus, per request, a uniform draw in [-jitter, +jitter]",
    )
    parser.add_argument("--clock-seed", type=int, default=None, help="seed of the jitter's draws")
    parser.add_argument(
        "--box-id",
        action="append",
        default=[],
        metavar="BOX=ID",
        help="the numeric id a box's listing requires (repeatable); default: derived from its name",
    )
    args = parser.parse_args(argv)
    for pair in args.box_id:
        box, _, box_id = pair.partition("=")
        if not box or not box_id.isdigit():
            parser.error(f"--box-id takes BOX=DIGITS, not {pair!r}")
    if args.clock_jitter_ms < 0:
        parser.error("--clock-jitter-ms must not be negative")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Run the sandbox in the foreground."""
    args = parse_args(argv)
    clock = settings_from_ms(args.clock_offset_ms, args.clock_jitter_ms, args.clock_seed)
    state = SandboxState(accept_any_session=args.accept_any_session, clock=clock)
    for pair in args.box_id:
        box, _, box_id = pair.partition("=")
        state.set_box_id(box, box_id)
    server = make_server(args.host, args.port, state)
    host, port = server.server_address[:2]
    print(
        f"AimHarder sandbox on http://{host!s}:{port} (set AIMHARDER_BASE_URL to this)", flush=True
    )
    print(
        f"box {DEFAULT_BOX!r} has id {state.box_id(DEFAULT_BOX)} (the listing's box parameter); "
        f"gym clock offset {args.clock_offset_ms:g} ms, jitter ±{args.clock_jitter_ms:g} ms",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
