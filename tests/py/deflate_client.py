"""permessage-deflate round trips against surge with the Python `websockets`
client, which offers the extension by default.

Usage: deflate_client.py ws://HOST:PORT/PATH EXPECTED_EXTENSION_SUBSTRING
Prints the negotiated extension header; exits non-zero on any mismatch.
"""

import json
import os
import sys

from websockets.sync.client import connect


def main(url: str, expected: str) -> None:
    with connect(url, max_size=None, open_timeout=5, close_timeout=5) as ws:
        agreed = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        print(f"negotiated: {agreed}")
        if expected not in agreed:
            sys.exit(f"expected {expected!r} in {agreed!r}")
        ticks = [{"symbol": "AAPL", "seq": i, "px": 187.25 + i / 100} for i in range(2000)]
        messages = [
            "", "x", "short and uncompressed",
            json.dumps(ticks),
            "κόσμε €𐍈 " * 5000,
            os.urandom(70000),
            b"\0" * (1 << 20),
        ]
        for _ in range(3):  # several messages per context, if it is kept
            for m in messages:
                ws.send(m)
                got = ws.recv(timeout=10)
                if got != m:
                    sys.exit(f"echo of a {type(m).__name__} of {len(m)} differs")
        ws.send(["frag", "mented", " ✓"])
        if ws.recv(timeout=10) != "fragmented ✓":
            sys.exit("fragmented echo differs")
    print("all deflate round trips OK")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
