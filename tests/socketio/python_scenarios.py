#!/usr/bin/env python3
"""Named scenarios run with the stock python-socketio client (the threaded
`socketio.Client`, on requests and websocket-client) against a Socket.IO v5
server configured as the socket.io-protocol reference (auth echoed as `auth`,
`message` -> `message-back`, `message-with-ack` acked with its arguments, a
`/custom` namespace), at path /socket.io/.

    python3 python_scenarios.py URL SCENARIO...   (URL like http://127.0.0.1:PORT)

Prints one JSON line per scenario ({"scenario", "ok", ...details}), then
`python_scenarios: N passed, N failed`; exits 1 if any failed, 2 on bad
arguments or without python-socketio. Every step is bounded (a timeout fails
it) and no scenario runs past 60 s. Timing comes from the server's open
packet, never from constants. The scenarios are those of client_scenarios.mjs
that this client can do; it has no connection state recovery and no
per-namespace disconnect, so there is no `recovery` and `multiplex` does not
leave `/custom`. Wants a server without connection state recovery (whose
events would carry an offset); `rooms` wants its room events
(reference_server.mjs --rooms).
"""

import json
import logging
import sys
import threading
import time
import urllib.request

try:
    import socketio
except ImportError:
    print("python_scenarios.py needs python-socketio[client] (with requests and websocket-client)", file=sys.stderr)
    sys.exit(2)

PATH = "socket.io"
STEP_S = 5.0
SCENARIO_CAP_S = 60.0


class ScenarioError(Exception):
    def __init__(self, message, **details):
        super().__init__(message)
        self.details = details


def check(condition, message, **details):
    if not condition:
        raise ScenarioError(message, **details)


def plain(value):
    """bytes become {"$binary": hex} and tuples lists, so that arguments
    compare and print as JSON."""
    if isinstance(value, (bytes, bytearray)):
        return {"$binary": bytes(value).hex()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def same(a, b):
    return json.dumps(plain(a), sort_keys=True) == json.dumps(plain(b), sort_keys=True)


class PingCounter(logging.Handler):
    """The client exposes no ping event; its Engine.IO logger names every
    packet it receives, PINGs included."""

    def __init__(self, on_ping):
        super().__init__(logging.INFO)
        self.on_ping = on_ping
        self.upgraded = False
        self.started_on = None

    def emit(self, record):
        if record.msg.startswith("Received packet") and record.args and record.args[0] == "PING":
            self.on_ping()
        elif record.msg.startswith("Attempting polling connection"):
            self.started_on = self.started_on or "polling"
        elif record.msg.startswith("Attempting WebSocket connection"):
            self.started_on = self.started_on or "websocket"
        elif record.msg.startswith("WebSocket upgrade was successful"):
            self.upgraded = True


class Client:
    """A stock client whose events on each namespace are recorded, so that a
    scenario can wait for them and still show everything on failure."""

    def __init__(self, namespaces=("/",)):
        self.cond = threading.Condition()
        self.events = {ns: [] for ns in namespaces}
        self.connects = {ns: 0 for ns in namespaces}
        self.connect_errors = {ns: [] for ns in namespaces}
        self.disconnects = {ns: [] for ns in namespaces}
        self.pings = 0
        # event name -> function(args) giving the ack's arguments as a tuple
        self.answers = {}
        logger = logging.getLogger(f"engineio.scenario.{id(self)}")
        logger.propagate = False
        logger.setLevel(logging.INFO)
        self.log = PingCounter(lambda: self.record(self._ping))
        logger.addHandler(self.log)
        self.sio = socketio.Client(
            reconnection=False, handle_sigint=False, request_timeout=STEP_S, engineio_logger=logger
        )
        for ns in namespaces:
            self.sio.on("*", self._handler(ns), namespace=ns)
            self.sio.on("connect", self._on(ns, lambda ns: self.connects.__setitem__(ns, self.connects[ns] + 1)), namespace=ns)
            self.sio.on("connect_error", self._on(ns, lambda ns, *a: self.connect_errors[ns].append(plain(list(a)))), namespace=ns)
            self.sio.on("disconnect", self._on(ns, lambda ns, *a: self.disconnects[ns].append(plain(list(a)))), namespace=ns)
        self.namespaces = list(namespaces)

    def _ping(self):
        self.pings += 1

    def _on(self, ns, change):
        return lambda *args: self.record(lambda: change(ns, *args))

    def _handler(self, ns):
        def handle(event, *args):
            self.record(lambda: self.events[ns].append([event, *args]))
            answer = self.answers.get(event)
            return answer(list(args)) if answer else None

        return handle

    def record(self, change):
        with self.cond:
            change()
            self.cond.notify_all()

    def until(self, predicate, what, timeout=STEP_S, ns="/", while_down=False):
        """Returns predicate()'s value once it holds; fails on timeout, or
        early if `ns` disconnects first (unless `while_down`)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            down_at_start = len(self.disconnects[ns])
            while True:
                value = predicate()
                if value:
                    return value
                if not while_down and len(self.disconnects[ns]) > down_at_start:
                    raise ScenarioError(f"disconnected {what}", disconnects=self.disconnects)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ScenarioError(f"timed out after {timeout:g} s {what}", events=plain(self.events))
                self.cond.wait(left)

    def connect(self, url, auth=None, transports=None, wait=True):
        self.sio.connect(
            url, auth=auth, transports=transports, namespaces=self.namespaces,
            socketio_path=PATH, wait=wait, wait_timeout=STEP_S,
        )

    def connected(self, ns="/"):
        self.until(lambda: self.connects[ns] > 0 or self.connect_errors[ns], f"waiting for {ns} to connect", ns=ns)
        check(self.connects[ns] > 0, "connect refused", namespace=ns, connect_errors=self.connect_errors[ns])

    def next(self, name, count=1, start=0, ns="/", timeout=STEP_S):
        """The `count` first events named `name` from index `start` on."""
        matching = lambda: [e[1:] for e in self.events[ns][start:] if e[0] == name]
        self.until(lambda: len(matching()) >= count, f'waiting for {count} "{name}" on {ns}', timeout, ns)
        return matching()[:count]

    def mark(self, ns="/"):
        with self.cond:
            return len(self.events[ns])

    def ack(self, event, *args, ns="/", timeout=STEP_S):
        """Emits with an ack callback and returns the ack's arguments."""
        box = []
        self.sio.emit(event, tuple(args), namespace=ns, callback=lambda *reply: self.record(lambda: box.append(list(reply))))
        return self.until(lambda: box, f'waiting for the ack of "{event}"', timeout, ns)[0]

    def close(self):
        try:
            self.sio.disconnect()
        except Exception:
            pass


def open_packet(url):
    """pingInterval and pingTimeout from a throwaway polling handshake (the
    session is left to time out on the server)."""
    with urllib.request.urlopen(f"{url}/{PATH}/?EIO=4&transport=polling", timeout=STEP_S) as res:
        body = res.read().decode()
    check(body.startswith("0"), "polling handshake failed", body=body)
    return json.loads(body[1:])


def plain_args():
    return [1, "2", {"3": [True]}, None, "é€ unicode 🙂", [1.5, -2, False], {"nested": {"deep": ["x"]}}, ""]


def binary_args():
    return [
        bytes([1, 2, 3]),
        "between",
        {"file": bytes([0, 0x1E, 0xFF, 0x34]), "list": [b"one", {"two": b"two"}]},
        b"",
    ]


def exchanges(url, transports):
    """Every exchange of the reference configuration over one transport
    setting: auth echoed, events, acks both ways, binary both ways, in order."""
    auth = {"token": "123", "user": {"name": "é", "roles": ["a", "b"]}}
    client = Client()
    try:
        client.connect(url, auth=auth, transports=transports)
        client.connected()
        [echoed] = client.next("auth")
        check(same(echoed, [auth]), "auth not echoed", sent=auth, got=plain(echoed))
        sid = client.sio.get_sid("/")
        check(isinstance(sid, str) and sid, "no socket id", id=sid)
        check(sid != client.sio.eio.sid, "socket id is the Engine.IO sid")

        # Events, in order, each echoed once. python-engineio's client drops
        # the session on a polling response of more than 16 packets
        # (Payload.max_decode_packets), and the reference answers with all it
        # has buffered in one response: so the plain and the binary bursts
        # (11 packets, then 1 + 4 attachments) are awaited one after the other.
        batches = [plain_args(), *([f"ordered-{i}", i] for i in range(10))], [binary_args()]
        for burst in batches:
            start = client.mark()
            for args in burst:
                client.sio.emit("message", tuple(args))
            back = client.next("message-back", len(burst), start)
            for i, args in enumerate(burst):
                check(same(back[i], args), f"message-back {i} differs", sent=plain(args), got=plain(back[i]))

        # Client -> server ack, plain and binary (the answer is an ACK or a BINARY_ACK).
        acked = client.ack("message-with-ack", *plain_args())
        check(same(acked, plain_args()), "ack differs", got=plain(acked))
        acked_binary = client.ack("message-with-ack", *binary_args())
        check(same(acked_binary, binary_args()), "binary ack differs", got=plain(acked_binary))
        acked_empty = client.ack("message-with-ack")
        check(acked_empty == [], "empty ack differs", got=plain(acked_empty))

        # Server -> client ack: "message" with an ack makes the reference emit
        # "message-back" asking for an ack (the handler's return value), and
        # it hands that answer back to us.
        reply = (bytes([9, 8, 7]), "from-client")
        client.answers["message-back"] = lambda args: reply if args == ["ask"] else None
        chained = client.ack("message", "ask")
        check(same(chained, reply), "server -> client ack differs", sent=plain(reply), got=plain(chained))
        return {"transport": client.sio.transport(), "events": sum(map(len, batches)), "acks": 4}
    finally:
        client.close()


def connect_auth(url):
    sessions = []
    for label, auth in [("none", None), ("object", {"token": "abc"})]:
        client = Client()
        try:
            client.connect(url, auth=auth)
            client.connected()
            [echoed] = client.next("auth")
            check(same(echoed, [auth or {}]), "auth not echoed", auth=label, got=plain(echoed))
            sessions.append({"auth": label, "echoed": plain(echoed[0])})
        finally:
            client.close()
    return {"sessions": sessions}


def polling(url):
    details = exchanges(url, ["polling"])
    check(details["transport"] == "polling", "transport changed", **details)
    return details


def websocket(url):
    details = exchanges(url, ["websocket"])
    check(details["transport"] == "websocket", "transport changed", **details)
    return details


def upgrade(url):
    """The default client: the polling handshake, then the upgrade (which
    this client completes before connect() returns), then events in order."""
    client = Client()
    try:
        client.connect(url)
        client.connected()
        check(client.log.started_on == "polling", "default client did not start on polling", started_on=client.log.started_on)
        check(client.log.upgraded and client.sio.transport() == "websocket", "no upgrade", transport=client.sio.transport())
        start = client.mark()
        sent = [f"seq-{i}" for i in range(50)]
        for text in sent:
            client.sio.emit("message", text)
        client.next("message-back", len(sent), start)
        time.sleep(0.1)  # a duplicate would arrive now
        got = [e[1] for e in client.events["/"][start:] if e[0] == "message-back"]
        check(got == sent, "echoes out of order, altered or duplicated", sent=len(sent), got=got)
        return {"sent": len(sent), "started_on": client.log.started_on, "transport": client.sio.transport()}
    finally:
        client.close()


def multiplex(url):
    """"/" and "/custom" over one Engine.IO session, each with its own sid."""
    client = Client(["/", "/custom"])
    auth = {"ns": "both"}
    try:
        client.connect(url, auth=auth)
        client.connected("/")
        client.connected("/custom")
        check(same(client.next("auth"), [[auth]]), "main auth not echoed", got=plain(client.events))
        check(same(client.next("auth", ns="/custom"), [[auth]]), "custom auth not echoed", got=plain(client.events))
        main_sid, custom_sid = client.sio.get_sid("/"), client.sio.get_sid("/custom")
        check(main_sid != custom_sid, "same socket id in both namespaces", sid=main_sid)
        engine_sid = client.sio.eio.sid
        # /custom has no `message` handler: nothing comes back there, and "/" goes on.
        custom_start = client.mark("/custom")
        client.sio.emit("message", "to custom", namespace="/custom")
        start = client.mark()
        client.sio.emit("message", "message to main namespace")
        check(same(client.next("message-back", 1, start), [["message to main namespace"]]), "main namespace echo differs")
        check(client.mark("/custom") == custom_start, "an answer on /custom", got=plain(client.events["/custom"]))
        check(client.sio.eio.sid == engine_sid, "the Engine.IO session changed")
        return {"namespaces": client.namespaces, "transport": client.sio.transport(), "distinct_sids": True}
    finally:
        client.close()


def refused(url):
    """A namespace the server does not have: alone, connect() fails with the
    server's CONNECT_ERROR; next to "/", that one goes on unaffected."""
    alone = Client(["/random"])
    try:
        try:
            alone.connect(url)
            raise ScenarioError("connect to /random succeeded")
        except socketio.exceptions.ConnectionError as exc:
            raised = str(exc)
        check(alone.connect_errors["/random"] == [[{"message": "Invalid namespace"}]], "unexpected connect_error",
              errors=alone.connect_errors)
    finally:
        alone.close()

    both = Client(["/", "/random"])
    try:
        # wait=False: connect() returns on the Engine.IO open, so that one
        # refused namespace does not tear the session down.
        both.connect(url, wait=False)
        both.connected("/")
        both.until(lambda: both.connect_errors["/random"], "waiting for connect_error", ns="/random")
        error = both.connect_errors["/random"]
        check(error == [[{"message": "Invalid namespace"}]], "unexpected connect_error", error=error)
        time.sleep(0.2)
        check(len(both.connect_errors["/random"]) == 1 and both.connects["/random"] == 0, "the refused namespace retried",
              errors=both.connect_errors)
        start = both.mark()
        both.sio.emit("message", "still here")
        check(same(both.next("message-back", 1, start), [["still here"]]), "main namespace broken by the refusal")
        return {"raised": raised, "connect_error": error[0][0], "main_still_connected": "/" in both.sio.namespaces}
    finally:
        both.close()


def heartbeat_over(url, transport):
    settings = open_packet(url)
    interval, timeout = settings["pingInterval"] / 1000, settings["pingTimeout"] / 1000
    client = Client()
    try:
        client.connect(url, transports=[transport])
        client.connected()
        opened = time.monotonic()
        stay = 3.5 * interval
        client.until(lambda: client.pings >= 3, "waiting for 3 pings", stay + timeout + 2)
        remaining = stay - (time.monotonic() - opened)
        if remaining > 0:
            time.sleep(remaining)
        check(client.sio.connected and not client.disconnects["/"], "disconnected while answering pings",
              disconnects=client.disconnects)
        start = client.mark()
        client.sio.emit("message", "after-heartbeat")
        client.next("message-back", 1, start, timeout=interval + timeout + 2)
        return {"transport": transport, "pingInterval": settings["pingInterval"], "pingTimeout": settings["pingTimeout"],
                "open_ms": round((time.monotonic() - opened) * 1000), "pings": client.pings}
    finally:
        client.close()


def heartbeat(url):
    return {"sessions": [heartbeat_over(url, "polling"), heartbeat_over(url, "websocket")]}


def rooms(url):
    """Room events of reference_server.mjs --rooms: one client joins, another
    emits to the room; after `leave` nothing more arrives."""
    member, sender = Client(), Client()
    try:
        member.connect(url)
        sender.connect(url, transports=["polling"])
        member.connected()
        sender.connected()
        joined = member.ack("join", "r1")
        check(joined == [["r1"]], "join not acked with the rooms", got=joined)
        check(member.ack("join", "r2") == [["r1", "r2"]], "second join not acked with both rooms")
        sender.ack("to-room", "r1", "hello", bytes([1, 2]))
        [got] = member.next("room-event")
        check(same(got, ["r1", "hello", bytes([1, 2])]), "room-event differs", got=plain(got))
        check(member.ack("leave", "r1") == [["r2"]], "leave not acked with the rooms left")
        start = member.mark()
        sender.ack("to-room", "r1", "after-leave")
        sender.ack("to-room", "r2", "still-in-r2")
        [second] = member.next("room-event", 1, start)
        check(second == ["r2", "still-in-r2"], "got an event for a room left", got=plain(second))
        return {"member": member.sio.transport(), "sender": sender.sio.transport()}
    finally:
        member.close()
        sender.close()


SCENARIOS = {
    "connect_auth": connect_auth,
    "polling": polling,
    "websocket": websocket,
    "upgrade": upgrade,
    "multiplex": multiplex,
    "refused": refused,
    "heartbeat": heartbeat,
    "rooms": rooms,
}


def run(name, url):
    """Runs a scenario in a thread of its own, so that even a step the client
    blocks in forever is cut off at the cap (the thread is left behind)."""
    outcome = {}

    def body():
        try:
            outcome["details"] = SCENARIOS[name](url)
        except ScenarioError as exc:
            outcome["error"] = {"error": str(exc), **exc.details}
        except Exception as exc:  # a client exception fails the scenario, not the run
            outcome["error"] = {"error": f"{type(exc).__name__}: {exc}"}

    started = time.monotonic()
    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    thread.join(SCENARIO_CAP_S)
    line = {"scenario": name}
    if "details" in outcome:
        line.update(ok=True, ms=round((time.monotonic() - started) * 1000), **outcome["details"])
    else:
        line.update(ok=False, ms=round((time.monotonic() - started) * 1000),
                    **outcome.get("error", {"error": f"timed out after {SCENARIO_CAP_S:g} s running {name}"}))
    return line


def main():
    url, names = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("", [])
    unknown = [n for n in names if n not in SCENARIOS]
    if not url.startswith(("http://", "https://")) or not names or unknown:
        print(f"usage: python_scenarios.py URL SCENARIO...\nscenarios: {' '.join(SCENARIOS)}", file=sys.stderr)
        if unknown:
            print(f"unknown: {' '.join(unknown)}", file=sys.stderr)
        sys.exit(2)
    url = url.rstrip("/")
    failed = 0
    for name in names:
        line = run(name, url)
        failed += not line["ok"]
        print(json.dumps(line, ensure_ascii=False, default=repr), flush=True)
    print(f"python_scenarios: {len(names) - failed} passed, {failed} failed", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
