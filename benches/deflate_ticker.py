#!/usr/bin/env python3
"""Ticker deliveries to permessage-deflate subscribers: compressed once per
shard and shared by every subscriber (surge's way), against compressed for
each subscriber on its own (`--deflate-broadcast per-connection`, what a
server without shared compression pays), with uncompressed delivery as the
reference. Every tick is compressed (`--deflate-threshold 0`).

`surge load subscribe [--deflate]` holds N subscribers of /ticker from 16
source addresses and inflates what arrives compressed; once all are open it
counts what they receive for SECS. Server on core 0 (one io_uring shard),
load on core 1.

  deliveries/s     ticks received per second, all subscribers together
  cpu_us/delivery  server CPU over the window / deliveries
  gaps/s           ticks skipped (conflated because the server fell behind)

Usage: python3 benches/deflate_ticker.py [--rounds 3] [--secs 5] [--conns 1000]
       [--symbols 8] [--rate 100]
"""

import argparse
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import ROOT, SURGE  # noqa: E402
from ticker import run_case  # noqa: E402


def servers(symbols, rate):
    base = [SURGE, "ticker", "--max-conns-per-ip", "0", "--shards", "1", "--backend", "uring",
            "--symbols", str(symbols), "--rate", str(rate), "--deflate-threshold", "0"]
    return {
        "plain": (base, ()),
        "compress-once": (base + ["--deflate-broadcast", "once"], ("--deflate",)),
        "per-connection": (base + ["--deflate-broadcast", "per-connection"], ("--deflate",)),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--secs", type=float, default=5)
    ap.add_argument("--conns", type=int, default=1000)
    ap.add_argument("--symbols", type=int, default=8)
    ap.add_argument("--rate", type=float, default=100)
    a = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    table = servers(a.symbols, a.rate)
    results = {}
    port = 19700
    for rnd in range(a.rounds):
        order = list(table) if rnd % 2 == 0 else list(reversed(table))
        for name in order:
            port += 1
            argv, load_extra = table[name]
            r = run_case("0", argv, port, a.conns, a.secs, load_extra)
            print(f"round {rnd + 1} {name:15} {r}", file=sys.stderr)
            for metric, value in (r or {}).items():
                results.setdefault(metric, {}).setdefault(name, []).append(value)
    names = list(table)
    print(f"\nmedians of {a.rounds} round(s): {a.conns} subscribers x {a.symbols} symbols x "
          f"{a.rate:g} Hz, {a.secs:g} s windows")
    print("| metric | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for metric, by in results.items():
        cells = " | ".join(f"{statistics.median(by[n]):,.3f}" if n in by else "-" for n in names)
        print(f"| {metric} | {cells} |")


if __name__ == "__main__":
    main()
