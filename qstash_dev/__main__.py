"""Command line: `python -m qstash_dev [--port 8080] [--data-dir DIR] ...`."""

from __future__ import annotations

import argparse
import signal
import sys
import time

from qstash_dev.server import from_environment


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m qstash_dev", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--data-dir", default=None, help="keep state in an SQLite file here")
    parser.add_argument(
        "--retry-delay-scale",
        type=float,
        default=None,
        help="multiply every retry delay (env QSTASH_DEV_RETRY_DELAY_SCALE; default 1)",
    )
    parser.add_argument("--quiet", action="store_true", help="do not log each request")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the server in the foreground until Ctrl-C."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    server = from_environment(
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        retry_delay_scale=args.retry_delay_scale,
        quiet=args.quiet,
    )
    signal.signal(signal.SIGTERM, _interrupt)
    server.start()  # loads persisted state first, so the printed keys are the ones in force
    where = args.data_dir or "memory only"
    print(f"qstash_dev listening on {server.url} (state: {where}). Environment:", flush=True)
    for line in server.env_lines():
        print(line, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def _interrupt(signum: int, frame: object) -> None:
    """Treat SIGTERM like Ctrl-C."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    raise SystemExit(main())
