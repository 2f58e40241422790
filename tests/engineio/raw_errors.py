#!/usr/bin/env python3
"""Checks an Engine.IO v4 echo server's raw answers to bad and edge-case requests.

    python3 raw_errors.py URL [--show] [--only CASE,...]

URL is the server's base (http://127.0.0.1:PORT); requests go to /engine.io/.
Every case of tests/engineio/REFERENCE.md is run on fresh connections, over
loopback, each socket operation bounded by a timeout. The exit status is 1 if
any answer differs from the expected one (each difference is listed), 2 on bad
arguments. --show prints what was observed for each case as one JSON line.

Where the Engine.IO spec says "MUST 400" and the reference Node server answers
otherwise, the check asserts the spec's answer: those cases are listed in
KNOWN_NODE_DEVIATIONS and reported as such rather than as failures when the
server's answer is exactly the Node one (pass --strict to fail on them too).

Standard library only: the cases need byte-level control (half-sent bodies,
two requests in flight on one session, the connection's fate after an answer).
"""

import base64
import http.client
import io
import json
import os
import socket
import struct
import sys
import threading
import time
import urllib.parse

PATH = "/engine.io/"
TIMEOUT = 5.0
# How long an answered connection is watched for the server closing it.
CLOSE_WATCH = 0.3


class Mismatch(Exception):
    pass


class Response:
    def __init__(self, status, reason, headers, body, closed):
        self.status = status
        self.reason = reason
        self.headers = headers  # http.client.HTTPMessage: case-insensitive get()
        self.body = body
        self.closed = closed  # the server closed the connection after answering

    def header(self, name):
        return self.headers.get(name)

    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.body)

    def summary(self):
        keep = ("content-type", "content-length", "connection", "transfer-encoding",
                "access-control-allow-origin", "access-control-allow-credentials",
                "access-control-allow-methods", "access-control-allow-headers",
                "vary", "set-cookie", "cache-control", "upgrade", "sec-websocket-extensions")
        headers = {k.lower(): v for k, v in self.headers.items() if k.lower() in keep}
        return {"status": f"{self.status} {self.reason}", "headers": headers,
                "body": self.text()[:200], "closed": self.closed}


class Connection:
    """One TCP connection speaking HTTP/1.1 (keep-alive unless asked otherwise)."""

    def __init__(self, host, port):
        self.host = host
        self.port = port
        self.sock = socket.create_connection((host, port), timeout=TIMEOUT)
        self.buf = b""

    def send_request(self, method, target, headers=None, body=b"", send_body=True):
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        headers = dict(headers or {})
        if body or method in ("POST", "PUT"):
            headers.setdefault("Content-Length", str(len(body)))
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if send_body and body:
            try:
                self.sock.sendall(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server may answer and close before reading it all

    def _fill(self, timeout):
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            raise EOFError
        self.buf += chunk

    def _read_until(self, marker, timeout):
        deadline = time.monotonic() + timeout
        while marker not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout(f"no {marker!r} within {timeout}s")
            self._fill(left)
        head, self.buf = self.buf.split(marker, 1)
        return head

    def _read_exact(self, n, timeout):
        deadline = time.monotonic() + timeout
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout(f"body short of {n} bytes within {timeout}s")
            self._fill(left)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_head(self, timeout=TIMEOUT):
        head = self._read_until(b"\r\n\r\n", timeout)
        status_line, _, rest = head.partition(b"\r\n")
        version, status, reason = (status_line.decode("latin-1").split(" ", 2) + [""])[:3]
        if not version.startswith("HTTP/"):
            raise Mismatch(f"not an HTTP status line: {status_line!r}")
        headers = http.client.parse_headers(io.BytesIO(rest + b"\r\n\r\n"))
        return int(status), reason, headers

    def read_response(self, method="GET", timeout=TIMEOUT, watch_close=False):
        """Reads one whole response; `closed` says whether the server then closed."""
        deadline = time.monotonic() + timeout
        status, reason, headers = self.read_head(timeout)

        def left():
            return max(0.05, deadline - time.monotonic())

        body = b""
        if method != "HEAD" and status not in (101, 204, 304):
            if headers.get("Transfer-Encoding", "").lower() == "chunked":
                while True:
                    size = int(self._read_until(b"\r\n", left()).split(b";")[0], 16)
                    body += self._read_exact(size, left())
                    self._read_until(b"\r\n", left())
                    if size == 0:
                        break
            elif headers.get("Content-Length") is not None:
                body = self._read_exact(int(headers["Content-Length"]), left())
            else:
                try:
                    while True:
                        self._fill(left())
                except EOFError:
                    pass
                body, self.buf = self.buf, b""
        closed = self.is_closed() if watch_close else None
        return Response(status, reason, headers, body, closed)

    def is_closed(self, wait=CLOSE_WATCH):
        if self.buf:
            return False
        self.sock.settimeout(wait)
        try:
            return self.sock.recv(1, socket.MSG_PEEK) == b""
        except socket.timeout:
            return False
        except OSError:
            return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class WebSocket:
    """The few RFC 6455 frames the cases need (client side, masked)."""

    def __init__(self, conn):
        self.conn = conn
        self.pings = 0

    def send(self, payload, opcode=0x1):
        if isinstance(payload, str):
            payload = payload.encode()
        mask = os.urandom(4)
        head = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        key = (mask * (n // 4 + 1))[:n]
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
        self.conn.sock.sendall(head + mask + masked)

    def recv(self, timeout=TIMEOUT):
        """The next frame other than an Engine.IO ping (answered with a pong, since a
        raw session would otherwise time out mid-case): (opcode, payload), payload str
        for text and bytes otherwise; None at EOF."""
        while True:
            frame = self.recv_frame(timeout)
            if frame != (0x1, "2"):
                return frame
            self.pings += 1
            self.send("3")

    def recv_frame(self, timeout=TIMEOUT):
        try:
            b0, b1 = self.conn._read_exact(2, timeout)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self.conn._read_exact(2, timeout))[0]
            elif n == 127:
                n = struct.unpack(">Q", self.conn._read_exact(8, timeout))[0]
            payload = self.conn._read_exact(n, timeout)
        except EOFError:
            return None
        opcode = b0 & 0x0F
        return (opcode, payload.decode() if opcode == 0x1 else payload)

    def recv_until_close(self, timeout=TIMEOUT):
        """Frames up to the close frame (answered, as a client does) or EOF:
        (frames, close code or None, whether the server then closed the TCP connection)."""
        frames = []
        deadline = time.monotonic() + timeout
        while True:
            frame = self.recv_frame(max(0.05, deadline - time.monotonic()))
            if frame is None:
                return frames, None, True
            if frame[0] == 0x8:
                code = struct.unpack(">H", frame[1][:2])[0] if len(frame[1]) >= 2 else None
                try:
                    self.send(frame[1][:2], opcode=0x8)  # complete the closing handshake
                except OSError:
                    pass
                return frames, code, self.conn.is_closed(1.0)
            frames.append(frame)


class Server:
    def __init__(self, url):
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme != "http" or not parsed.hostname or not parsed.port:
            raise ValueError("URL must look like http://HOST:PORT")
        self.host = parsed.hostname
        self.port = parsed.port

    def connect(self):
        return Connection(self.host, self.port)

    def request(self, method, query, headers=None, body=b"", path=PATH, timeout=TIMEOUT, watch_close=False):
        """One request on a fresh connection. watch_close waits CLOSE_WATCH after the
        answer to see whether the server closes the connection: only for cases whose
        session is not needed afterwards, since a raw session never answers pings."""
        conn = self.connect()
        try:
            conn.send_request(method, path + query, headers, body)
            return conn.read_response(method, timeout, watch_close)
        finally:
            conn.close()

    def handshake(self):
        res = self.request("GET", "?EIO=4&transport=polling")
        if res.status != 200 or not res.body.startswith(b"0"):
            raise Mismatch(f"polling handshake failed: {res.summary()}")
        return json.loads(res.body[1:])

    def poll(self, sid, timeout=TIMEOUT):
        return self.request("GET", f"?EIO=4&transport=polling&sid={sid}", timeout=timeout)

    def post(self, sid, body, headers=None):
        headers = {"Content-Type": "text/plain;charset=UTF-8", **(headers or {})}
        return self.request("POST", f"?EIO=4&transport=polling&sid={sid}", headers, body)

    def websocket(self, query, extra=None):
        """Sends an upgrade request; returns (connection, head) with head=(status, reason, headers)."""
        conn = self.connect()
        key = base64.b64encode(os.urandom(16)).decode()
        headers = {"Upgrade": "websocket", "Connection": "Upgrade",
                   "Sec-WebSocket-Key": key, "Sec-WebSocket-Version": "13", **(extra or {})}
        conn.send_request("GET", PATH + query, headers)
        return conn

    def upgraded_session(self):
        """A polling session upgraded to WebSocket by hand: (sid, ws)."""
        sid = self.handshake()["sid"]
        conn = self.websocket(f"?EIO=4&transport=websocket&sid={sid}")
        status, _, _ = conn.read_head()
        if status != 101:
            raise Mismatch(f"upgrade for {sid} answered {status}")
        ws = WebSocket(conn)
        ws.send("2probe")
        frame = ws.recv()
        if frame != (0x1, "3probe"):
            raise Mismatch(f"probe answered {frame!r}")
        ws.send("5")
        return sid, ws


def in_background(fn, *args):
    """Runs fn(*args) on a thread; the returned getter joins it (bounded) and returns or raises."""
    out = {}

    def run():
        try:
            out["value"] = fn(*args)
        except BaseException as err:  # noqa: BLE001 - handed to the caller
            out["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def get(timeout=TIMEOUT + 1):
        thread.join(timeout)
        if thread.is_alive():
            raise Mismatch("background request did not finish")
        if "error" in out:
            raise out["error"]
        return out["value"]

    return get


# ---------------------------------------------------------------------------
# Cases. Each gets a Case to record what it saw and what differed.

class Case:
    def __init__(self, name):
        self.name = name
        self.observed = {}
        self.problems = []
        self.deviations = []

    def saw(self, key, value):
        self.observed[key] = value.summary() if isinstance(value, Response) else value
        return value

    def expect(self, label, actual, wanted):
        if actual != wanted:
            self.problems.append(f"{label}: got {actual!r}, want {wanted!r}")

    def expect_true(self, label, condition, detail=None):
        if not condition:
            self.problems.append(f"{label}" + (f" ({detail!r})" if detail is not None else ""))

    def error_answer(self, label, res, code, message):
        """The JSON error answer: 400 (403 for Forbidden) with {"code","message"}."""
        self.expect(f"{label} status", res.status, 403 if code == 4 else 400)
        self.expect(f"{label} Content-Type", res.header("Content-Type"), "application/json")
        self.expect(f"{label} body", res.text(), json.dumps({"code": code, "message": message}, separators=(",", ":")))

    def session_gone(self, server, sid, label="after"):
        res = self.saw(f"{label}: GET with the sid", server.poll(sid))
        self.error_answer(f"{label}: GET with the sid", res, 1, "Session ID unknown")

    def deviation(self, label, actual, spec, node):
        """The spec's answer is wanted; Node's known other answer is noted, not failed."""
        if actual == spec:
            return
        if actual == node:
            self.deviations.append(f"{label}: {actual!r} (the spec wants {spec!r})")
        else:
            self.problems.append(f"{label}: got {actual!r}, want {spec!r}")


CASES = []


def case(fn):
    CASES.append(fn)
    return fn


OPEN_KEYS = {"sid", "upgrades", "pingInterval", "pingTimeout", "maxPayload"}


def check_open_payload(c, label, payload, upgrades):
    c.expect_true(f"{label} is an open packet", payload.startswith("0"), payload[:40])
    try:
        data = json.loads(payload[1:])
    except ValueError:
        c.problems.append(f"{label}: open payload is not JSON: {payload[:80]!r}")
        return None
    c.expect(f"{label} keys", set(data), OPEN_KEYS)
    c.expect(f"{label} upgrades", data.get("upgrades"), upgrades)
    c.expect_true(f"{label} sid is a non-empty string", isinstance(data.get("sid"), str) and data["sid"], data.get("sid"))
    for key in ("pingInterval", "pingTimeout", "maxPayload"):
        c.expect_true(f"{label} {key} is a positive integer",
                      isinstance(data.get(key), int) and data[key] > 0, data.get(key))
    return data


@case
def handshake_polling(c, server):
    """handshake / HTTP long-polling / successfully opens a session"""
    conn = server.connect()
    try:
        conn.send_request("GET", PATH + "?EIO=4&transport=polling")
        res = c.saw("GET ?EIO=4&transport=polling", conn.read_response(watch_close=True))
    finally:
        conn.close()
    c.expect("status", res.status, 200)
    c.expect("Content-Type", res.header("Content-Type"), "text/plain; charset=UTF-8")
    c.expect("Content-Length", res.header("Content-Length"), str(len(res.body)))
    c.expect("Cache-Control", res.header("Cache-Control"), "no-store")
    c.expect("Set-Cookie", res.header("Set-Cookie"), None)
    c.expect("connection kept open (HTTP/1.1 keep-alive)", res.closed, False)
    check_open_payload(c, "body", res.text(), ["websocket"])


@case
def handshake_websocket(c, server):
    """handshake / WebSocket / successfully opens a session"""
    conn = server.websocket("?EIO=4&transport=websocket",
                            {"Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits"})
    try:
        status, reason, headers = conn.read_head()
        c.saw("101 head", {"status": f"{status} {reason}", "headers": dict(headers.items())})
        c.expect("status", status, 101)
        c.expect("Upgrade", (headers.get("Upgrade") or "").lower(), "websocket")
        c.expect("permessage-deflate declined", headers.get("Sec-WebSocket-Extensions"), None)
        ws = WebSocket(conn)
        frame = ws.recv()
        c.saw("first frame", frame)
        c.expect_true("first frame is text", frame is not None and frame[0] == 0x1, frame)
        if frame and frame[0] == 0x1:
            data = check_open_payload(c, "first frame", frame[1], [])
            ws.send("4hello")
            c.expect("text echo", ws.recv(), (0x1, "4hello"))
            ws.send(b"\x01\x02\x03\x04", opcode=0x2)
            c.expect("binary echo (no type byte on WebSocket)", ws.recv(), (0x2, b"\x01\x02\x03\x04"))
            if data:
                started = time.monotonic()
                ping = ws.recv_frame(data["pingInterval"] / 1000 + 2)
                c.saw("ping after ms", round((time.monotonic() - started) * 1000))
                c.expect("server pings", ping, (0x1, "2"))
    finally:
        conn.close()


def bad_query(c, server, query, code, message, method="GET"):
    res = c.saw(f"{method} {query}", server.request(method, query, watch_close=True))
    c.error_answer(f"{method} {query}", res, code, message)
    return res


@case
def eio_missing(c, server):
    """handshake / HTTP long-polling / fails with an invalid 'EIO' query parameter (missing)"""
    bad_query(c, server, "?transport=polling", 5, "Unsupported protocol version")


@case
def eio_invalid(c, server):
    """handshake / HTTP long-polling / fails with an invalid 'EIO' query parameter (abc, 3, 5)"""
    for eio in ("abc", "3", "5"):
        bad_query(c, server, f"?EIO={eio}&transport=polling", 5, "Unsupported protocol version")


@case
def transport_missing(c, server):
    """handshake / HTTP long-polling / fails with an invalid 'transport' query parameter (missing)"""
    bad_query(c, server, "?EIO=4", 0, "Transport unknown")


@case
def transport_unknown(c, server):
    """handshake / HTTP long-polling / fails with an invalid 'transport' query parameter (abc)"""
    bad_query(c, server, "?EIO=4&transport=abc", 0, "Transport unknown")


@case
def sid_unknown_get(c, server):
    """spec: the server MUST return an HTTP 400 response if the session ID is not known (GET)"""
    bad_query(c, server, "?EIO=4&transport=polling&sid=nosuchsession", 1, "Session ID unknown")


@case
def sid_unknown_post(c, server):
    """spec: the server MUST return an HTTP 400 response if the session ID is not known (POST)"""
    res = c.saw("POST unknown sid", server.post("nosuchsession", b"4hello"))
    c.error_answer("POST unknown sid", res, 1, "Session ID unknown")


@case
def post_without_sid(c, server):
    """handshake / HTTP long-polling / fails with an invalid request method (POST)"""
    bad_query(c, server, "?EIO=4&transport=polling", 2, "Bad handshake method", method="POST")


@case
def put_without_sid(c, server):
    """handshake / HTTP long-polling / fails with an invalid request method (PUT)"""
    bad_query(c, server, "?EIO=4&transport=polling", 2, "Bad handshake method", method="PUT")


@case
def put_with_sid(c, server):
    """PUT on an open session: a bad request; the session stays usable"""
    sid = server.handshake()["sid"]
    res = c.saw("PUT with the sid", server.request("PUT", f"?EIO=4&transport=polling&sid={sid}", body=b"4x"))
    c.deviation("PUT with the sid status", res.status, 400, 500)
    res = c.saw("POST after", server.post(sid, b"4still"))
    c.expect("POST after", (res.status, res.text()), (200, "ok"))
    res = c.saw("GET after", server.poll(sid))
    c.expect("GET after", (res.status, res.text()), (200, "4still"))


@case
def get_concurrent(c, server):
    """message / HTTP long-polling / closes the session upon duplicate poll requests"""
    sid = server.handshake()["sid"]
    first = in_background(server.poll, sid)
    time.sleep(0.05)
    second = c.saw("second GET", server.request("GET", f"?EIO=4&transport=polling&sid={sid}&t=burst"))
    c.deviation("second GET status", second.status, 400, 500)
    first = c.saw("first GET", first())
    c.expect("first GET", (first.status, first.text()), (200, "1"))
    c.session_gone(server, sid)


@case
def post_concurrent(c, server):
    """spec: a second active POST: the server MUST return an HTTP 400 error status and close the session"""
    sid = server.handshake()["sid"]
    held = server.connect()
    try:
        body = b"4held-post"
        held.send_request("POST", PATH + f"?EIO=4&transport=polling&sid={sid}",
                          {"Content-Type": "text/plain;charset=UTF-8", "Content-Length": str(len(body))},
                          body[:4], send_body=True)
        time.sleep(0.05)
        second = c.saw("second POST", server.post(sid, b"4second"))
        c.expect("second POST status", second.status, 400)
        try:
            held.sock.sendall(body[4:])
            first = c.saw("first POST (completed after)", held.read_response("POST", timeout=2))
            c.saw("first POST answer", first.status)
        except (socket.timeout, EOFError, OSError) as err:
            c.saw("first POST (completed after)", f"no answer: {type(err).__name__}")
    finally:
        held.close()
    c.session_gone(server, sid)


@case
def post_invalid_payload(c, server):
    """message / HTTP long-polling / closes the session upon invalid packet format"""
    sid = server.handshake()["sid"]
    try:
        res = c.saw("POST abc", server.post(sid, b"abc"))
        c.deviation("POST abc status", res.status, 400, 200)
    except (EOFError, socket.timeout, OSError) as err:
        c.saw("POST abc", f"no answer: {type(err).__name__}")
    c.session_gone(server, sid)


@case
def post_binary_content_type(c, server):
    """v4 polling carries binary as base64 text: an application/octet-stream body is refused"""
    sid = server.handshake()["sid"]
    res = c.saw("POST octet-stream", server.post(sid, b"\x04\x01\x02", {"Content-Type": "application/octet-stream"}))
    c.expect("status", res.status, 400)
    c.session_gone(server, sid)


@case
def post_over_max_payload(c, server):
    """a POST body one byte over maxPayload: 413 and the session is closed"""
    opened = server.handshake()
    sid, limit = opened["sid"], opened["maxPayload"]
    body = b"4" + b"x" * limit
    res = c.saw("POST maxPayload+1 bytes", server.request(
        "POST", f"?EIO=4&transport=polling&sid={sid}", {"Content-Type": "text/plain;charset=UTF-8"}, body,
        watch_close=True))
    c.expect("status", res.status, 413)
    c.expect("body", res.body, b"")
    c.expect("connection closed", res.closed, True)
    c.session_gone(server, sid)


@case
def post_at_max_payload(c, server):
    """a POST body of exactly maxPayload bytes is accepted"""
    opened = server.handshake()
    sid, limit = opened["sid"], opened["maxPayload"]
    res = c.saw("POST maxPayload bytes", server.post(sid, b"4" + b"y" * (limit - 1)))
    c.expect("POST", (res.status, res.text()), (200, "ok"))
    res = server.poll(sid)
    c.saw("GET", {"status": res.status, "body_bytes": len(res.body)})
    c.expect("echo", (res.status, len(res.body)), (200, limit))


@case
def websocket_over_max_payload(c, server):
    """a WebSocket frame one byte over maxPayload: close 1009 and the session is closed"""
    conn = server.websocket("?EIO=4&transport=websocket")
    try:
        status, _, _ = conn.read_head()
        c.expect("upgrade status", status, 101)
        ws = WebSocket(conn)
        opened = json.loads(ws.recv()[1][1:])
        limit = opened["maxPayload"]
        ws.send("4" + "z" * (limit - 1))
        echo = ws.recv()
        c.saw("frame of maxPayload bytes", {"opcode": echo[0], "bytes": len(echo[1])} if echo else None)
        c.expect("frame of maxPayload bytes echoed", (echo[0], len(echo[1])) if echo else None, (0x1, limit))
        ws.send("4" + "z" * limit)
        frames, code, eof = ws.recv_until_close(2)
        c.saw("frame of maxPayload+1 bytes", {"frames": frames, "close_code": code, "tcp_closed_by_server": eof})
        c.expect("close code", code, 1009)
        c.expect("TCP closed", eof, True)
    finally:
        conn.close()
    c.session_gone(server, opened["sid"])


@case
def post_ok(c, server):
    """message / HTTP long-polling / sends and receives a payload containing plain text and binary packets"""
    sid = server.handshake()["sid"]
    res = c.saw("POST", server.post(sid, b"4hello\x1ebAQIDBA==\x1e4\xe2\x82\xac"))
    c.expect("status", res.status, 200)
    c.expect("Content-Type", res.header("Content-Type"), "text/html")
    c.expect("body", res.body, b"ok")
    res = c.saw("GET", server.poll(sid))
    c.expect("GET", (res.status, res.body), (200, b"4hello\x1ebAQIDBA==\x1e4\xe2\x82\xac"))
    c.expect("GET Content-Type", res.header("Content-Type"), "text/plain; charset=UTF-8")


@case
def close_while_get_held(c, server):
    """close / HTTP long-polling / forcefully closes the session"""
    sid = server.handshake()["sid"]
    held = in_background(server.poll, sid)
    time.sleep(0.05)
    res = c.saw("POST 1", server.post(sid, b"1"))
    c.expect("POST 1", (res.status, res.text()), (200, "ok"))
    res = c.saw("held GET", held())
    c.expect("held GET", (res.status, res.text()), (200, "6"))
    c.session_gone(server, sid)


@case
def polling_after_upgrade(c, server):
    """upgrade / ignores HTTP requests with same sid after upgrade"""
    sid, ws = server.upgraded_session()
    try:
        time.sleep(0.05)
        res = c.saw("GET after upgrade", server.poll(sid))
        c.error_answer("GET after upgrade", res, 3, "Bad request")
        res = c.saw("POST after upgrade", server.post(sid, b"4x"))
        c.error_answer("POST after upgrade", res, 3, "Bad request")
        ws.send("4hello")
        c.expect("websocket still echoes", ws.recv(), (0x1, "4hello"))
    finally:
        ws.conn.close()


@case
def upgrade_noop_to_held_get(c, server):
    """upgrade / successfully upgrades from HTTP long-polling to WebSocket (noop to the pending GET)"""
    sid = server.handshake()["sid"]
    held = in_background(server.poll, sid)
    time.sleep(0.05)
    conn = server.websocket(f"?EIO=4&transport=websocket&sid={sid}")
    try:
        status, _, _ = conn.read_head()
        c.expect("upgrade status", status, 101)
        ws = WebSocket(conn)
        ws.send("2probe")
        c.expect("probe answer", ws.recv(), (0x1, "3probe"))
        res = c.saw("pending GET", held())
        c.expect("pending GET", (res.status, res.text()), (200, "6"))
        ws.send("5")
        ws.send("4hello")
        c.expect("echo over websocket", ws.recv(), (0x1, "4hello"))
    finally:
        conn.close()


@case
def websocket_second_for_upgraded_sid(c, server):
    """upgrade / ignores WebSocket connection with same sid after upgrade"""
    sid, ws = server.upgraded_session()
    try:
        time.sleep(0.05)
        refused_upgrade(c, server, f"?EIO=4&transport=websocket&sid={sid}", "Bad request")
        ws.send("4hello")
        c.expect("first websocket still echoes", ws.recv(), (0x1, "4hello"))
    finally:
        ws.conn.close()


def upgrade_outcome(conn):
    """How an upgrade request ended, as (kind, detail). kind is one of
    "refused" (an HTTP answer, no 101), "closed" (101, then a close frame or EOF
    and nothing else), "http-after-101" (101, then the bytes of an HTTP answer
    written into the WebSocket stream and the TCP connection closed) or "open"
    (101 and Engine.IO packets: not refused at all)."""
    status, reason, headers = conn.read_head()
    if status != 101:
        conn.buf = f"HTTP/1.1 {status} {reason}\r\n".encode() + \
            b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items()) + b"\r\n" + conn.buf
        res = conn.read_response(watch_close=True)
        return "refused", res
    if not conn.buf:
        try:
            conn._fill(2)
        except (EOFError, socket.timeout):
            pass
    # A frame from a server without extensions never starts with "H" (0x48 sets RSV1).
    if conn.buf.startswith(b"H"):
        res = conn.read_response(watch_close=True)
        return "http-after-101", res
    frames, code, eof = WebSocket(conn).recv_until_close(2)
    if frames:
        return "open", {"frames": frames}
    return "closed", {"close_code": code, "tcp_closed_by_server": eof}


def refused_upgrade(c, server, query, message, node=None):
    """The spec: the server MUST close the WebSocket connection. Wanted here: the
    upgrade refused with 400 and `message` as body, connection closed; a 101
    followed by a close frame is accepted too. `node` names Node's deviating
    outcome kind, reported rather than failed."""
    conn = server.websocket(query)
    label = f"upgrade {query}"
    try:
        try:
            kind, detail = upgrade_outcome(conn)
        except EOFError:
            c.saw(label, "closed without an answer")
            c.problems.append(f"{label}: closed without an answer")
            return
        c.saw(label, {"outcome": kind, "answer": detail.summary() if isinstance(detail, Response) else detail})
        if kind == "refused":
            c.expect(f"{label} status", detail.status, 400)
            c.expect(f"{label} body", detail.text(), message)
            c.expect(f"{label} connection closed", detail.closed, True)
        elif kind == node:
            c.deviations.append(f"{label}: {kind} (the spec wants the WebSocket refused or closed)")
        elif kind != "closed":
            c.problems.append(f"{label}: {kind} {detail!r}")
    finally:
        conn.close()


@case
def websocket_bad_eio(c, server):
    """handshake / WebSocket / fails with an invalid 'EIO' query parameter"""
    for query in ("?transport=websocket", "?EIO=abc&transport=websocket", "?EIO=3&transport=websocket"):
        refused_upgrade(c, server, query, "Unsupported protocol version", node="http-after-101")


@case
def websocket_bad_transport(c, server):
    """handshake / WebSocket / fails with an invalid 'transport' query parameter"""
    refused_upgrade(c, server, "?EIO=4", "Transport unknown")
    refused_upgrade(c, server, "?EIO=4&transport=abc", "Transport unknown")


@case
def websocket_unknown_sid(c, server):
    """an upgrade naming an unknown session"""
    refused_upgrade(c, server, "?EIO=4&transport=websocket&sid=nosuchsession", "Session ID unknown")


@case
def websocket_transport_polling_upgrade(c, server):
    """an upgrade request that names transport=polling"""
    refused_upgrade(c, server, "?EIO=4&transport=polling", "Bad request")


@case
def websocket_without_upgrade(c, server):
    """a plain GET (no Upgrade header) for transport=websocket"""
    bad_query(c, server, "?EIO=4&transport=websocket", 3, "Bad request")


ORIGIN = "http://client.example"


@case
def cors_preflight(c, server):
    """CORS preflight (OPTIONS) on the handshake URL"""
    res = c.saw("OPTIONS", server.request("OPTIONS", "?EIO=4&transport=polling", {
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"}))
    if server.cors:
        c.expect("status", res.status, 204)
        c.expect("Access-Control-Allow-Origin", res.header("Access-Control-Allow-Origin"), "*")
        c.expect("Access-Control-Allow-Methods", res.header("Access-Control-Allow-Methods"),
                 "GET,HEAD,PUT,PATCH,POST,DELETE")
        c.expect("Access-Control-Allow-Headers", res.header("Access-Control-Allow-Headers"), "content-type")
        c.expect("body", res.body, b"")
    else:
        c.error_answer("OPTIONS", res, 2, "Bad handshake method")
        c.expect("no Access-Control-Allow-Origin", res.header("Access-Control-Allow-Origin"), None)


@case
def cors_origin(c, server):
    """an Origin header on the handshake, a POST and an error answer"""
    res = c.saw("GET handshake with Origin",
                server.request("GET", "?EIO=4&transport=polling", {"Origin": ORIGIN}))
    sid = json.loads(res.body[1:])["sid"] if res.status == 200 else ""
    post = c.saw("POST with Origin", server.post(sid, b"4x", {"Origin": ORIGIN}))
    err = c.saw("error with Origin", server.request("GET", "?EIO=4&transport=abc", {"Origin": ORIGIN}))
    want = "*" if server.cors else None
    for label, r in (("handshake", res), ("POST", post), ("error answer", err)):
        c.expect(f"{label} Access-Control-Allow-Origin", r.header("Access-Control-Allow-Origin"), want)
        c.expect(f"{label} Access-Control-Allow-Credentials", r.header("Access-Control-Allow-Credentials"), None)


def main(argv):
    args = argv[1:]
    show = "--show" in args
    strict = "--strict" in args
    cors = True
    only = None
    rest = []
    i = 0
    while i < len(args):
        if args[i] == "--only" and i + 1 < len(args):
            only = set(args[i + 1].split(","))
            i += 1
        elif args[i] == "--no-cors":
            cors = False
        elif args[i] not in ("--show", "--strict"):
            rest.append(args[i])
        i += 1
    names = [fn.__name__ for fn in CASES]
    if len(rest) != 1 or (only and not only <= set(names)):
        print("usage: raw_errors.py URL [--show] [--strict] [--no-cors] [--only CASE,...]\ncases: "
              + " ".join(names), file=sys.stderr)
        return 2
    try:
        server = Server(rest[0])
    except ValueError as err:
        print(err, file=sys.stderr)
        return 2
    server.cors = cors
    failed = 0
    deviations = 0
    for fn in CASES:
        if only and fn.__name__ not in only:
            continue
        c = Case(fn.__name__)
        try:
            fn(c, server)
        except (Mismatch, OSError, EOFError, ValueError) as err:
            c.problems.append(f"{type(err).__name__}: {err}")
        if strict:
            c.problems += c.deviations
            c.deviations = []
        if show:
            print(json.dumps({"case": c.name, "ok": not c.problems, "observed": c.observed,
                              "deviations": c.deviations, "problems": c.problems}, default=repr))
        if c.problems:
            failed += 1
            print(f"MISMATCH {c.name}: {fn.__doc__}", file=sys.stderr)
            for problem in c.problems:
                print(f"    {problem}", file=sys.stderr)
        for note in c.deviations:
            deviations += 1
            print(f"known Node deviation {c.name}: {note}", file=sys.stderr)
    ran = sum(1 for fn in CASES if not only or fn.__name__ in only)
    print(f"{deviations} answers are known Node deviations from the spec (see REFERENCE.md)")
    print(f"raw_errors: {ran - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
