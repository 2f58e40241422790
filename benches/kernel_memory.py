#!/usr/bin/env python3
"""Kernel memory per idle WebSocket connection, for tuning/CAPACITY.md.

Holds N idle connections to `surge echo --shards 1` (server on core 0, load
on core 1) and reports the change in kernel slab memory and TCP buffer
pages. Both ends of every connection are on this machine, so the kernel
delta covers two sockets per connection; the server's share is reported as
half of it (client and server TCP sockets cost the same), plus the
driver's own per-connection kernel objects, which are included in full
since the load generator (epoll) has its own.

Usage: python3 benches/kernel_memory.py [--conns 15000] [--backend uring|epoll]
"""

import argparse
import os
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SURGE = os.path.join(ROOT, "target/release/surge")


def meminfo():
    out = {}
    for line in open("/proc/meminfo"):
        k, v = line.split(":")
        out[k] = int(v.split()[0]) * 1024
    return out


def tcp_mem_pages():
    for line in open("/proc/net/sockstat"):
        if line.startswith("TCP:"):
            f = line.split()
            return int(f[f.index("mem") + 1])
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--conns", type=int, default=15000)
    ap.add_argument("--backend", default="uring")
    a = ap.parse_args()
    server = subprocess.Popen(["taskset", "-c", "0", SURGE, "echo", "--shards", "1", "--backend", a.backend,
                               "--idle-timeout-ms", "0", "--max-conns-per-ip", "0", "--listen", "127.0.0.1:19999"],
                              stderr=subprocess.PIPE, text=True)
    server.stderr.readline()
    time.sleep(0.5)
    before, tcp_before = meminfo(), tcp_mem_pages()
    rss_before = int(open(f"/proc/{server.pid}/statm").read().split()[1]) * 4096
    load = subprocess.Popen(["taskset", "-c", "1", SURGE, "load", "hold", "--url", "ws://127.0.0.1:19999/",
                             "--conns", str(a.conns), "--sources", "127.0.0.2-127.0.0.9", "--duration", "30"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in load.stderr:
        if "connections open after" in line:
            break
    time.sleep(2)
    after, tcp_after = meminfo(), tcp_mem_pages()
    rss_after = int(open(f"/proc/{server.pid}/statm").read().split()[1]) * 4096
    load.send_signal(2)
    load.communicate()
    server.kill()
    n = a.conns
    slab = after["Slab"] - before["Slab"]
    tcp = (tcp_after - tcp_before) * 4096
    print(f"backend={a.backend} conns={n}")
    print(f"server user space (RSS delta): {(rss_after - rss_before) / n:.0f} B/conn")
    print(f"kernel slab delta, both ends:  {slab / n:.0f} B/conn  (server share ~{slab / n / 2:.0f} B)")
    print(f"TCP buffer pages, both ends:   {tcp / n:.0f} B/conn")


if __name__ == "__main__":
    main()
