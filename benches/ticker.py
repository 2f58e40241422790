#!/usr/bin/env python3
"""Ticker fan-out, side by side: surge's ticker against a tokio-websockets
server that broadcasts the same feed with tokio::sync::broadcast.

`surge load subscribe` holds N subscribers of /ticker (every symbol) from 16
source addresses; once all are open it counts what they receive for SECS.

  deliveries/s     ticks received per second, all subscribers together
  cpu_us/delivery  server CPU (utime+stime) over the window / deliveries
  gaps             sequence numbers skipped (conflation or lag)
  p50/p99 ms       send-to-receive latency of every tick

Cases: "flood" (32 symbols x 1000 Hz to 10,000 subscribers: far more than
one load core can read, so throughput and conflation are measured; the
latency of what does arrive is the client's own backlog) and "1 tick/ms"
(1 symbol x 1000 Hz to 1,000 subscribers, a load the client keeps up with:
delivery latency). Server on core 0 (both cores with 2 shards), load on
core 1.

Usage: python3 benches/ticker.py [--rounds 3] [--secs 5] [--conns 10000]
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import PEERS, SURGE, build, cpu_seconds, parse_result  # noqa: E402


def servers(symbols, rate):
    feed = ["--symbols", str(symbols), "--rate", str(rate)]
    surge = [SURGE, "ticker", "--max-conns-per-ip", "0"] + feed
    return {
        "surge-uring-1": ("0", surge + ["--shards", "1", "--backend", "uring"]),
        "surge-epoll-1": ("0", surge + ["--shards", "1", "--backend", "epoll"]),
        "surge-uring-2": ("0,1", surge + ["--shards", "2", "--backend", "uring"]),
        "tokio-websockets": ("0", [os.path.join(PEERS, "tokio-websockets-broadcast")] + feed),
    }


def run_case(cpus, argv, port, conns, secs, load_extra=()):
    proc = subprocess.Popen(["taskset", "-c", cpus] + argv + ["--listen", f"127.0.0.1:{port}"],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        deadline = time.time() + 10
        while "listening on" not in proc.stderr.readline():
            if time.time() > deadline:
                raise SystemExit(f"{argv[0]} did not start")
        load = subprocess.Popen(
            ["taskset", "-c", "1", SURGE, "load", "subscribe", "--url", f"ws://127.0.0.1:{port}/ticker",
             "--conns", str(conns), "--sources", "127.0.0.2-127.0.0.17", "--conns-in-flight", "2000",
             "--connect-timeout", "60", "--duration", str(secs), *load_extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        before = None
        for line in load.stderr:
            if "connections open after" in line:
                before = cpu_seconds(proc.pid)
                break
        out, err = load.communicate(timeout=600)
        after = cpu_seconds(proc.pid)
        r = parse_result(out, err)
        if before is None or not r.get("msgs"):
            return None
        delivered = r["msgs_per_s"] * r["secs"]
        return {
            "deliveries/s": r["msgs_per_s"],
            "cpu_us/delivery": (after - before) * 1e6 / delivered,
            "gaps/s": r["gaps"] / r["secs"],
            "p50 ms": r["p50_us"] / 1000,
            "p99 ms": r["p99_us"] / 1000,
            "open": r["open"],
        }
    finally:
        proc.kill()
        proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--secs", type=float, default=5)
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--latency-conns", type=int, default=1000,
                    help="subscribers in the latency case, few enough for one load core to read")
    ap.add_argument("--only", default="")
    a = ap.parse_args()
    build()
    cases = [("flood 32 x 1000 Hz", 32, 1000, a.conns), ("1 tick/ms", 1, 1000, a.latency_conns)]
    if a.only:
        cases = [c for c in cases if a.only in c[0]]
    results = {}
    port = 19500
    for rnd in range(a.rounds):
        for case, symbols, rate, conns in cases:
            table = servers(symbols, rate)
            order = list(table) if rnd % 2 == 0 else list(reversed(table))
            for name in order:
                port += 1
                cpus, argv = table[name]
                r = run_case(cpus, argv, port, conns, a.secs)
                print(f"round {rnd + 1} {case:20} {name:18} {r}", file=sys.stderr)
                for metric, value in (r or {}).items():
                    results.setdefault((case, metric), {}).setdefault(name, []).append(value)
    names = list(servers(1, 1))
    print(f"\nmedians of {a.rounds} round(s), {a.conns} subscribers, {a.secs:g} s windows")
    print("| case | metric | " + " | ".join(names) + " |")
    print("|---|---|" + "---:|" * len(names))
    for (case, metric), by in results.items():
        cells = " | ".join(f"{statistics.median(by[n]):,.3f}" if n in by else "-" for n in names)
        print(f"| {case} | {metric} | {cells} |")


if __name__ == "__main__":
    main()
