"""Room members on WebSockets with and without permessage-deflate, against
a `socketio` route whose `deflate` key asks for it: the agreement the
server states, and a broadcast that reaches every member intact.

    python deflate_members.py URL     (URL like http://127.0.0.1:PORT)

Prints one JSON line ({"ok", ...details}); exits 1 on a failed check. Every
step is bounded by a timeout.
"""
import asyncio
import json
import sys

from websockets.asyncio.client import connect

STEP = 5


async def member(url, compression):
    ws = await connect(f"{url}/socket.io/?EIO=4&transport=websocket", compression=compression,
                       max_size=None, open_timeout=STEP)
    opened = await asyncio.wait_for(ws.recv(), STEP)
    assert opened.startswith("0{"), opened
    await ws.send("40")
    connected = await asyncio.wait_for(ws.recv(), STEP)
    assert connected.startswith("40{"), connected
    return ws


async def main(url):
    url = url.replace("http://", "ws://")
    squeezed = [await member(url, "deflate") for _ in range(2)]
    plain = await member(url, None)
    members = [*squeezed, plain]
    for ws in members:
        await ws.send('420["subscribe","r"]')
        ack = await asyncio.wait_for(ws.recv(), STEP)
        assert ack == '430[{"rooms":["r"]}]', ack
    agreed = [ws.response.headers.get("Sec-WebSocket-Extensions") for ws in members]
    for a in agreed[:2]:
        assert a and "permessage-deflate" in a and "server_no_context_takeover" in a, agreed
    assert agreed[2] is None, agreed
    text = "tick " * 400
    sender = await member(url, None)
    await sender.send(f'421["publish","r",{json.dumps(text)}]')
    assert await asyncio.wait_for(sender.recv(), STEP) == "431[]"
    expected = f'42["publish","r",{json.dumps(text)}]'
    for ws in members:
        got = await asyncio.wait_for(ws.recv(), STEP)
        assert got == expected, got[:80]
    for ws in [*members, sender]:
        await ws.close()
    return {"agreed": agreed[0], "bytes": len(expected)}


if __name__ == "__main__":
    try:
        details = asyncio.run(main(sys.argv[1]))
        print(json.dumps({"ok": True, **details}))
    except Exception as err:  # noqa: BLE001 - the line says what failed
        print(json.dumps({"ok": False, "error": repr(err)}))
        sys.exit(1)
