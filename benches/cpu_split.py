#!/usr/bin/env python3
"""Where a server's CPU goes: user space against kernel, per echoed message or
per handshake, for surge (io_uring and epoll, one shard) and fastwebsockets.

Each server runs pinned to core 0 and `surge load` to core 1; utime and stime
come from /proc/PID/stat over the measured window; medians of ROUNDS. On
loopback the sending core also runs the peer's TCP receive path, so the
kernel share is a floor no user-space change can go under.

Usage: python3 benches/cpu_split.py [--rounds 3] echo --conns 1000 --size 16
       python3 benches/cpu_split.py [--rounds 3] connect --conns 64
"""

import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import PEERS, SURGE, TICK, build  # noqa: E402

SERVERS = {
    "surge-uring": [SURGE, "echo", "--shards", "1", "--backend", "uring", "--idle-timeout-ms", "0",
                    "--max-conns-per-ip", "0"],
    "surge-epoll": [SURGE, "echo", "--shards", "1", "--backend", "epoll", "--idle-timeout-ms", "0",
                    "--max-conns-per-ip", "0"],
    "fastwebsockets": [os.path.join(PEERS, "fastwebsockets-echo")],
}


def cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK


def run(argv, port, mode):
    server = subprocess.Popen(["taskset", "-c", "0"] + argv + ["--listen", f"127.0.0.1:{port}"],
                              stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        deadline = time.time() + 10
        while "listening" not in server.stderr.readline():
            if time.time() > deadline or server.poll() is not None:
                raise SystemExit(f"{argv[0]} did not start")
        load = subprocess.Popen(["taskset", "-c", "1", SURGE, "load", *mode, "--url",
                                 f"ws://127.0.0.1:{port}/", "--duration", "5"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        before = cpu(server.pid)
        if mode[0] != "connect":
            # Count from the moment every connection is open.
            for line in load.stderr:
                if "connections open after" in line:
                    before = cpu(server.pid)
                    break
        out, _ = load.communicate(timeout=120)
        after = cpu(server.pid)
        result = dict(re.findall(r"(\w+)=([\d.]+)", out.strip().splitlines()[-1]))
        if mode[0] == "connect":
            count = float(result["handshakes"])
        else:
            count = float(result["msgs_per_s"]) * float(result["secs"])
        return ((after[0] - before[0]) * 1e6 / count, (after[1] - before[1]) * 1e6 / count)
    finally:
        server.kill()
        server.wait()


def main():
    args = sys.argv[1:]
    rounds = 3
    if args[:1] == ["--rounds"]:
        rounds, args = int(args[1]), args[2:]
    mode = args or ["echo", "--conns", "1000", "--size", "16"]
    build()
    results = {}
    port = 19950
    for _ in range(rounds):
        for name, argv in SERVERS.items():
            port += 1
            results.setdefault(name, []).append(run(argv, port, mode))
    unit = "handshake" if mode[0] == "connect" else "message"
    print(f"server CPU per {unit}, medians of {rounds} rounds: {' '.join(mode)}")
    for name, runs in results.items():
        runs.sort(key=sum)
        user, kernel = runs[len(runs) // 2]
        print(f"  {name:15} user {user:5.2f} us   kernel {kernel:5.2f} us   total {user + kernel:5.2f} us")


if __name__ == "__main__":
    main()
