"""Measure TCP goodput between the two ends of a link (run inside a namespace).

    python -m miglab.linkprobe recv ADDR PORT      # prints "bytes seconds"
    python -m miglab.linkprobe send ADDR PORT SECONDS
"""
from __future__ import annotations

import socket
import sys
import time

CHUNK = 1 << 16


def receive(addr: str, port: int) -> None:
    with socket.create_server((addr, port)) as server:
        print("listening", flush=True)
        server.settimeout(30)
        conn, _ = server.accept()
        with conn:
            conn.settimeout(30)
            total = 0
            first = last = 0.0
            while data := conn.recv(CHUNK):
                last = time.monotonic()
                if not total:
                    first = last
                total += len(data)
    print(total, max(last - first, 1e-9), flush=True)


def send(addr: str, port: int, seconds: float) -> None:
    payload = b"\xa5" * CHUNK
    with socket.create_connection((addr, port), timeout=30) as conn:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            conn.sendall(payload)


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[0] == "recv":
        receive(argv[1], int(argv[2]))
    elif len(argv) >= 4 and argv[0] == "send":
        send(argv[1], int(argv[2]), float(argv[3]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
