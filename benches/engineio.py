#!/usr/bin/env python3
"""Engine.IO v4 long-polling throughput and idle memory: surge (one shard,
the `engineio-echo` route) side by side with the Node reference server
(engine.io 6.6.13, tests/engineio/reference_server.mjs), both echoing.

Each server runs pinned to core 0, the driver (benches/engineio_load.mjs) to
core 1; a fresh server for every measurement, servers taking turns, and the
table reports medians over rounds:

  msgs/s, requests/s   SESSIONS polling sessions (from 40 client addresses:
                       surge admits 256 connections per address by
                       default), each a loop of POST one
                       message, GET its echo (two requests per message),
                       over one keep-alive connection per session; SECS
                       counted after 1 s of warm-up
  cpu_us/msg           server utime+stime (/proc/PID/stat) per echoed
                       message: independent of how fast the driver is;
                       `of it kernel` the stime part (on loopback it also
                       carries the driver's TCP receive path)
  server/driver busy   CPU seconds per second of each: the one near 1.0
                       sets the pace (a core shared with other work keeps
                       both under it)
  B/session            server RSS growth over IDLE sessions, divided by
                       IDLE: polling (a handshake, then one held GET) and
                       WebSocket (transport=websocket, open packet read)
  B/sess 2nd half      the same over the second IDLE/2 sessions alone

Both servers get ping settings long enough (25000/20000 ms) that no
heartbeat falls in a measurement. The driver tops out near 70,000
requests/s on an otherwise idle core: past that, msgs/s measures the
driver and only cpu_us/msg compares the servers.

Usage: npm ci --prefix tests/engineio --no-audit --no-fund   # once
       python3 benches/engineio.py [--surge target/release/surge]
       [--rounds 3] [--secs 10] [--sessions 200] [--idle 5000]
       [--only load,idle] [--surge-args "--backend epoll"]
Without --surge only the reference server runs.
"""

import argparse
import os
import re
import resource
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRIVER = os.path.join(ROOT, "benches/engineio_load.mjs")
REFERENCE = os.path.join(ROOT, "tests/engineio/reference_server.mjs")
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
PING_INTERVAL, PING_TIMEOUT = 25000, 20000
DRIVER_LIMIT_SECS = 120
# Sessions come from many client addresses so that no per-address cap (surge
# admits 256 connections per address by default) decides the count.
LOAD_SOURCES = "127.0.0.2-127.0.0.41"
IDLE_SOURCES = ("127.0.0.2-127.0.0.21", "127.0.0.22-127.0.0.41")

SURGE_CONFIG = f"""\
[[routes]]
path = "/engine.io/"
kind = "engineio-echo"
ping-interval-ms = {PING_INTERVAL}
ping-timeout-ms = {PING_TIMEOUT}
max-payload = 1000000
cors-origin = "*"   # as the reference server runs
"""


def fd_limit():
    """20,000 descriptors for a server or driver (one per session)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    soft = 20000 if hard == resource.RLIM_INFINITY else min(20000, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def cpu_seconds(pid):
    """(user, kernel) CPU seconds of every thread of pid so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK  # utime, stime


def rss_bytes(pid):
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE


class Server:
    def __init__(self, argv, port):
        self.proc = subprocess.Popen(["taskset", "-c", "0"] + argv(port), stderr=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, text=True, preexec_fn=fd_limit)
        deadline = time.time() + 10
        while True:
            line = self.proc.stderr.readline()
            if "listening on" in line:
                break
            if not line or time.time() > deadline:
                self.stop()
                raise SystemExit(f"{argv(port)[0]} did not start: {line!r}")
        # Keep reading stderr so a chatty server never blocks on a full pipe.
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()
        self.pid = self.proc.pid

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def driver(mode, port, *args):
    proc = subprocess.Popen(["taskset", "-c", "1", "node", DRIVER, mode, "--port", str(port), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=fd_limit)
    # The driver stops by itself; this bounds the bench should it not.
    watchdog = threading.Timer(DRIVER_LIMIT_SECS, proc.kill)
    watchdog.daemon = True
    watchdog.start()
    return proc


def wait_open(load):
    """Blocks until the driver reports every session set up; the count."""
    for line in load.stderr:
        if "sessions open after" in line:
            print(f"    {line.strip()}", file=sys.stderr)
            return int(line.split()[0])
        print(f"    driver: {line.strip()}", file=sys.stderr)
    return 0


def result(load):
    for line in load.stdout:
        if line.startswith("RESULT "):
            return {k: float(v) for k, v in re.findall(r"(\w+)=([0-9.]+)", line)}
    return None


def load_case(server, port, a):
    load = driver("poll", port, "--sessions", str(a.sessions), "--secs", str(a.secs), "--sources", LOAD_SOURCES)
    try:
        if wait_open(load) < a.sessions:
            return None
        before = cpu_seconds(server.pid)
        r = result(load)
        after = cpu_seconds(server.pid)
    finally:
        load.wait(timeout=60)
    if not r or r["errors"] or not r["msgs"]:
        return None
    cpu, kernel = sum(after) - sum(before), after[1] - before[1]
    return {"msgs/s": r["msgs_per_s"], "requests/s": r["requests_per_s"], "cpu_us/msg": cpu * 1e6 / r["msgs"],
            "of it kernel": kernel * 1e6 / r["msgs"], "server busy": cpu / r["secs"], "driver busy": r["driver_busy"]}


def idle_case(mode):
    """Two drivers of IDLE/2 sessions each, one after the other: RSS growth
    over all of them, and over the second half alone (which leaves out
    what the first sessions cost once: a JIT warming, a heap's first
    growth, per-shard buffers)."""
    def run(server, port, a):
        half = a.idle // 2
        time.sleep(0.5)
        rss = [rss_bytes(server.pid)]
        loads = []
        try:
            for sources in IDLE_SOURCES:
                loads.append(driver(mode, port, "--sessions", str(half), "--sources", sources, "--hold", "60"))
                if wait_open(loads[-1]) < half:
                    return None
                time.sleep(2)  # lets the server finish any work the last sessions set off
                rss.append(rss_bytes(server.pid))
        finally:
            results = []
            for load in loads:
                load.send_signal(signal.SIGINT)
                results.append(result(load))
                load.wait(timeout=60)
        if any(not r or r["errors"] for r in results):
            return None
        return {"B/session": (rss[2] - rss[0]) / (2 * half), "B/sess 2nd half": (rss[2] - rss[1]) / half}
    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--surge", default="", help="surge binary; without it only the reference server runs")
    ap.add_argument("--surge-args", default="", help="more arguments for `surge serve`")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--secs", type=float, default=10)
    ap.add_argument("--sessions", type=int, default=200, help="polling sessions under load")
    ap.add_argument("--idle", type=int, default=5000, help="idle sessions held for the memory cases")
    ap.add_argument("--only", default="", help="comma-separated case names to run (load, idle)")
    a = ap.parse_args()
    if not os.path.isdir(os.path.join(ROOT, "tests/engineio/node_modules/engine.io")):
        raise SystemExit("run `npm ci --prefix tests/engineio --no-audit --no-fund` first")
    if a.secs > DRIVER_LIMIT_SECS - 30:
        raise SystemExit(f"--secs at most {DRIVER_LIMIT_SECS - 30}")
    if a.idle > 19000 or a.sessions > 10000:
        raise SystemExit("--idle at most 19000 (one descriptor per session, 20000 per process), "
                         "--sessions at most 10000 (256 per client address)")

    servers = {"node-engine.io": lambda port: ["node", REFERENCE, str(port), "--ping-interval",
                                               str(PING_INTERVAL), "--ping-timeout", str(PING_TIMEOUT)]}
    if a.surge:
        config = tempfile.NamedTemporaryFile("w", suffix=".toml", prefix="engineio-bench-", delete=False)
        config.write(SURGE_CONFIG)
        config.close()
        surge = [os.path.abspath(a.surge), "serve", "--config", config.name, "--shards", "1",
                 *shlex.split(a.surge_args)]
        servers = {"surge": lambda port: surge + ["--listen", f"127.0.0.1:{port}"], **servers}
    names = list(servers)

    cases = [("load", "polling echo", load_case), ("idle", "idle polling", idle_case("idle-polling")),
             ("idle", "idle websocket", idle_case("idle-websocket"))]
    if a.only:
        cases = [c for c in cases if c[0] in a.only.split(",")]
    results = {}
    port = 19400
    started = time.time()
    for rnd in range(a.rounds):
        for _, case, run in cases:
            for name in names if rnd % 2 == 0 else reversed(names):
                port += 1
                server = Server(servers[name], port)
                try:
                    r = run(server, port, a)
                finally:
                    server.stop()
                print(f"round {rnd + 1} {case:16} {name:15} {r}", file=sys.stderr)
                for metric, value in (r or {}).items():
                    results.setdefault((case, metric), {}).setdefault(name, []).append(value)

    print(f"\nmedians of {a.rounds} round(s) in {time.time() - started:.0f} s; server on core 0, driver on core 1; "
          f"{a.sessions} polling sessions for {a.secs:g} s, {a.idle} idle sessions")
    print(f"machine: {os.uname().release}, {os.cpu_count()} cores, "
          + open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].strip(": \t"))
    ratio = len(names) == 2
    header = f"| {'case':16} | {'metric':15} | " + " | ".join(f"{s:>15}" for s in names) \
        + (" | surge/node |" if ratio else " |")
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
    for (case, metric), by_server in results.items():
        med = {s: statistics.median(v) for s, v in by_server.items()}
        cells = " | ".join(f"{med[s]:>15.{2 if med[s] < 10 else 1}f}" if s in med else f"{'-':>15}" for s in names)
        line = f"| {case:16} | {metric:15} | {cells} |"
        if ratio:
            x = f"{med[names[0]] / med[names[1]]:.2f}x" if len(med) == 2 and med[names[1]] else "-"
            line += f" {x:>10} |"
        print(line)


if __name__ == "__main__":
    main()
