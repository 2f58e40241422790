"""Round trips against `surge echo` with the Python `websockets` client.

Usage: echo_client.py ws://HOST:PORT/PATH
       echo_client.py wss://HOST:PORT/PATH CAFILE   (trusting only CAFILE)
Exits non-zero, naming the mismatch, on any failure.
"""

import os
import ssl
import sys

from websockets.sync.client import connect


def main(url: str, cafile: str | None) -> None:
    tls = ssl.create_default_context(cafile=cafile) if cafile else None
    with connect(
        url, ssl=tls, max_size=None, compression=None, open_timeout=5, close_timeout=5
    ) as ws:
        for size in (0, 1, 125, 126, 65535, 65536, 1 << 20):
            data = os.urandom(size)
            ws.send(data)
            got = ws.recv(timeout=10)
            if got != data:
                sys.exit(f"binary echo of {size} bytes differs")
            text = "κόσμε €𐍈 " * (size // 16 + 1)
            ws.send(text)
            got = ws.recv(timeout=10)
            if got != text:
                sys.exit(f"text echo of {len(text)} chars differs")
        # A fragmented message: the client sends it as three frames.
        ws.send(["frag", "mented", " ✓"])
        got = ws.recv(timeout=10)
        if got != "fragmented ✓":
            sys.exit(f"fragmented echo differs: {got!r}")
        pong = ws.ping(b"are you there")
        if not pong.wait(timeout=5):
            sys.exit("no pong")
    if ws.close_code != 1000:
        sys.exit(f"close code {ws.close_code}")
    print("python websockets: all round trips OK")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
