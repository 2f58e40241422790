"""Hub subscribers that negotiated permessage-deflate get every published
message intact (the server compresses each once per shard for all of them).

Usage: hub_deflate.py ws://HOST:PORT/hub SUBSCRIBERS MESSAGES
"""

import json
import sys

from websockets.sync.client import connect


def main(url: str, subscribers: int, messages: int) -> None:
    subs = [connect(url, max_size=None, open_timeout=5, close_timeout=5) for _ in range(subscribers)]
    for ws in subs:
        ext = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        if "permessage-deflate" not in ext:
            sys.exit(f"deflate not negotiated: {ext!r}")
        ws.send(json.dumps({"op": "subscribe", "topics": ["news"]}))
        ack = json.loads(ws.recv(timeout=10))
        if ack.get("op") != "subscribed":
            sys.exit(f"bad ack {ack}")
    with connect(url, open_timeout=5, close_timeout=5) as pub:
        for i in range(messages):
            data = {"seq": i, "text": "breaking news " * (i % 7 + 5)}
            pub.send(json.dumps({"op": "publish", "topic": "news", "data": data}))
    for n, ws in enumerate(subs):
        for i in range(messages):
            got = json.loads(ws.recv(timeout=10))
            if got["topic"] != "news" or got["data"]["seq"] != i:
                sys.exit(f"subscriber {n} got {got} for message {i}")
        ws.close()
    print("every subscriber got every message")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
