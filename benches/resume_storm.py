#!/usr/bin/env python3
"""Reconnect storm with resumption: every subscriber of one shard drops at
once and comes back together with positions one second behind.

One `surge serve` shard (history on) pinned to core 0; on core 1 a
`surge load publish` at a steady rate and `surge load subscribe --resume`
with N subscribers. Once all are live and a steady stretch has passed,
every subscriber resets its socket, stays away `--away-ms` while publishing
goes on, and all dial again at the same instant with their positions. Per
case it reports:

  all live after       the last subscriber's recovery (from the common
                       redial to a subscribe answer with recovered:true)
  p50 / p99 recovery   the spread of those recoveries
  peak handshakes      the largest surge_handshakes_in_flight seen (polled
                       every 20 ms through /metrics)
  server CPU           utime+stime (/proc/PID/stat) from the redial until
                       all are live, and per recovered subscriber; it
                       includes the fan-out to those already back, so the
                       steady fan-out's CPU per second (measured before the
                       storm) is shown beside it
  refused / evicted    upgrades refused by admission (429/503), handshakes
                       dropped past --max-handshakes-in-flight, and the
                       subscribers' failed dials that were tried again

The storm runs once per case: without admission limits (`open`), with a
global handshake rate and the tarpit (`rate`), and with a per-shard cap on
handshakes in flight (`cap`); see README "Admission control".

Usage: python3 benches/resume_storm.py [--subs 10000] [--rate 20]
       [--away-ms 1000] [--backend uring] [--cases open,rate,cap]
"""

import argparse
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SURGE = os.path.join(ROOT, "target/release/surge")
TICK = os.sysconf("SC_CLK_TCK")
TOPIC = "storm"
STEADY_MS = 3000

LIMITS = {
    # No handshake cap either (the default is 4096 per shard).
    "open": ["--max-handshakes-in-flight", "1000000"],
    # A global handshake rate: the excess is tarpitted, then told to come
    # back (429 + Retry-After).
    "rate": ["--handshake-rate", "2000", "--handshake-burst", "500", "--tarpit-ms", "200",
             "--retry-after-s", "1"],
    # A cap on handshakes in flight: past it the oldest is dropped.
    "cap": ["--max-handshakes-in-flight", "1024"],
}


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def metrics(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                pass
    return out


def total(m, prefix):
    return sum(v for k, v in m.items() if k == prefix or k.startswith(prefix + "{"))


class Peak(threading.Thread):
    """Polls the server's handshakes in flight until stopped."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port, self.peak, self.done = port, 0.0, threading.Event()

    def run(self):
        while not self.done.is_set():
            try:
                # Less one: this request's own.
                seen = total(metrics(self.port), "surge_handshakes_in_flight") - 1
                self.peak = max(self.peak, seen)
            except OSError:
                pass
            time.sleep(0.02)


def start_server(port, backend, limits, history):
    argv = ["taskset", "-c", "0", SURGE, "serve", "--shards", "1", "--backend", backend,
            "--listen", f"127.0.0.1:{port}", "--history-size", str(history),
            "--idle-timeout-ms", "0", "--max-conns-per-ip", "0"] + limits
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    deadline = time.time() + 10
    while True:
        line = proc.stderr.readline()
        if "listening on" in line:
            break
        if not line or time.time() > deadline:
            raise SystemExit(f"surge serve did not start: {line!r}")
    # Keep reading so the server never blocks on a full pipe.
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    return proc


def load(args):
    argv = ["taskset", "-c", "1", SURGE, "load"] + args
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def result(stdout):
    lines = [l for l in stdout.splitlines() if l.startswith("RESULT ")]
    if not lines:
        raise SystemExit(f"no RESULT line:\n{stdout}")
    return {k: float(v) for k, v in re.findall(r"(\w+)=([0-9.]+)", lines[-1])}


def storm(case, a, port):
    url = f"ws://127.0.0.1:{port}/hub"
    server = start_server(port, a.backend, LIMITS[case], max(1000, int(a.rate * a.away_ms / 1000) * 4))
    pid = server.pid
    secs = (STEADY_MS + a.away_ms) / 1000 + a.recover_secs
    try:
        publisher = load(["publish", "--url", url, "--topics", TOPIC, "--rate", str(a.rate),
                          "--conns", "1", "--duration", str(secs + 30)])
        time.sleep(0.5)
        subs = load(["subscribe", "--url", url, "--topics", TOPIC, "--resume", "--conns", str(a.subs),
                     "--sources", "127.0.0.2-127.0.0.41",
                     "--duration", str(secs), "--drop-after-ms", str(STEADY_MS),
                     "--drop-for-ms", str(a.away_ms), "--reconnect-delay-ms", "1000"])
        peak = Peak(port)
        marks = {}
        for line in subs.stderr:
            now, cpu = time.monotonic(), cpu_seconds(pid)
            if "clients live after" in line and "live" not in marks:
                marks["live"] = (now, cpu)
            elif line.startswith("storm:"):
                marks["drop"] = (now, cpu)
                before = metrics(port)
                # Nobody is connected during the time away: the peak is the storm's.
                time.sleep(max(0, a.away_ms / 1000 - 0.05))
                peak.start()
                marks["back"] = (time.monotonic(), cpu_seconds(pid))
            elif "clients live after" in line and "back" in marks:
                marks["relive"] = (now, cpu)
                break
        out, _ = subs.communicate(timeout=secs + 120)
        peak.done.set()
        after = metrics(port)
        publisher.kill()
        publisher.wait()
    finally:
        server.kill()
        server.wait()
    r = result(out)
    if "relive" not in marks or "drop" not in marks:
        print(f"{case}: not every subscriber came back within {a.recover_secs} s: {r}", file=sys.stderr)
    (t0, c0), (t1, c1) = marks.get("live", marks["drop"]), marks["drop"]
    steady_cpu_per_s = (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0
    cb = marks["back"][1]
    ce = marks.get("relive", (0, cb))[1]
    recovered = max(1.0, r["recovered"])

    def delta(name):
        return total(after, name) - total(before, name)

    return {
        "subscribers": a.subs,
        "all live after (ms)": r["recovery_max_ms"],
        "p50 / p99 recovery (ms)": f"{r['recovery_p50_ms']:.0f} / {r['recovery_p99_ms']:.0f}",
        "recovered / not": f"{r['recovered']:.0f} / {r['not_recovered']:.0f}",
        "gaps / dups": f"{r['gaps']:.0f} / {r['dups']:.0f}",
        "peak handshakes in flight": f"{peak.peak:.0f}",
        "server CPU, steady fan-out (ms/s)": f"{steady_cpu_per_s * 1000:.0f}",
        "server CPU, redial to all live (ms)": f"{(ce - cb) * 1000:.0f}",
        "server CPU per recovered (us)": f"{(ce - cb) * 1e6 / recovered:.0f}",
        "refused (429/503) / tarpitted": f"{delta('surge_admission_rejected_total'):.0f} / {delta('surge_admission_tarpitted_total'):.0f}",
        "handshakes evicted": f"{delta('surge_admission_handshake_evictions_total'):.0f}",
        "client retries": f"{r['retries']:.0f}",
        "replayed messages": f"{delta('surge_replayed_messages_total'):.0f}",
        "errors": f"{r['errors']:.0f}",
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--subs", type=int, default=10000)
    ap.add_argument("--rate", type=float, default=20, help="publishes per second to the topic")
    ap.add_argument("--away-ms", type=int, default=1000)
    ap.add_argument("--recover-secs", type=float, default=25, help="how long the run waits for all to come back")
    ap.add_argument("--backend", default="uring")
    ap.add_argument("--cases", default="open,rate,cap")
    ap.add_argument("--no-build", action="store_true")
    a = ap.parse_args()
    os.sched_setaffinity(0, {1})
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    rows = {}
    cases = a.cases.split(",")
    for i, case in enumerate(cases):
        rows[case] = storm(case, a, 19600 + i)
        print(f"{case}: {rows[case]}", file=sys.stderr)
    print(f"\n{a.subs} subscribers of one topic on one {a.backend} shard, {a.rate:g} msgs/s, "
          f"away {a.away_ms} ms; server on core 0, load on core 1")
    print(f"machine: {os.uname().release}, {os.cpu_count()} cores")
    print("| metric | " + " | ".join(cases) + " |")
    print("|---|" + "---:|" * len(cases))
    for metric in rows[cases[0]]:
        print(f"| {metric} | " + " | ".join(str(rows[c][metric]) for c in cases) + " |")


if __name__ == "__main__":
    main()
