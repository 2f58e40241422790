#!/usr/bin/env python3
"""Side-by-side benchmark of surge against peer WebSocket servers.

Each server runs pinned to core 0 and `surge load` to core 1; servers take
turns within every round, and the table reports medians over rounds:

  msgs/s               echoes per second seen by the load generator
  cpu_us/msg           server CPU (utime+stime from /proc/PID/stat) per echo:
                       independent of how fast the client is
  handshakes/s, cpu_us/handshake   open, upgrade, abrupt close
  bytes/idle conn      server RSS delta over N held connections, divided by N
  cpu_us/delivery      the ticker's fan-out (surge builds only): server CPU
                       per tick delivered to 1,000 subscribers

Usage: python3 benches/compare.py [--rounds 3] [--secs 5] [--quick]
       [--before PATH/TO/OLD/surge --servers surge-uring,surge-uring-before,...]

`--before` adds surge-uring-before and surge-epoll-before: the same cases on
another build of surge (say, main's, before a change), side by side.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SURGE = os.path.join(ROOT, "target/release/surge")
PEERS = os.path.join(ROOT, "benches/peers/target/release")
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

SERVERS = {
    "surge-uring": [SURGE, "echo", "--shards", "1", "--backend", "uring", "--idle-timeout-ms", "0",
                   "--max-conns-per-ip", "0"],
    "surge-epoll": [SURGE, "echo", "--shards", "1", "--backend", "epoll", "--idle-timeout-ms", "0",
                   "--max-conns-per-ip", "0"],
    "fastwebsockets": [os.path.join(PEERS, "fastwebsockets-echo")],
    "tokio-tungstenite": [os.path.join(PEERS, "tokio-tungstenite-echo")],
}
BASELINE = "fastwebsockets"


def build(servers):
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    if any(not s.startswith("surge-") for s in servers):
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=os.path.join(ROOT, "benches/peers"), check=True)


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def rss_bytes(pid):
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE


class Server:
    def __init__(self, name, port, argv=None):
        argv = ["taskset", "-c", "0"] + (argv or SERVERS[name]) + ["--listen", f"127.0.0.1:{port}"]
        self.proc = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        deadline = time.time() + 10
        while True:
            line = self.proc.stderr.readline()
            if "listening on" in line:
                break
            if not line or time.time() > deadline:
                raise SystemExit(f"{name} did not start: {line!r}")
        self.url = f"ws://127.0.0.1:{port}/"

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def load(args, background=False):
    argv = ["taskset", "-c", "1", SURGE, "load"] + args
    if background:
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    return parse_result(out.stdout, out.stderr)


def parse_result(stdout, stderr):
    lines = [l for l in stdout.splitlines() if l.startswith("RESULT ")]
    if not lines:
        raise SystemExit(f"no RESULT line:\n{stdout}\n{stderr}")
    return {k: float(v) for k, v in re.findall(r"(\w+)=([0-9.]+)", lines[-1])}


def echo_case(conns, size, pipeline, secs):
    def run(server):
        pid = server.proc.pid
        before = cpu_seconds(pid)
        r = load(["echo", "--url", server.url, "--conns", str(conns), "--size", str(size),
                  "--pipeline", str(pipeline), "--duration", str(secs)])
        cpu = cpu_seconds(pid) - before
        msgs = r["msgs_per_s"] * r["secs"]
        if r["errors"] or not msgs:
            return None
        return {"msgs/s": r["msgs_per_s"], "cpu_us/msg": cpu * 1e6 / msgs, "p99_us": r["p99_us"]}
    return run


def connect_case(secs):
    def run(server):
        pid = server.proc.pid
        before = cpu_seconds(pid)
        r = load(["connect", "--url", server.url, "--conns", "64", "--duration", str(secs)])
        cpu = cpu_seconds(pid) - before
        if not r["handshakes"]:
            return None
        return {"handshakes/s": r["handshakes_per_s"], "cpu_us/handshake": cpu * 1e6 / r["handshakes"]}
    return run


def ticker_argv(name):
    """The ticker feed (1 symbol x 1000 Hz) on the same build and driver as
    `name`'s echo server; peers have none."""
    argv = SERVERS[name]
    if not name.startswith("surge-"):
        return None
    return [argv[0], "ticker", "--symbols", "1", "--rate", "1000"] + argv[2:]


def ticker_case(secs, conns=1000):
    """Fan-out: `conns` subscribers of every symbol; server CPU per tick
    delivered, counted once all are open."""
    def run(server):
        pid = server.proc.pid
        sub = load(["subscribe", "--url", server.url + "ticker", "--conns", str(conns),
                    "--sources", "127.0.0.2-127.0.0.5", "--duration", str(secs)], background=True)
        before = None
        for line in sub.stderr:
            if "connections open after" in line:
                before = cpu_seconds(pid)
                break
        out, err = sub.communicate(timeout=600)
        after = cpu_seconds(pid)
        r = parse_result(out, err)
        delivered = r.get("msgs_per_s", 0) * r.get("secs", 0)
        if before is None or not delivered:
            return None
        return {"deliveries/s": r["msgs_per_s"], "cpu_us/delivery": (after - before) * 1e6 / delivered,
                "p99_us": r["p99_us"]}
    return run


def hub_argv(history):
    """`surge serve` (its /hub route) on the same build and driver as
    `name`'s echo server, keeping `history` messages per topic; peers have
    none."""
    def argv_of(name):
        if not name.startswith("surge-"):
            return None
        argv = SERVERS[name]
        return [argv[0], "serve", "--history-size", str(history)] + argv[2:]
    return argv_of


def hub_case(secs, conns=1000, rate=1000):
    """Hub fan-out: `conns` subscribers of one topic, one publisher at
    `rate` messages/s; server CPU per message delivered, from the first
    publish until the subscribers are done."""
    def run(server):
        pid = server.proc.pid
        url = server.url + "hub"
        sub = load(["subscribe", "--url", url, "--topics", "bench", "--conns", str(conns),
                    "--sources", "127.0.0.2-127.0.0.5", "--duration", str(secs + 1)], background=True)
        for line in sub.stderr:
            if "connections open after" in line:
                break
        else:
            return None
        before = cpu_seconds(pid)
        pub = load(["publish", "--url", url, "--topics", "bench", "--rate", str(rate), "--conns", "1",
                    "--duration", str(secs)], background=True)
        pub.communicate(timeout=600)
        out, err = sub.communicate(timeout=600)
        after = cpu_seconds(pid)
        r = parse_result(out, err)
        delivered = r.get("msgs", 0)
        if not delivered or r.get("gaps", 0) or r.get("dups", 0):
            return None
        return {"deliveries/s": r["msgs_per_s"], "cpu_us/delivery": (after - before) * 1e6 / delivered,
                "p99_us": r["p99_us"]}
    return run


def hold_case():
    """RSS with 10,000 and then 15,000 idle connections held: per connection
    at each, and the marginal cost of the last 5,000 (which excludes fixed
    per-shard memory such as receive rings)."""
    def wait_open(proc):
        for line in proc.stderr:
            if "connections open after" in line:
                return True
        return False

    def run(server):
        pid = server.proc.pid
        time.sleep(0.3)
        base = rss_bytes(pid)
        first = load(["hold", "--url", server.url, "--conns", "10000", "--sources", "127.0.0.2-127.0.0.9",
                      "--duration", "60"], background=True)
        second = None
        try:
            if not wait_open(first):
                return None
            time.sleep(1.0)
            rss10 = rss_bytes(pid)
            second = load(["hold", "--url", server.url, "--conns", "5000", "--sources", "127.0.0.10-127.0.0.13",
                           "--duration", "60"], background=True)
            if not wait_open(second):
                return None
            time.sleep(1.0)
            rss15 = rss_bytes(pid)
        finally:
            for proc in (first, second):
                if proc:
                    proc.send_signal(2)
                    proc.communicate(timeout=60)
        return {
            "B/conn @10k": (rss10 - base) / 10000,
            "B/conn @15k": (rss15 - base) / 15000,
            "B/conn 10k->15k": (rss15 - rss10) / 5000,
        }
    return run


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--secs", type=float, default=5)
    ap.add_argument("--quick", action="store_true", help="1 round of 2 s: a smoke test")
    ap.add_argument("--servers", default=",".join(SERVERS))
    ap.add_argument("--only", default="", help="comma-separated case names to run")
    ap.add_argument("--before", default="", help="another surge binary to run as surge-*-before")
    a = ap.parse_args()
    if a.before:
        for backend in ("uring", "epoll"):
            argv = SERVERS[f"surge-{backend}"]
            SERVERS[f"surge-{backend}-before"] = [os.path.abspath(a.before)] + argv[1:]
    if a.quick:
        a.rounds, a.secs = 1, 2
    servers = a.servers.split(",")
    build(servers)
    cases = [
        ("echo 100 x 16 B", echo_case(100, 16, 1, a.secs)),
        ("echo 1000 x 16 B", echo_case(1000, 16, 1, a.secs)),
        ("echo 100 x 1 KiB", echo_case(100, 1024, 1, a.secs)),
        ("echo 1000 x 1 KiB", echo_case(1000, 1024, 1, a.secs)),
        ("echo 100 x 16 B, 8 in flight", echo_case(100, 16, 8, a.secs)),
        ("connect (64 in flight)", connect_case(a.secs)),
        ("hold idle", hold_case()),
        ("ticker 1 x 1000 Hz to 1000", ticker_case(a.secs), ticker_argv),
        ("hub 1000/s to 1000", hub_case(a.secs), hub_argv(0)),
        ("hub 1000/s to 1000, history 1000", hub_case(a.secs), hub_argv(1000)),
    ]
    if a.only:
        wanted = a.only.split(",")
        cases = [c for c in cases if any(w in c[0] for w in wanted)]
    results = {}
    port = 19000
    for rnd in range(a.rounds):
        for case, run, *argv_of in cases:
            order = servers if rnd % 2 == 0 else list(reversed(servers))
            for name in order:
                argv = argv_of[0](name) if argv_of else None
                if argv_of and not argv:
                    continue
                port += 1
                server = Server(name, port, argv)
                try:
                    r = run(server)
                finally:
                    server.stop()
                print(f"round {rnd + 1} {case:32} {name:18} {r}", file=sys.stderr)
                if r:
                    for metric, value in r.items():
                        results.setdefault((case, metric), {}).setdefault(name, []).append(value)
    print(f"\nmedians of {a.rounds} round(s), {a.secs:g} s each; server on core 0, load on core 1")
    print(f"machine: {os.uname().release}, {os.cpu_count()} cores, "
          + open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].strip(": \t"))
    header = f"| {'case':32} | {'metric':17} | " + " | ".join(f"{s:>17}" for s in servers) + f" | vs {BASELINE} |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for (case, metric), by_server in results.items():
        med = {s: statistics.median(v) for s, v in by_server.items()}
        cells = " | ".join(f"{med[s]:>17.2f}" if s in med else f"{'-':>17}" for s in servers)
        base = med.get(BASELINE)
        ratio = f"{med['surge-uring'] / base:.2f}x" if base and "surge-uring" in med else "-"
        print(f"| {case:32} | {metric:17} | {cells} | {ratio:>9} |")


if __name__ == "__main__":
    main()
