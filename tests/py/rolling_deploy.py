"""Hub subscribers and a publisher riding out a rolling deploy of two surge
nodes that share Redis (driven by tests/rolling_deploy.rs).

Each subscriber holds one topic on one node; when its connection ends it
connects to the other node and resubscribes with `since` (its last
position), the way clients/js/surge.js resumes. The publisher publishes
RATE messages a second over TOPICS topics, through the node the driver
names on stdin (`via 0`, `via 1`); `stop` ends the publishing, and once
every subscriber holds every message (or 15 s passed) one `RESULT {...}`
line says what each got: gaps, duplicates, failed resumes, recovery times.

Usage: rolling_deploy.py HOST:PORT,HOST:PORT TOPICS SUBSCRIBERS RATE
"""

import asyncio
import json
import random
import resource
import sys
import time

import websockets

CLOSED = (websockets.ConnectionClosed, OSError, asyncio.TimeoutError,
          websockets.InvalidHandshake, websockets.InvalidURI)


class Subscriber:
    def __init__(self, index, topic, node):
        self.index = index
        self.topic = topic
        self.node = node
        self.epoch = None
        self.offset = None
        self.data = []
        self.gaps = 0
        self.dups = 0
        self.epoch_changes = 0
        self.failed = []
        self.recovery_ms = []
        self.lost_at = None
        self.ready = asyncio.Event()


async def subscriber(s, nodes, done):
    while not done.is_set():
        try:
            async with websockets.connect(
                f"ws://{nodes[s.node]}/hub", open_timeout=5, ping_interval=None,
                max_queue=None, compression=None,
            ) as ws:
                request = {"op": "subscribe", "topics": [s.topic]}
                if s.epoch is not None:
                    request["since"] = {s.topic: {"epoch": s.epoch, "offset": s.offset}}
                await ws.send(json.dumps(request))
                answer = json.loads(await asyncio.wait_for(ws.recv(), 5))
                if answer.get("op") != "subscribed":
                    raise SystemExit(f"subscriber {s.index}: {answer}")
                position = answer["positions"][s.topic]
                if s.epoch is None:
                    s.epoch, s.offset = position["epoch"], position["offset"]
                    s.ready.set()
                elif answer["recovered"][s.topic]:
                    s.recovery_ms.append((time.monotonic() - s.lost_at) * 1000)
                else:
                    s.failed.append(answer.get("reasons", {}).get(s.topic))
                s.lost_at = None
                async for raw in ws:
                    m = json.loads(raw)
                    if "op" in m:
                        continue
                    epoch, offset = m["epoch"], m["offset"]
                    if epoch != s.epoch:
                        s.epoch_changes += 1
                    elif offset <= s.offset:
                        s.dups += 1
                        continue
                    elif offset != s.offset + 1:
                        s.gaps += offset - s.offset - 1
                    s.epoch, s.offset = epoch, offset
                    s.data.append(m["data"])
        except CLOSED:
            pass
        if done.is_set():
            return
        if s.lost_at is None:
            s.lost_at = time.monotonic()
        # The node it was on is going away: the other one.
        s.node = 1 - s.node
        await asyncio.sleep(random.uniform(0, 0.02))


class Publishers:
    """One connection to each node, kept open (reconnecting) throughout."""

    def __init__(self, nodes):
        self.nodes = nodes
        self.conns = [None, None]

    async def keep(self, i, done):
        while not done.is_set():
            try:
                async with websockets.connect(
                    f"ws://{self.nodes[i]}/hub", open_timeout=5, ping_interval=None,
                    compression=None,
                ) as ws:
                    self.conns[i] = ws
                    async for _ in ws:
                        pass
            except CLOSED:
                pass
            self.conns[i] = None
            await asyncio.sleep(0.05)

    async def publish(self, via, topic, data):
        """Whether it went out on node `via`'s connection."""
        ws = self.conns[via]
        if ws is None:
            return False
        try:
            await ws.send(json.dumps({"op": "publish", "topic": topic, "data": data}))
            return True
        except CLOSED:
            return False


async def main(nodes, topics, count, rate):
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 8192 if hard == resource.RLIM_INFINITY else min(hard, 8192)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    names = [f"t{i}" for i in range(topics)]
    done = asyncio.Event()
    stopping = asyncio.Event()
    state = {"via": 0}
    pubs = Publishers(nodes)
    tasks = [asyncio.create_task(pubs.keep(i, done)) for i in range(2)]
    while None in pubs.conns:
        await asyncio.sleep(0.01)
    # Every topic exists in Redis before anyone subscribes, so the first
    # positions subscribers hear are Redis's.
    for name in names:
        await pubs.publish(0, name, 0)
    await asyncio.sleep(0.5)
    subs = [Subscriber(i, names[i % topics], i % 2) for i in range(count)]
    tasks += [asyncio.create_task(subscriber(s, nodes, done)) for s in subs]
    await asyncio.wait_for(asyncio.gather(*(s.ready.wait() for s in subs)), 30)
    print("ready", flush=True)

    async def commands():
        loop = asyncio.get_running_loop()
        while True:
            line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
            if line.startswith("via "):
                state["via"] = int(line[4:])
            elif line in ("stop", ""):
                stopping.set()
                return

    tasks.append(asyncio.create_task(commands()))
    published = {name: 0 for name in names}
    refused = 0
    started = time.monotonic()
    sent = 0
    while not stopping.is_set():
        due = int((time.monotonic() - started) * rate)
        while sent < due:
            name = names[sent % topics]
            if await pubs.publish(state["via"], name, published[name] + 1):
                published[name] += 1
            else:
                refused += 1
            sent += 1
        await asyncio.sleep(0.005)
    total = sum(published.values())
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if all(len(s.data) >= published[s.topic] for s in subs):
            break
        await asyncio.sleep(0.1)
    done.set()
    missing = 0
    wrong = 0
    for s in subs:
        want = set(range(1, published[s.topic] + 1))
        got = set(s.data)
        missing += len(want - got)
        wrong += len(got - want)
    times = sorted(t for s in subs for t in s.recovery_ms)

    def pct(p):
        return round(times[min(len(times) - 1, int(len(times) * p))], 1) if times else None

    result = {
        "published": total,
        "refused": refused,
        "subscribers": len(subs),
        "delivered": sum(len(s.data) for s in subs),
        "gaps": sum(s.gaps for s in subs),
        "duplicates": sum(s.dups for s in subs),
        "missing": missing,
        "unexpected": wrong,
        "epoch_changes": sum(s.epoch_changes for s in subs),
        "recovered": len(times),
        "failed": [r for s in subs for r in s.failed],
        "recovery_ms_p50": pct(0.5),
        "recovery_ms_p99": pct(0.99),
        "recovery_ms_max": times[-1] if times else None,
    }
    print("RESULT " + json.dumps(result), flush=True)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1].split(","), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
