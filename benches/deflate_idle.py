#!/usr/bin/env python3
"""Memory per idle connection with and without permessage-deflate.

Holds 10,000 and then 15,000 upgraded, idle connections to `surge echo
--shards 1` (server on core 0) from 16 loopback source addresses, offering
`permessage-deflate; client_max_window_bits` in the second run, and prints
the marginal server RSS per connection between the two counts. Every request
goes out at once, so the bound on handshakes in flight is raised for it.

Usage: python3 benches/deflate_idle.py [--backend uring|epoll]
"""

import argparse
import os
import resource
import socket
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SURGE = os.path.join(ROOT, "target/release/surge")
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss(pid):
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE


def open_many(port, request, n, offset):
    socks = []
    for i in range(n):
        s = socket.socket()
        s.bind((f"127.0.0.{2 + (i + offset) % 16}", 0))
        s.connect(("127.0.0.1", port))
        s.sendall(request)
        socks.append(s)
    for s in socks:
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(4096)
        if not head.startswith(b"HTTP/1.1 101"):
            raise SystemExit(f"upgrade refused: {head[:60]!r}")
    return socks


def marginal(backend, port, extension):
    server = subprocess.Popen(
        ["taskset", "-c", "0", SURGE, "echo", "--shards", "1", "--backend", backend,
         "--max-conns-per-ip", "0", "--max-handshakes-in-flight", "20000", "--idle-timeout-ms", "0",
         "--listen", f"127.0.0.1:{port}"],
        stderr=subprocess.PIPE)
    server.stderr.readline()
    time.sleep(0.3)
    request = ("GET /echo HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
               + extension + "\r\n").encode()
    try:
        first = open_many(port, request, 10000, 0)
        time.sleep(1)
        at10 = rss(server.pid)
        second = open_many(port, request, 5000, 10000)
        time.sleep(1)
        at15 = rss(server.pid)
    finally:
        server.kill()
        server.wait()
    for s in first + second:
        s.close()
    return (at15 - at10) / 5000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", default="uring")
    a = ap.parse_args()
    resource.setrlimit(resource.RLIMIT_NOFILE, (19000, 19000))
    plain = marginal(a.backend, 19911, "")
    deflate = marginal(a.backend, 19912,
                       "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n")
    print(f"backend={a.backend} marginal bytes per idle connection, 10k -> 15k: "
          f"plain {plain:.0f}, deflate negotiated {deflate:.0f}, extra {deflate - plain:.0f}")


if __name__ == "__main__":
    main()
