"""Holds COUNT half-open HTTP connections to HOST:PORT until killed (a connection flood).

Each connection sends the start of a request and never finishes it, the way a slow or
malicious client (or a reconnect storm stuck behind a full replica) ties up descriptors.
Prints "open N" on stdout once N connections are established, then waits to be killed.

Usage: half_open_flood.py HOST PORT COUNT
"""

import socket
import sys
import time


def main():
    host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    sockets = []
    for _ in range(count):
        try:
            s = socket.create_connection((host, port), timeout=2)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: flood\r\n")  # never finished
            sockets.append(s)
        except OSError:
            time.sleep(0.01)
    print(f"open {len(sockets)}", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
