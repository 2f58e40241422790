// Load driver for benches/socketio.py: Socket.IO v5 clients over raw TCP
// sockets on loopback, WebSocket transport only (no polling first), the
// Engine.IO and Socket.IO framing written by hand. socket.io-client costs
// tens of kilobytes and a share of a core per client; this costs a socket
// and a few closures, so one core holds 10,000 clients.
//
// Each client: GET /socket.io/?EIO=4&transport=websocket, the 101, the
// Engine.IO open packet, then `40` (CONNECT to "/") and the server's
// `40{"sid":…}`. A server ping (`2`) is answered `3`.
//
// Once every client is connected (or has failed), stderr gets one line
//   CONNECTED clients=N errors=E first_ms=T0 last_ms=T1
// (T0: the first TCP connect started, T1: the last CONNECT answered, both
// on the machine's clock in ms, so that two drivers' lines can be joined;
// cpu_ms: the driver's CPU time so far, its start included).
// Then a line `go` on stdin starts the count: every client counts the
// `tick` events it receives, and with --publisher client 0 sends
// `42["broadcast",P]` RATE times a second for SECS seconds. The driver
// ends once each client has EXPECT ticks, or SECS + DRAIN seconds after
// `go`, or on `stop`, stdin closing, SIGINT or HOLD seconds; stdout then
// gets one `RESULT key=value ...`.
//
// For a server whose event names differ: --join EVENT sends `42["EVENT","all"]`
// after the CONNECT (for a server that does not put every socket in room
// "all" itself), --publish PREFIX replaces `["broadcast",` (P and `]` follow),
// --tick EVENT the event counted.
//
// usage: node benches/socketio_load.mjs --port PORT [--clients 5000]
//        [--sources 127.0.0.2-127.0.0.41] [--publisher 0|1] [--rate 10]
//        [--secs 5] [--size 16] [--expect 0] [--drain 10] [--hold 120]
//        [--in-flight 128] [--join EVENT] [--publish '["broadcast",'] [--tick tick]
import net from "node:net";
import { randomBytes } from "node:crypto";
import { createInterface } from "node:readline";

const USAGE = "usage: socketio_load.mjs --port PORT [--clients N] [--sources FIRST-LAST] [--publisher 0|1] " +
  "[--rate 10] [--secs 5] [--size 16] [--expect 0] [--drain 10] [--hold 120] [--in-flight 128] [--join EVENT] [--publish PREFIX] [--tick EVENT]";
const SETUP_LIMIT_MS = 10000;

function parseArgs(argv) {
  const a = { port: 0, clients: 5000, sources: "", publisher: 0, rate: 10, secs: 5, size: 16, expect: 0, drain: 10, hold: 120,
    "in-flight": 128, // stays under the servers' listen backlogs
    join: "", publish: '["broadcast",', tick: "tick" };
  const strings = ["sources", "join", "publish", "tick"];
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, "");
    if (!(key in a) || i + 1 >= argv.length) throw new Error(`bad argument ${argv[i]}\n${USAGE}`);
    a[key] = strings.includes(key) ? argv[i + 1] : Number(argv[i + 1]);
  }
  if (!a.port) throw new Error(USAGE);
  // One descriptor per client; 20,000 per process at most.
  if (a.clients > 19000) throw new Error("at most 19000 clients");
  return a;
}

function addresses(spec) {
  if (!spec) return [undefined];
  const toInt = (ip) => ip.split(".").reduce((n, b) => n * 256 + Number(b), 0);
  const [first, last = first] = spec.split("-");
  const out = [];
  for (let n = toInt(first); n <= toInt(last); n++) out.push([24, 16, 8, 0].map((s) => (n >>> s) & 255).join("."));
  return out;
}

const now = () => performance.timeOrigin + performance.now();

// A client text frame; the zero mask key leaves the payload as it is.
function frame(text) {
  const payload = Buffer.from(text);
  const n = payload.length;
  const head = n < 126 ? Buffer.from([0x81, 0x80 | n, 0, 0, 0, 0])
    : Buffer.from([0x81, 0xfe, n >> 8, n & 255, 0, 0, 0, 0]);
  return Buffer.concat([head, payload]);
}
const CONNECT = frame("40"), PONG = frame("3");

const stats = { connected: 0, errors: 0, firstError: "", ticks: 0, lastTickMs: 0, counting: false };
function error(why) {
  stats.errors++;
  if (!stats.firstError) stats.firstError = why;
}

let onAllTicks = () => {};
let expectTotal = Infinity;

function client(sock, host, options, ready) {
  let state = "upgrade", buf = null, ticks = 0;
  const fail = (why) => {
    if (state === "done") return;
    const before = state;
    state = "done";
    error(`${before}: ${why}`);
    sock.destroy();
    ready(false);
  };
  sock.on("connect", () => sock.write(
    `GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: ${host}\r\nUpgrade: websocket\r\n` +
    `Connection: Upgrade\r\nSec-WebSocket-Key: ${randomBytes(16).toString("base64")}\r\nSec-WebSocket-Version: 13\r\n\r\n`));
  sock.on("data", (d) => {
    buf = buf ? Buffer.concat([buf, d]) : d;
    if (state === "upgrade") {
      const end = buf.indexOf("\r\n\r\n");
      if (end < 0) return;
      if (!buf.toString("latin1", 0, 12).startsWith("HTTP/1.1 101")) return fail(`upgrade answered ${buf.toString("latin1", 0, 80)}`);
      buf = buf.subarray(end + 4);
      state = "open";
    }
    let pos = 0;
    while (buf.length - pos >= 2) {
      let length = buf[pos + 1] & 0x7f, start = pos + 2;
      if (length === 126) {
        if (buf.length - pos < 4) break;
        [length, start] = [buf.readUInt16BE(pos + 2), pos + 4];
      } else if (length === 127) {
        if (buf.length - pos < 10) break;
        [length, start] = [Number(buf.readBigUInt64BE(pos + 2)), pos + 10];
      }
      if (buf.length < start + length) break;
      const opcode = buf[pos] & 0x0f;
      pos = start + length;
      if (opcode === 8) return fail("closed by the server");
      // Only ticks are counted in the hot path; everything else is rare.
      if (state === "connected" && buf.toString("latin1", start, start + options.tickHead.length) === options.tickHead) {
        if (stats.counting) {
          ticks++;
          stats.ticks++;
          stats.lastTickMs = now();
          if (stats.ticks >= expectTotal) onAllTicks();
        }
        continue;
      }
      const text = buf.toString("latin1", start, start + length);
      if (text === "2") {
        sock.write(PONG);
      } else if (state === "open") {
        if (!text.startsWith("0{")) return fail(`first frame ${text.slice(0, 80)}`);
        state = "connecting";
        sock.write(CONNECT);
      } else if (state === "connecting") {
        if (!text.startsWith('40{"sid":')) return fail(`CONNECT answered ${text.slice(0, 80)}`);
        if (options.join) sock.write(options.join);
        state = "connected";
        stats.connected++;
        ready(true);
      }
    }
    buf = pos === buf.length ? null : buf.subarray(pos);
  });
  sock.on("error", (e) => fail(e.message));
  sock.on("close", () => fail("connection closed"));
  return {
    // A reset rather than a FIN: no TIME_WAIT left on the client ports, which
    // would make every later bind() to the same addresses slower.
    stop: () => { state = "done"; sock.resetAndDestroy(); },
    send: (data) => sock.write(data),
    ticks: () => ticks,
  };
}

async function main() {
  let a;
  try {
    a = parseArgs(process.argv.slice(2));
  } catch (e) {
    console.error(e.message);
    process.exit(2);
  }
  const host = `127.0.0.1:${a.port}`;
  const sources = addresses(a.sources);
  const options = { tickHead: `42["${a.tick}"`, join: a.join ? frame(`42["${a.join}","all"]`) : null };
  const clients = [];
  let lastConnectedMs = 0;
  const firstMs = now();

  let next = 0;
  const worker = async () => {
    while (next < a.clients) {
      const i = next++;
      await new Promise((resolve) => {
        const sock = net.connect({ port: a.port, host: "127.0.0.1", localAddress: sources[i % sources.length] });
        sock.setNoDelay(true);
        const timer = setTimeout(() => { error("setup took over 10 s"); sock.destroy(); resolve(); }, SETUP_LIMIT_MS);
        clients.push(client(sock, host, options, (ok) => {
          clearTimeout(timer);
          if (ok) lastConnectedMs = now();
          resolve();
        }));
      });
    }
  };
  await Promise.all(Array.from({ length: Math.min(a["in-flight"], a.clients) }, worker));
  let finished = false, goMs = 0, firstSendMs = 0, sent = 0, cpu0 = process.cpuUsage();
  console.error(`CONNECTED clients=${stats.connected} errors=${stats.errors} first_ms=${firstMs.toFixed(1)} ` +
    `last_ms=${lastConnectedMs.toFixed(1)} cpu_ms=${((cpu0.user + cpu0.system) / 1000).toFixed(1)}` + (stats.firstError ? ` first_error=${JSON.stringify(stats.firstError)}` : ""));

  const timers = [];
  const finish = () => {
    if (finished) return;
    finished = true;
    timers.forEach(clearTimeout);
    const cpu = process.cpuUsage(cpu0), secs = goMs ? (now() - goMs) / 1000 : 0;
    const short = a.expect ? clients.filter((c) => c.ticks() < a.expect).length : 0;
    process.stdout.write(`RESULT clients=${stats.connected} errors=${stats.errors} ticks=${stats.ticks} ` +
      `short_clients=${short} sent=${sent} first_send_ms=${firstSendMs.toFixed(1)} last_tick_ms=${stats.lastTickMs.toFixed(1)} ` +
      `driver_busy=${secs ? ((cpu.user + cpu.system) / 1e6 / secs).toFixed(2) : 0}\n`, () => {
      clients.forEach((c) => c.stop());
      if (stats.firstError) console.error(`first error: ${stats.firstError}`);
      process.exit(0);
    });
  };
  const go = () => {
    if (goMs) return;
    goMs = now();
    cpu0 = process.cpuUsage();
    stats.counting = true;
    if (a.expect) {
      expectTotal = a.expect * stats.connected;
      onAllTicks = finish;
    }
    timers.push(setTimeout(finish, (a.secs + a.drain) * 1000));
    if (a.publisher && clients.length) {
      const total = Math.round(a.rate * a.secs);
      const message = frame(`42${a.publish}"${"x".repeat(a.size)}"]`);
      firstSendMs = now();
      // Sends what is due by the clock, so a late timer catches up.
      const publish = () => {
        const due = Math.min(total, Math.floor(((now() - firstSendMs) / 1000) * a.rate) + 1);
        for (; sent < due; sent++) clients[0].send(message);
        if (sent < total) timers.push(setTimeout(publish, Math.max(1, 1000 / a.rate / 2)));
      };
      publish();
    }
  };
  const rl = createInterface({ input: process.stdin });
  rl.on("line", (line) => (line.trim() === "go" ? go() : line.trim() === "stop" && finish()));
  rl.on("close", finish);
  process.on("SIGINT", finish);
  timers.push(setTimeout(finish, a.hold * 1000));
}

main();
