"""A local server that accepts connections, reads forever and never answers (a hung QStash)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class HangingServer:
    """Where it listens and how many connections it accepted."""

    url: str
    accepted: int = 0
    _conns: list[socket.socket] = field(default_factory=list)


@contextmanager
def hanging_server() -> Iterator[HangingServer]:
    """Listen on a free loopback port; every connection is read from and never answered."""
    listener = socket.create_server(("127.0.0.1", 0))
    server = HangingServer(f"http://127.0.0.1:{listener.getsockname()[1]}")
    stop = threading.Event()

    def read_forever(conn: socket.socket) -> None:
        while not stop.is_set():
            try:
                if not conn.recv(65536):
                    return
            except OSError:
                return

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            server.accepted += 1
            server._conns.append(conn)
            threading.Thread(target=read_forever, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        for sock in (listener, *server._conns):
            try:  # shutdown wakes the threads blocked in accept() and recv(); close does not
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        thread.join(timeout=5)
