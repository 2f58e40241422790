#!/usr/bin/env python3
"""Checks a Socket.IO v5 server's answers to well-formed, malformed and edge-case packets.

    python3 raw_packets.py URL [--show] [--strict] [--transport websocket|polling|both]
                           [--connect-timeout MS] [--only CASE,...]

URL is the server's base (http://127.0.0.1:PORT); sessions go to /socket.io/.
The server is configured as the socket.io-protocol reference (auth echoed as
`auth`, `message` -> `message-back`, `message-with-ack` acked, `/custom`), see
tests/socketio/REFERENCE.md. Every case runs on a fresh Engine.IO session over
each transport asked for (both by default), Engine.IO done by hand; every wait
is bounded. The exit status is 1 if any answer differs (each difference is
listed), 2 on bad arguments. --show prints what each case saw as one JSON line.
--connect-timeout MS adds the case of a session that never sends CONNECT (the
server's connectTimeout; the reference's default is 45 s, so it is off unless asked).

Where the Socket.IO spec says MUST and the reference Node server does otherwise,
the check asserts the spec's answer; the Node answer is reported as a known
deviation rather than a failure (--strict fails on it too).

Standard library only, like tests/engineio/raw_errors.py, whose HTTP and
WebSocket framing it reuses.
"""

import base64
import json
import os
import queue
import sys
import threading
import time
import urllib.parse

# The import must not leave bytecode next to raw_errors.py.
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "engineio"))
from raw_errors import Connection, Mismatch, WebSocket  # noqa: E402

PATH = "/socket.io/"
TIMEOUT = 5.0
# How long a case waits for an answer it expects, and watches for one it does not.
ANSWER_WAIT = 2.0
QUIET = 0.4

CLOSED = "closed"


class Session:
    """One Engine.IO v4 session carrying Socket.IO packets. A reader thread
    answers pings and queues what the server sends: ("text", socket.io packet
    without the Engine.IO "4"), ("binary", bytes) and, once, (CLOSED, how)."""

    def __init__(self, host, port, transport):
        self.host, self.port, self.transport = host, port, transport
        self.items = queue.Queue()
        self.send_lock = threading.Lock()
        self.closed = None
        self.conns = []
        if transport == "websocket":
            self._open_websocket()
        else:
            self._open_polling()
        self.reader = threading.Thread(target=self._read_loop, daemon=True)
        self.reader.start()

    # -- Engine.IO by hand -------------------------------------------------
    def _open_websocket(self):
        conn = Connection(self.host, self.port)
        self.conns.append(conn)
        key = base64.b64encode(os.urandom(16)).decode()
        conn.send_request("GET", PATH + "?EIO=4&transport=websocket", {
            "Upgrade": "websocket", "Connection": "Upgrade",
            "Sec-WebSocket-Key": key, "Sec-WebSocket-Version": "13"})
        status, _, _ = conn.read_head()
        if status != 101:
            raise Mismatch(f"WebSocket handshake answered {status}")
        self.ws = WebSocket(conn)
        frame = self.ws.recv_frame(TIMEOUT)
        if not frame or frame[0] != 0x1 or not frame[1].startswith("0"):
            raise Mismatch(f"no open packet: {frame!r}")
        self.open = json.loads(frame[1][1:])

    def _http(self, method, body=b"", timeout=TIMEOUT):
        conn = Connection(self.host, self.port)
        try:
            query = "?EIO=4&transport=polling" + (f"&sid={self.open['sid']}" if method != "HANDSHAKE" else "")
            headers = {"Content-Type": "text/plain;charset=UTF-8"} if method == "POST" else {}
            conn.send_request("GET" if method == "HANDSHAKE" else method, PATH + query, headers, body)
            return conn.read_response(timeout=timeout)
        finally:
            conn.close()

    def _open_polling(self):
        self.open = None
        res = self._http("HANDSHAKE")
        if res.status != 200 or not res.body.startswith(b"0"):
            raise Mismatch(f"polling handshake answered {res.status} {res.body[:80]!r}")
        self.open = json.loads(res.body[1:])
        self.ws = None

    def _post(self, body):
        with self.send_lock:
            res = self._http("POST", body)
        if (res.status, res.body) != (200, b"ok"):
            self._close({"post_status": res.status, "post_body": res.text()[:200]})
        return res

    def _close(self, how):
        if self.closed is None:
            self.closed = how
            self.items.put((CLOSED, how))

    def _read_loop(self):
        try:
            if self.ws:
                self._read_websocket()
            else:
                self._read_polling()
        except (OSError, EOFError, Mismatch, ValueError) as err:
            self._close({"reader_error": f"{type(err).__name__}: {err}"})

    def _read_websocket(self):
        while self.closed is None:
            frame = self.ws.recv_frame(60)
            if frame is None:
                self._close({"websocket": "EOF without a close frame"})
            elif frame[0] == 0x8:
                code = int.from_bytes(frame[1][:2], "big") if len(frame[1]) >= 2 else None
                with self.send_lock:
                    try:
                        self.ws.send(frame[1][:2], opcode=0x8)
                    except OSError:
                        pass
                self._close({"websocket": "close frame", "close_code": code})
            elif frame[0] == 0x2:
                self.items.put(("binary", frame[1]))
            elif frame[0] == 0x1:
                self._engine_packet(frame[1])

    def _read_polling(self):
        while self.closed is None:
            res = self._http("GET", timeout=self.open["pingInterval"] / 1000 + TIMEOUT)
            if res.status != 200:
                self._close({"get_status": res.status, "get_body": res.text()[:200]})
                break
            for packet in res.text().split("\x1e"):
                if packet.startswith("b"):
                    self.items.put(("binary", base64.b64decode(packet[1:])))
                else:
                    self._engine_packet(packet)

    def _engine_packet(self, packet):
        if packet == "2":
            self.send_engine(["3"])
        elif packet.startswith("4"):
            self.items.put(("text", packet[1:]))
        elif packet == "1":
            self._close({"engine": "close packet"})
        elif packet != "6":
            self.items.put(("engine", packet))

    def send_engine(self, packets):
        """Engine.IO packets: str as text, bytes as a binary message."""
        if self.ws:
            with self.send_lock:
                for p in packets:
                    self.ws.send(p, opcode=0x2 if isinstance(p, bytes) else 0x1)
        else:
            body = "\x1e".join("b" + base64.b64encode(p).decode() if isinstance(p, bytes) else p for p in packets)
            self._post(body.encode())

    # -- Socket.IO ---------------------------------------------------------
    def send(self, *packets):
        """Socket.IO packets (str, sent as Engine.IO messages) and attachments (bytes),
        in one POST over polling, one frame each over WebSocket."""
        self.send_engine([p if isinstance(p, bytes) else "4" + p for p in packets])

    def recv(self, timeout=ANSWER_WAIT):
        try:
            return self.items.get(timeout=timeout)
        except queue.Empty:
            return None

    def recv_n(self, n, timeout=ANSWER_WAIT):
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            item = self.recv(max(0.01, deadline - time.monotonic()))
            if item is None:
                break
            out.append(item)
            if item[0] == CLOSED:
                break
        return out

    def quiet(self, wait=QUIET):
        """Everything the server sends within `wait` (nothing, if all is well)."""
        out = []
        deadline = time.monotonic() + wait
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return out
            item = self.recv(left)
            if item is not None:
                out.append(item)

    def close(self):
        try:
            if self.closed is None and self.ws is None and self.open:
                self._http("POST", b"1")
        except OSError:
            pass
        self.closed = self.closed or {"client": "closed"}
        for conn in self.conns:
            conn.close()


def sid_of(c, label, item, prefix):
    """Checks a CONNECT answer `prefix{"sid":...}` and returns the sid."""
    c.expect_true(f"{label} is a CONNECT answer", item is not None and item[0] == "text"
                  and item[1].startswith(prefix + "{"), item)
    if not item or item[0] != "text" or not item[1].startswith(prefix + "{"):
        return None
    data = json.loads(item[1][len(prefix):])
    c.expect(f"{label} keys", sorted(data), ["sid"])
    c.expect_true(f"{label} sid is a non-empty string", isinstance(data.get("sid"), str) and data["sid"], data)
    return data.get("sid")


class Case:
    def __init__(self, name, server, transport):
        self.name = name
        self.server = server
        self.transport = transport
        self.observed = {}
        self.problems = []
        self.deviations = []
        self.sessions = []

    def session(self):
        s = Session(self.server.host, self.server.port, self.transport)
        self.sessions.append(s)
        return s

    def connected(self, nsp="/", auth=""):
        """A session connected to `nsp` (and its `auth` packet read)."""
        s = self.session()
        prefix = "0" if nsp == "/" else f"0{nsp},"
        s.send(prefix + auth)
        sid = sid_of(self, f"CONNECT {nsp} answer", s.recv(), prefix)
        auth_event = s.recv()
        self.expect(f"{nsp} auth event", auth_event,
                    ("text", ("2" if nsp == "/" else f"2{nsp},") + f'["auth",{auth or "{}"}]'))
        if sid is None:
            raise Mismatch(f"could not connect to {nsp}")
        return s

    def saw(self, key, value):
        self.observed[key] = value
        return value

    def expect(self, label, actual, wanted):
        if actual != wanted:
            self.problems.append(f"{label}: got {actual!r}, want {wanted!r}")

    def expect_true(self, label, condition, detail=None):
        if not condition:
            self.problems.append(label + (f" ({detail!r})" if detail is not None else ""))

    def answers(self, label, s, packets, wanted):
        """Sends `packets` and expects exactly `wanted` (a list of items) back."""
        s.send(*packets)
        got = s.recv_n(len(wanted)) if wanted else []
        if not got or got[-1][0] != CLOSED:
            got += s.quiet(0.1 if wanted else QUIET)
        self.saw(label, got)
        self.expect(label, got, wanted)

    def closes(self, label, s, packets, spec=True, node_keeps_open=False):
        """Sends `packets` and expects the session closed, with nothing sent first.
        node_keeps_open: the reference keeps the session (a known deviation)."""
        s.send(*packets)
        got = s.recv_n(1, ANSWER_WAIT)
        self.saw(label, got)
        if got and got[0][0] == CLOSED:
            if s.ws is None:
                self.session_gone(label, s)
            return
        if node_keeps_open and not got:
            self.deviations.append(f"{label}: the session stays open (the spec wants it closed)")
            return
        self.problems.append(f"{label}: want the session closed, got {got!r}")

    def session_gone(self, label, s):
        """Over polling, a closed session's sid is then unknown to the server."""
        res = s._http("GET")
        body = res.text()
        self.expect(f"{label}: GET with the sid after the close", (res.status, body),
                    (400, '{"code":1,"message":"Session ID unknown"}'))

    def still_open(self, label, s, nsp="/"):
        """The session answers a `message` on `nsp` (connected there)."""
        prefix = "" if nsp == "/" else f"{nsp},"
        self.answers(f"{label}: still open", s, [f'2{prefix}["message","alive"]'],
                     [("text", f'2{prefix}["message-back","alive"]')])

    def can_connect(self, label, s):
        """The session, connected to no namespace, still takes a CONNECT to "/"."""
        s.send("0")
        sid_of(self, f"{label}: CONNECT afterwards", s.recv(), "0")
        self.expect(f"{label}: auth afterwards", s.recv(), ("text", '2["auth",{}]'))

    def finish(self):
        for s in self.sessions:
            s.close()


CASES = []


def case(fn):
    CASES.append(fn)
    return fn


PH0 = '{"_placeholder":true,"num":0}'
PH1 = '{"_placeholder":true,"num":1}'


# ---- connect ------------------------------------------------------------

@case
def connect_main(c):
    """connect / should allow connection to the main namespace"""
    s = c.session()
    s.send("0")
    sid_of(c, "CONNECT answer", c.saw("answer", s.recv()), "0")
    c.expect("auth event", c.saw("auth", s.recv()), ("text", '2["auth",{}]'))
    c.expect("socket sid differs from the Engine.IO sid", c.observed["answer"][1] != f'0{{"sid":"{s.open["sid"]}"}}', True)


@case
def connect_main_auth(c):
    """connect / should allow connection to the main namespace with a payload"""
    s = c.session()
    s.send('0{"token":"123","nested":{"a":[1,null]}}')
    sid_of(c, "CONNECT answer", c.saw("answer", s.recv()), "0")
    c.expect("auth event", c.saw("auth", s.recv()), ("text", '2["auth",{"token":"123","nested":{"a":[1,null]}}]'))


@case
def connect_custom(c):
    """connect / should allow connection to a custom namespace (with and without the comma)"""
    for packet in ("0/custom,", "0/custom", '0/custom,{"token":"abc"}'):
        s = c.session()
        s.send(packet)
        sid_of(c, f"{packet} answer", c.saw(f"{packet} answer", s.recv()), "0/custom,")
        auth = '{"token":"abc"}' if "token" in packet else "{}"
        c.expect(f"{packet} auth event", c.saw(f"{packet} auth", s.recv()), ("text", f'2/custom,["auth",{auth}]'))


@case
def connect_multiplexed(c):
    """several namespaces on one session, each with its own sid"""
    s = c.connected("/")
    s.send("0/custom,")
    sid_of(c, "/custom answer", c.saw("/custom answer", s.recv()), "0/custom,")
    c.expect("/custom auth", s.recv(), ("text", '2/custom,["auth",{}]'))
    c.still_open("after /custom", s)


@case
def connect_unknown_namespace(c):
    """connect / should disallow connection to an unknown namespace"""
    s = c.session()
    c.answers("CONNECT /random", s, ["0/random"], [("text", '4/random,{"message":"Invalid namespace"}')])
    c.can_connect("after the refusal", s)
    c.answers("CONNECT /random,{}", s, ['0/random,{"token":"x"}'],
              [("text", '4/random,{"message":"Invalid namespace"}')])
    c.still_open("after a second refusal", s)


@case
def connect_bad_namespace(c):
    """a namespace without its leading slash does not parse: the session is closed"""
    c.closes("CONNECT custom,", c.session(), ["0custom,"])


@case
def connect_invalid_handshake(c):
    """connect / should disallow connection with an invalid handshake (4abc), and CONNECT payloads that are not objects"""
    for packet in ("abc", '0"token"', "0[]", "0{", "0null"):
        c.closes(f"send {packet!r}", c.session(), [packet])


@case
def connect_twice(c):
    """a second CONNECT to a namespace already connected: the session is closed"""
    c.closes("second CONNECT /", c.connected("/"), ["0"])


@case
def connect_must_come_first(c):
    """spec: if the server does not receive a CONNECT packet first, it MUST close the connection"""
    for packet in ('2["message","x"]', '21["message-with-ack"]', "3[]", "1", '4{"message":"x"}',
                   f'51-["message",{PH0}]'):
        attachments = [b"\x01"] if packet.startswith("5") else []
        c.closes(f"{packet} before CONNECT", c.session(), [packet, *attachments])


@case
def connect_error_from_client(c):
    """a CONNECT_ERROR sent by the client, once connected: the session is closed"""
    c.closes("CONNECT_ERROR /", c.connected("/"), ['4{"message":"x"}'])


@case
def empty_packet(c):
    """the empty message `4` (no Socket.IO packet at all): the session is closed"""
    c.closes("empty message before CONNECT", c.session(), [""])
    c.closes("empty message once connected", c.connected("/"), [""])


@case
def connect_with_ack_id(c):
    """a CONNECT carrying an ack id (`01`): the reference ignores the id and connects;
    closing the session is taken too (the spec gives CONNECT no id)"""
    s = c.session()
    s.send("01")
    item = c.saw("answer", s.recv())
    if item and item[0] == CLOSED:
        return
    sid_of(c, "CONNECT answer", item, "0")
    c.expect("auth event", s.recv(), ("text", '2["auth",{}]'))


@case
def namespace_not_connected(c):
    """an EVENT for a namespace the session has not connected: the session is closed"""
    c.closes("EVENT /custom", c.connected("/"), ['2/custom,["message","x"]'])


@case
def no_connect_timeout(c):
    """connect / should close the connection if no handshake is received (connectTimeout)"""
    s = c.session()
    started = time.monotonic()
    limit = c.server.connect_timeout / 1000
    got = s.recv_n(1, limit + ANSWER_WAIT)
    took = round((time.monotonic() - started) * 1000)
    c.saw("after", {"items": got, "ms": took})
    c.expect_true("closed", got and got[0][0] == CLOSED, got)
    c.expect_true("closed about connectTimeout after the open packet",
                  limit * 1000 - 100 <= took <= limit * 1000 + 1000, took)


# ---- events and acks ------------------------------------------------------

@case
def event_plain(c):
    """message / should send a plain-text packet"""
    s = c.connected("/")
    c.answers("EVENT", s, ['2["message",1,"2",{"3":[true]}]'], [("text", '2["message-back",1,"2",{"3":[true]}]')])
    c.answers("two EVENTs at once", s, ['2["message","a"]', '2["message","b"]'],
              [("text", '2["message-back","a"]'), ("text", '2["message-back","b"]')])
    c.answers("unicode", s, ['2["message","é€🙂"]'], [("text", '2["message-back","é€🙂"]')])
    c.answers("an event with no handler", s, ['2["nobody-listens",1]'], [])


@case
def event_custom_namespace(c):
    """an EVENT on /custom (no handler there) gets nothing; "/" still answers"""
    s = c.connected("/custom")
    c.answers("EVENT /custom", s, ['2/custom,["message","x"]'], [])
    c.expect("quiet", s.quiet(), [])


@case
def event_payload_invalid(c):
    """message / should close the connection upon invalid format (invalid payload format, bad JSON)"""
    for packet in ("2{}", '2"message"', '2["message"', "2[]", "2null", '2["message"]x'):
        c.closes(f"send {packet!r}", c.connected("/"), [packet])


@case
def event_without_payload(c):
    """spec: the EVENT payload is mandatory and MUST be a non-empty array, else the receiver MUST close"""
    s = c.connected("/")
    c.closes("send '2'", s, ["2"], node_keeps_open=True)
    if s.closed is None:
        c.still_open("after '2'", s)


@case
def event_name_not_string(c):
    """an event name that is neither a string nor a number, or a reserved name: the session is closed"""
    for packet in ("2[{}]", "2[null]", "2[true]", '2[["message"]]', '2["connect"]', '2["disconnect"]',
                   '2["connect_error"]', '2["disconnecting"]', '2["newListener"]', '2["removeListener"]'):
        c.closes(f"send {packet!r}", c.connected("/"), [packet])


@case
def event_name_number(c):
    """a number as the event name is accepted (no handler: no answer) and the session goes on"""
    s = c.connected("/")
    c.answers("send 2[1]", s, ["2[1]"], [])
    c.answers("send 27[1.5,\"x\"]", s, ['27[1.5,"x"]'], [])
    c.still_open("after numeric event names", s)


@case
def ack_plain(c):
    """message / should send a plain-text packet with an ack"""
    s = c.connected("/")
    c.answers("EVENT with id 456", s, ['2456["message-with-ack",1,"2",{"3":[false]}]'], [("text", '3456[1,"2",{"3":[false]}]')])
    c.answers("EVENT with id 0, no args", s, ['20["message-with-ack"]'], [("text", "30[]")])
    c.answers("id 2^32", s, ['24294967296["message-with-ack","big"]'], [("text", '34294967296["big"]')])


@case
def ack_id_invalid(c):
    """message / should close the connection upon invalid format (invalid ack id)"""
    for packet in ('2abc["message-with-ack",1,"2",{"3":[false]}]', '2-1["message-with-ack"]', '21.5["message-with-ack"]'):
        c.closes(f"send {packet!r}", c.connected("/"), [packet])


@case
def ack_from_client(c):
    """server -> client ack: `message` with an id makes the reference emit `message-back` asking
    for an ack; the client's ACK (plain or binary) is handed back as the ACK of the first id"""
    s = c.connected("/")
    s.send('25["message","ask"]')
    item = c.saw("message-back", s.recv())
    ok = item and item[0] == "text" and item[1].startswith("2") and item[1].endswith('["message-back","ask"]')
    c.expect_true("message-back with an ack id", ok, item)
    if not ok:
        return
    server_id = item[1][1:-len('["message-back","ask"]')]
    c.expect_true("the server's ack id is a number", server_id.isdigit(), server_id)
    c.answers("client ACK", s, [f'3{server_id}["answer",2]'], [("text", '35["answer",2]')])
    s.send('26["message","ask"]')
    item = s.recv()
    server_id = item[1][1:-len('["message-back","ask"]')] if item and item[0] == "text" else "?"
    c.answers("client BINARY_ACK", s, [f"61-{server_id}[{PH0}]", b"\x01\x02"],
              [("text", f"61-6[{PH0}]"), ("binary", b"\x01\x02")])


@case
def ack_unknown_id(c):
    """an ACK for an id the server never sent is ignored; the session goes on"""
    s = c.connected("/")
    c.answers("ACK 999", s, ['3999["x"]'], [])
    c.answers("ACK without payload", s, ["3999"], [])
    c.still_open("after stray ACKs", s)


@case
def ack_payload_invalid(c):
    """an ACK whose payload is not an array: the session is closed"""
    for packet in ("31{}", '31"x"', "31[", "31null"):
        c.closes(f"send {packet!r}", c.connected("/"), [packet])


# ---- binary ---------------------------------------------------------------

@case
def binary_event(c):
    """message / should send a packet with binary attachments"""
    s = c.connected("/")
    c.answers("BINARY_EVENT, 2 attachments", s,
              [f'52-["message",{PH0},{PH1}]', b"\x01\x02\x03", b"\x04\x05\x06"],
              [("text", f'52-["message-back",{PH0},{PH1}]'), ("binary", b"\x01\x02\x03"), ("binary", b"\x04\x05\x06")])
    c.answers("nested placeholders, empty attachment", s,
              [f'52-["message",{{"a":{{"b":[{PH1}]}}}},"x",{PH0}]', b"", b"\xff"],
              [("text", f'52-["message-back",{{"a":{{"b":[{PH0}]}}}},"x",{PH1}]'), ("binary", b"\xff"), ("binary", b"")])


@case
def binary_ack(c):
    """message / should send a packet with binary attachments and an ack (answered BINARY_ACK)"""
    s = c.connected("/")
    c.answers("BINARY_EVENT with id 789", s,
              [f'52-789["message-with-ack",{PH0},{PH1}]', b"\x01\x02\x03", b"\x04\x05\x06"],
              [("text", f"62-789[{PH0},{PH1}]"), ("binary", b"\x01\x02\x03"), ("binary", b"\x04\x05\x06")])


@case
def binary_fewer_placeholders(c):
    """more attachments announced than placeholders used: the unused ones are dropped"""
    s = c.connected("/")
    c.answers("2 attachments, 1 placeholder", s, [f'52-["message",{PH0}]', b"\x01", b"\x02"],
              [("text", f'51-["message-back",{PH0}]'), ("binary", b"\x01")])


@case
def binary_placeholder_in_plain_event(c):
    """a placeholder object inside a plain EVENT is just an object"""
    s = c.connected("/")
    c.answers("EVENT with a placeholder", s, [f'2["message",{PH0}]'], [("text", f'2["message-back",{PH0}]')])


@case
def binary_attachment_count_invalid(c):
    """the attachment count: 0, not a number, missing '-', or over the reference's 10: the session is closed"""
    for packet in ('50-["message"]', '5a-["message"]', f'51["message",{PH0}]', '511-["message"]', '5-["message"]'):
        c.closes(f"send {packet!r}", c.connected("/"), [packet])


@case
def binary_ten_attachments(c):
    """10 attachments (the reference's maxAttachments) are taken"""
    s = c.connected("/")
    phs = ",".join(f'{{"_placeholder":true,"num":{i}}}' for i in range(10))
    blobs = [bytes([i]) for i in range(10)]
    c.answers("10 attachments", s, [f'510-["message",{phs}]', *blobs],
              [("text", f'510-["message-back",{phs}]'), *[("binary", b) for b in blobs]])


@case
def binary_placeholder_out_of_range(c):
    """a placeholder naming an attachment that does not exist: the session is closed"""
    c.closes("num 1 of 1", c.connected("/"), [f'51-["message",{PH1}]', b"\x01"])
    c.closes("num -1", c.connected("/"), ['51-["message",{"_placeholder":true,"num":-1}]', b"\x01"])
    c.closes("num \"0\"", c.connected("/"), ['51-["message",{"_placeholder":true,"num":"0"}]', b"\x01"])


@case
def binary_attachment_without_packet(c):
    """an attachment with no BINARY_EVENT or BINARY_ACK announcing it: the session is closed"""
    c.closes("attachment alone", c.connected("/"), [b"\x01\x02"])
    c.closes("attachment before CONNECT", c.session(), [b"\x01\x02"])
    c.closes("one attachment too many", c.connected("/"), [f'51-["message",{PH0}]', b"\x01", b"\x02"])


@case
def binary_text_while_reconstructing(c):
    """a text packet while attachments are awaited: the session is closed"""
    c.closes("EVENT between", c.connected("/"), [f'52-["message",{PH0},{PH1}]', b"\x01", '2["message","x"]'])


@case
def binary_half_received(c):
    """a BINARY_EVENT whose attachments never all come: the reference waits without a bound
    (pings go on), then completes it when the last attachment arrives"""
    s = c.connected("/")
    s.send(f'52-["message",{PH0},{PH1}]', b"\x01")
    wait = 3 * s.open["pingInterval"] / 1000
    got = c.saw(f"within {wait}s", s.quiet(wait))
    c.expect("nothing, session open", (got, s.closed), ([], None))
    c.answers("the last attachment", s, [b"\x02"],
              [("text", f'52-["message-back",{PH0},{PH1}]'), ("binary", b"\x01"), ("binary", b"\x02")])


# ---- disconnect -------------------------------------------------------------

@case
def disconnect_main(c):
    """disconnect / from the main namespace: no answer; the Engine.IO session stays open
    (the spec: MAY be kept alive), takes no more packets for "/" but a new CONNECT"""
    s = c.connected("/")
    c.answers("DISCONNECT /", s, ["1"], [])
    c.can_connect("after DISCONNECT", s)
    c.still_open("after reconnecting", s)
    c.answers("DISCONNECT / again", s, ["1"], [])
    c.closes("EVENT after DISCONNECT", s, ['2["message","x"]'])


@case
def disconnect_custom(c):
    """disconnect / should connect then disconnect from a custom namespace"""
    s = c.connected("/")
    s.send("0/custom")
    sid_of(c, "/custom answer", s.recv(), "0/custom,")
    c.expect("/custom auth", s.recv(), ("text", '2/custom,["auth",{}]'))
    s.send("1/custom")
    c.answers("message to main namespace", s, ['2["message","message to main namespace"]'],
              [("text", '2["message-back","message to main namespace"]')])


@case
def disconnect_invalid(c):
    """a DISCONNECT with a payload, or for a namespace not connected: the session is closed"""
    c.closes("1{}", c.connected("/"), ["1{}"])
    c.closes('1["x"]', c.connected("/"), ['1["x"]'])
    c.closes("1/custom,", c.connected("/"), ["1/custom,"])


# ---- packet types -----------------------------------------------------------

@case
def packet_type_unknown(c):
    """message / should close the connection upon invalid format (unknown packet type)"""
    for packet in ("abc", "7", '8["message"]', "9", " 2[\"message\"]", '-2["message"]'):
        c.closes(f"send {packet!r}", c.connected("/"), [packet])


def main(argv):
    args = argv[1:]
    show = "--show" in args
    strict = "--strict" in args
    only = None
    transports = ["websocket", "polling"]
    connect_timeout = None
    rest = []
    i = 0
    usage = ("usage: raw_packets.py URL [--show] [--strict] [--transport websocket|polling|both]"
             " [--connect-timeout MS] [--only CASE,...]")
    try:
        while i < len(args):
            if args[i] == "--only":
                only = set(args[i + 1].split(","))
                i += 1
            elif args[i] == "--transport":
                transports = {"both": ["websocket", "polling"]}.get(args[i + 1], [args[i + 1]])
                if not set(transports) <= {"websocket", "polling"}:
                    raise ValueError(args[i + 1])
                i += 1
            elif args[i] == "--connect-timeout":
                connect_timeout = int(args[i + 1])
                i += 1
            elif args[i] not in ("--show", "--strict"):
                rest.append(args[i])
            i += 1
    except (IndexError, ValueError):
        rest = []
    names = [fn.__name__ for fn in CASES]
    if len(rest) != 1 or (only and not only <= set(names)):
        print(usage + "\ncases: " + " ".join(names), file=sys.stderr)
        return 2
    parsed = urllib.parse.urlsplit(rest[0])
    if parsed.scheme != "http" or not parsed.hostname or not parsed.port:
        print("URL must look like http://HOST:PORT", file=sys.stderr)
        return 2

    class Server:
        host, port = parsed.hostname, parsed.port

    Server.connect_timeout = connect_timeout
    failed = deviations = ran = 0
    for fn in CASES:
        if (only and fn.__name__ not in only) or (fn is no_connect_timeout and connect_timeout is None):
            continue
        for transport in transports:
            ran += 1
            c = Case(fn.__name__, Server, transport)
            try:
                fn(c)
            except (Mismatch, OSError, EOFError, ValueError) as err:
                c.problems.append(f"{type(err).__name__}: {err}")
            finally:
                c.finish()
            if strict:
                c.problems += c.deviations
                c.deviations = []
            if show:
                print(json.dumps({"case": c.name, "transport": transport, "ok": not c.problems,
                                  "observed": c.observed, "deviations": c.deviations, "problems": c.problems},
                                 default=lambda b: {"$binary": b.hex()} if isinstance(b, bytes) else repr(b)))
            if c.problems:
                failed += 1
                print(f"MISMATCH {c.name} ({transport}): {fn.__doc__.splitlines()[0]}", file=sys.stderr)
                for problem in c.problems:
                    print(f"    {problem}", file=sys.stderr)
            for note in c.deviations:
                deviations += 1
                print(f"known Node deviation {c.name} ({transport}): {note}", file=sys.stderr)
    print(f"{deviations} answers are known Node deviations from the spec (see REFERENCE.md)")
    print(f"raw_packets: {ran - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
