"""`python -m aimharder_sandbox --port 8090 [--host 127.0.0.1]`: serve until Ctrl-C."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from aimharder_sandbox.server import make_server
from aimharder_sandbox.state import SandboxState


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
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the sandbox in the foreground."""
    args = parse_args(argv)
    server = make_server(
        args.host, args.port, SandboxState(accept_any_session=args.accept_any_session)
    )
    host, port = server.server_address[:2]
    print(
        f"AimHarder sandbox on http://{host!s}:{port} (set AIMHARDER_BASE_URL to this)", flush=True
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
