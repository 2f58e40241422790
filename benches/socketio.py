#!/usr/bin/env python3
"""Socket.IO v5 room broadcast, idle memory and connects/s: the Node
socket.io server (4.8.4, benches/socketio_peer.mjs, default options),
socketioxide (benches/peers, current-thread tokio) and, given --surge, surge
on one shard, side by side on one core each.

Every server runs pinned to core 0, the drivers (benches/socketio_load.mjs,
raw Engine.IO/Socket.IO over node:net, WebSocket transport only) to core 1;
a fresh server for every measurement, servers taking turns, and the table
reports medians over rounds. Clients connect from 127.0.0.2-127.0.0.81
(CLIENTS/80 per address: surge admits 256 per address by default), split
over DRIVERS processes, each under 20,000 descriptors.

  broadcast   CLIENTS clients in room "all"; one of them sends `broadcast`
              RATE times a second for SECS seconds and the server emits
              `tick` to the room each time:
    deliveries/s     ticks received by all clients, over the time from the
                     first `broadcast` sent to the last tick received
    delivered %      of RATE x SECS x CLIENTS (socketioxide drops an emit
                     when a socket's 128-packet buffer is full; a server that
                     falls behind gets DRAIN seconds to catch up)
    cpu_ns/delivery  server utime+stime (/proc/PID/stat) per tick received;
                     `of it kernel` the stime part (on loopback it also
                     carries the clients' TCP receive path)
    server/drivers busy  CPU seconds per second: near 1.0 sets the pace
  idle        IDLE clients connected and idle, in two halves one after the
              other: B/client is the server's RSS growth over all of them,
              B/client 2nd half the growth over the second half alone
  connect     CONNECTS clients connecting at once (128 in flight per
              driver): WebSocket upgrade, Engine.IO open, Socket.IO CONNECT
              to "/" until the server's answer; connects/s from the first
              TCP connect to the last answer, server cpu_us/connect (a
              fresh server: its first connections warm a JIT up)

Usage: npm ci --prefix tests/socketio --no-audit --no-fund            # once
       (cd benches/peers && cargo build --release --bin socketioxide)  # once
       python3 benches/socketio.py [--servers node,socketioxide,surge]
           [--surge target/release/surge] [--rounds 3] [--clients 10000]
           [--rate 20] [--secs 5] [--idle 10000] [--connects 10000]
           [--only broadcast,idle,connect]
surge is left out without --surge.

Who sets the pace shows in `server busy` and `drivers busy`: the one near
1.0. A driver spends about 250 us of CPU per connect (node:net, the
handshake's kernel work included) and a few us per delivery, so connects/s
past 4,000 or so and deliveries/s past a few hundred thousand measure the
drivers; cpu_us/connect and cpu_ns/delivery still compare the servers. Both
below 1.0 means the cores are shared with other work.
"""

import argparse
import atexit
import os
import re
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRIVER = os.path.join(ROOT, "benches/socketio_load.mjs")
NODE_PEER = os.path.join(ROOT, "benches/socketio_peer.mjs")
SOCKETIOXIDE = os.path.join(ROOT, "benches/peers/target/release/socketioxide")
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
DRIVER_LIMIT_SECS = 90
DRAIN_SECS = 10
BUDGET_SECS = 280  # no round starts that would end past this: the whole bench stays under 5 minutes
FIRST_SOURCE, SOURCES = 2, 80  # client addresses 127.0.0.2-127.0.0.81

# The ping settings are
# both peers' defaults; how the route puts clients in a room and which event
# it emits for a publish is the sketch (`subscribe`, `publish`), to be
# settled with the route: SURGE_CLIENT is what the drivers then send.
SURGE_CONFIG = """\
[[routes]]
path = "/socket.io/"
kind = "socketio"
ping-interval-ms = 25000
ping-timeout-ms = 20000
max-payload = 1000000
"""
SURGE_CLIENT = ["--join", "subscribe", "--publish", '["publish","all",', "--tick", "publish"]


def fd_limit():
    """20,000 descriptors for a server or driver (one per client)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    soft = 20000 if hard == resource.RLIM_INFINITY else min(20000, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def cpu_seconds(pid):
    """(user, kernel) CPU seconds of every thread of pid so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK


def rss_bytes(pid):
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE


class Server:
    def __init__(self, argv):
        self.proc = subprocess.Popen(["taskset", "-c", "0"] + argv, stderr=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, text=True, preexec_fn=fd_limit)
        deadline, said = time.time() + 10, []
        while True:
            line = self.proc.stderr.readline()
            if "listening on" in line:
                break
            said.append(line.strip())
            if not line or time.time() > deadline:
                self.stop()
                raise SystemExit(f"{argv[0]} did not start: " + " / ".join(filter(None, said[-3:])))
        # Keeps reading stderr so a chatty server never blocks on a full pipe.
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()
        self.pid = self.proc.pid

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def fields(line):
    return {k: float(v) for k, v in re.findall(r"(\w+)=([0-9.]+)", line)}


class Driver:
    """One socketio_load.mjs on core 1 with `clients` clients from its own
    block of source addresses."""

    def __init__(self, port, clients, block, blocks, extra):
        per = SOURCES // blocks
        first = FIRST_SOURCE + block * per
        self.proc = subprocess.Popen(
            ["taskset", "-c", "1", "node", DRIVER, "--port", str(port), "--clients", str(clients),
             "--sources", f"127.0.0.{first}-127.0.0.{first + per - 1}", "--hold", str(DRIVER_LIMIT_SECS - 10),
             *extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=fd_limit)
        # The driver stops by itself; this bounds the bench should it not.
        self.watchdog = threading.Timer(DRIVER_LIMIT_SECS, self.proc.kill)
        self.watchdog.daemon = True
        self.watchdog.start()
        self.clients = clients

    def connected(self):
        """Blocks until the driver's clients are set up; its CONNECTED fields."""
        for line in self.proc.stderr:
            if line.startswith("CONNECTED"):
                threading.Thread(target=self.proc.stderr.read, daemon=True).start()
                r = fields(line)
                if r["clients"] < self.clients:
                    print(f"    driver: {line.strip()}", file=sys.stderr)
                return r
            print(f"    driver: {line.strip()}", file=sys.stderr)
        return {"clients": 0}

    def say(self, word):
        try:
            self.proc.stdin.write(word + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass

    def result(self):
        r = None
        for line in self.proc.stdout:
            if line.startswith("RESULT "):
                r = fields(line)
                break
        self.proc.wait(timeout=30)
        self.watchdog.cancel()
        return r


def split(total, parts):
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def broadcast_case(server, port, a, extra):
    expect = round(a.rate * a.secs)
    shares = split(a.clients, a.drivers)
    drivers = [Driver(port, n, i, a.drivers, extra + ["--expect", str(expect), "--secs", str(a.secs),
                                                      "--rate", str(a.rate), "--drain", str(DRAIN_SECS),
                                                      "--publisher", "1" if i == 0 else "0"])
               for i, n in enumerate(shares)]
    try:
        if sum(d.connected()["clients"] for d in drivers) < a.clients:
            return None
        time.sleep(1)  # lets the server finish what the last connects set off
        before = cpu_seconds(server.pid)
        for d in drivers:
            d.say("go")
        results = [d.result() for d in drivers]
        after = cpu_seconds(server.pid)
    finally:
        for d in drivers:
            d.proc.kill()
    if any(not r or r["errors"] for r in results) or not results[0]["sent"]:
        print(f"    results: {results}", file=sys.stderr)
        return None
    ticks = sum(r["ticks"] for r in results)
    cpu, kernel = sum(after) - sum(before), after[1] - before[1]
    window = (max(r["last_tick_ms"] for r in results) - results[0]["first_send_ms"]) / 1000
    wanted = results[0]["sent"] * a.clients
    return {"deliveries/s": ticks / window, "delivered %": 100 * ticks / wanted,
            "cpu_ns/delivery": cpu * 1e9 / ticks, "of it kernel": kernel * 1e9 / ticks, "server busy": cpu / window,
            "drivers busy": sum(r["driver_busy"] for r in results)}


def idle_case(server, port, a, extra):
    """Two drivers of IDLE/2 clients, one after the other: the second
    half leaves out what the first clients cost once (a JIT warming, a
    heap's first growth, per-shard buffers)."""
    halves = split(a.idle, 2)
    time.sleep(0.5)
    rss = [rss_bytes(server.pid)]
    drivers = []
    try:
        for i, n in enumerate(halves):
            drivers.append(Driver(port, n, i, 2, extra))
            if drivers[-1].connected()["clients"] < n:
                return None
            time.sleep(2)  # lets the server finish any work the last clients set off
            rss.append(rss_bytes(server.pid))
        for d in drivers:
            d.say("stop")
        results = [d.result() for d in drivers]
    finally:
        for d in drivers:
            d.proc.kill()
    if any(not r or r["errors"] for r in results):
        return None
    return {"B/client": (rss[2] - rss[0]) / a.idle, "B/client 2nd half": (rss[2] - rss[1]) / halves[1]}


def connect_case(server, port, a, extra):
    before = sum(cpu_seconds(server.pid))
    drivers = [Driver(port, n, i, a.drivers, extra) for i, n in enumerate(split(a.connects, a.drivers))]
    try:
        marks = [d.connected() for d in drivers]
        cpu = sum(cpu_seconds(server.pid)) - before
        for d in drivers:
            d.say("stop")
        results = [d.result() for d in drivers]
    finally:
        for d in drivers:
            d.proc.kill()
    count = sum(m["clients"] for m in marks)
    if count < a.connects or any(not r or r["errors"] for r in results):
        return None
    secs = (max(m["last_ms"] for m in marks) - min(m["first_ms"] for m in marks)) / 1000
    return {"connects/s": count / secs, "cpu_us/connect": cpu * 1e6 / count, "server busy": cpu / secs,
            "drivers busy": sum(m["cpu_ms"] for m in marks) / 1000 / secs}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--servers", default="node,socketioxide,surge")
    ap.add_argument("--surge", default="", help="surge binary; without it surge is left out")
    ap.add_argument("--surge-args", default="", help="more arguments for `surge serve`")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=10000, help="clients in the broadcast room")
    ap.add_argument("--rate", type=float, default=20, help="broadcasts per second")
    ap.add_argument("--secs", type=float, default=5, help="seconds of broadcasting")
    ap.add_argument("--idle", type=int, default=10000, help="idle clients for the memory case")
    ap.add_argument("--connects", type=int, default=10000, help="clients connecting at once")
    ap.add_argument("--drivers", type=int, default=2, help="driver processes, all on core 1")
    ap.add_argument("--only", default="", help="comma-separated cases (broadcast, idle, connect)")
    a = ap.parse_args()
    if not os.path.isdir(os.path.join(ROOT, "tests/socketio/node_modules/socket.io")):
        raise SystemExit("run `npm ci --prefix tests/socketio --no-audit --no-fund` first")
    if a.secs > 30 or max(a.clients, a.idle, a.connects) > 19000 or not 1 <= a.drivers <= 4:
        raise SystemExit("--secs at most 30; --clients, --idle, --connects at most 19000 (one descriptor "
                         "each, 20000 per server); --drivers 1 to 4")

    servers = {}
    for name in a.servers.split(","):
        if name == "node":
            servers[name] = (lambda port: ["node", NODE_PEER, str(port)], [])
        elif name == "socketioxide":
            if not os.path.exists(SOCKETIOXIDE):
                raise SystemExit("run `cargo build --release --bin socketioxide` in benches/peers first")
            servers[name] = (lambda port: [SOCKETIOXIDE, "--listen", f"127.0.0.1:{port}"], [])
        elif name == "surge" and not a.surge:
            print("surge left out: no --surge PATH", file=sys.stderr)
        elif name == "surge":
            config = tempfile.NamedTemporaryFile("w", suffix=".toml", prefix="socketio-bench-", delete=False)
            config.write(SURGE_CONFIG)
            config.close()
            atexit.register(os.unlink, config.name)
            surge = [os.path.abspath(a.surge), "serve", "--config", config.name, "--shards", "1",
                     *shlex.split(a.surge_args)]
            servers[name] = (lambda port: surge + ["--listen", f"127.0.0.1:{port}"], SURGE_CLIENT)
        else:
            raise SystemExit(f"unknown server {name}: node, socketioxide, surge")
    names = list(servers)

    cases = [("broadcast", broadcast_case), ("idle", idle_case), ("connect", connect_case)]
    if a.only:
        cases = [c for c in cases if c[0] in a.only.split(",")]
    results = {}
    port = 19600
    started = time.time()
    rounds, last = 0, 0
    for rnd in range(a.rounds):
        # Whole rounds only, so that every server gets the same number of runs.
        if time.time() - started + last > BUDGET_SECS:
            break
        round_started = time.time()
        rounds += 1
        for case, run in cases:
            for name in names if rnd % 2 == 0 else reversed(names):
                port += 1
                argv, extra = servers[name]
                server = Server(argv(port))
                try:
                    r = run(server, port, a, extra)
                finally:
                    server.stop()
                print(f"round {rnd + 1} {case:9} {name:12} "
                      + (" ".join(f"{k}={v:.1f}" for k, v in r.items()) if r else "FAILED"), file=sys.stderr)
                for metric, value in (r or {}).items():
                    results.setdefault((case, metric), {}).setdefault(name, []).append(value)
        last = time.time() - round_started

    print(f"\nmedians of {rounds} round(s) in {time.time() - started:.0f} s"
          + (f" (of {a.rounds}: the next would have ended past {BUDGET_SECS} s)" if rounds < a.rounds else "")
          + f"; server on core 0, {a.drivers} drivers on core 1; broadcast: {a.clients} clients, "
          f"{a.rate:g}/s for {a.secs:g} s; idle: {a.idle} clients; connect: {a.connects} clients")
    print(f"machine: {os.uname().release}, {os.cpu_count()} cores, "
          + open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].strip(": \t"))
    header = f"| {'case':9} | {'metric':17} | " + " | ".join(f"{s:>12}" for s in names) + " |"
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
    for (case, metric), by_server in results.items():
        med = {s: statistics.median(v) for s, v in by_server.items()}
        cells = " | ".join(f"{med[s]:>12.{2 if med[s] < 10 else 0}f}" if s in med else f"{'-':>12}" for s in names)
        print(f"| {case:9} | {metric:17} | {cells} |")


if __name__ == "__main__":
    main()
