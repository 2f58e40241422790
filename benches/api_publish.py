"""Server API publishes per second and their latency, against a release
surge on one shard (core 0), the clients on core 1: CLIENTS threads each
POST /api/publish over a fresh connection (the API takes one request per
connection) for SECONDS, ROUNDS rounds; a hub subscriber counts what it
receives, so the figure is of publishes delivered, not only answered.

Usage: python3 benches/api_publish.py [--surge PATH] [--clients N] [--seconds S] [--rounds R]
"""

import argparse
import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, deadline=10.0):
    end = time.time() + deadline
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def subscriber(port, topic, counted, stop):
    """A raw WebSocket hub client: subscribes, then counts text frames."""
    s = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        (f"GET /hub HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(4096)
    buf = buf.split(b"\r\n\r\n", 1)[1]
    payload = json.dumps({"op": "subscribe", "topics": [topic]}).encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    s.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
    s.settimeout(0.2)
    frames = -1  # the subscribed answer
    while not stop.is_set():
        try:
            chunk = s.recv(1 << 16)
        except socket.timeout:
            continue
        if not chunk:
            break
        buf += chunk
        while len(buf) >= 2:
            n = buf[1] & 0x7F
            head = 2
            if n == 126:
                if len(buf) < 4:
                    break
                n, head = int.from_bytes(buf[2:4], "big"), 4
            elif n == 127:
                if len(buf) < 10:
                    break
                n, head = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < head + n:
                break
            buf = buf[head + n:]
            frames += 1
    counted.append(frames)
    s.close()


def publisher(port, key, topic, seconds, latencies, errors):
    body = json.dumps({"topic": topic, "data": {"px": 1}}).encode()
    head = (f"POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    end = time.time() + seconds
    while time.time() < end:
        started = time.perf_counter()
        try:
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(head + body)
                answer = b""
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    answer += chunk
            if not answer.startswith(b"HTTP/1.1 200"):
                errors.append(answer[:80])
                continue
        except OSError as e:
            errors.append(str(e))
            continue
        latencies.append(time.perf_counter() - started)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--surge", default=os.path.join(ROOT, "target/release/surge"))
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    os.sched_setaffinity(0, {1})
    rates = []
    for rnd in range(1, args.rounds + 1):
        port, api = free_port(), free_port()
        with tempfile.TemporaryDirectory() as tmp:
            key = base64.b64encode(os.urandom(24)).decode()
            key_file = os.path.join(tmp, "api.key")
            with open(key_file, "w") as f:
                f.write(key)
            server = subprocess.Popen(
                ["taskset", "-c", "0", args.surge, "serve", "--listen", f"127.0.0.1:{port}",
                 "--shards", "1", "--api-listen", f"127.0.0.1:{api}", "--api-key-file", key_file,
                 "--api-max-conns", "256"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_listening(port)
                wait_listening(api)
                counted, stop = [], threading.Event()
                sub = threading.Thread(target=subscriber, args=(port, "bench", counted, stop))
                sub.start()
                time.sleep(0.3)
                latencies, errors = [], []
                threads = [threading.Thread(target=publisher,
                                            args=(api, key, "bench", args.seconds, latencies, errors))
                           for _ in range(args.clients)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                time.sleep(0.5)
                stop.set()
                sub.join()
            finally:
                server.terminate()
                server.wait()
        latencies.sort()
        rate = len(latencies) / args.seconds
        rates.append(rate)
        p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e3
        print(f"round {rnd}: publishes/s={rate:.0f} delivered={counted[0] if counted else 0} "
              f"answered={len(latencies)} errors={len(errors)} p50_ms={p(0.5):.2f} "
              f"p99_ms={p(0.99):.2f}")
    print(f"median publishes/s over {args.rounds} rounds: {statistics.median(rates):.0f}")


if __name__ == "__main__":
    main()
