// Load driver for benches/engineio.py: Engine.IO v4 sessions over raw TCP
// sockets on loopback, one keep-alive connection per session. Written on
// node:net rather than an HTTP client: it drives about 1.6 times the
// requests per second of the same loop in Python asyncio from one core.
//
//   poll            SESSIONS polling sessions, each a loop of POST one
//                   message then GET its echo: WARMUP seconds once every
//                   handshake is done, then SECS counted
//   idle-polling    SESSIONS sessions, each a handshake and then one GET the
//                   server holds; kept until SIGINT or HOLD seconds
//   idle-websocket  SESSIONS WebSocket-only sessions (transport=websocket),
//                   the open packet read, then nothing; kept the same way
//
// stderr says `N sessions open after S s` once all are set up and warm (the
// moment to start measuring the server); stdout ends with one
// `RESULT key=value ...`.
//
// usage: node benches/engineio_load.mjs MODE --port PORT [--sessions N]
//        [--secs 10] [--warmup 1] [--size 16] [--hold 60] [--sources 127.0.0.2-127.0.0.21]
import net from "node:net";
import { randomBytes } from "node:crypto";

const USAGE = "usage: engineio_load.mjs poll|idle-polling|idle-websocket --port PORT [--sessions N] " +
  "[--secs 10] [--warmup 1] [--size 16] [--hold 60] [--sources FIRST-LAST]";
const PATH = "/engine.io/?EIO=4&transport=";
const CONNECTS_IN_FLIGHT = 128; // stays under the servers' listen backlogs

function parseArgs(argv) {
  const a = { mode: argv[0], port: 0, sessions: 200, secs: 10, warmup: 1, size: 16, hold: 60, sources: "" };
  if (!["poll", "idle-polling", "idle-websocket"].includes(a.mode)) throw new Error(USAGE);
  for (let i = 1; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, "");
    if (!(key in a) || key === "mode" || i + 1 >= argv.length) throw new Error(`bad argument ${argv[i]}\n${USAGE}`);
    a[key] = key === "sources" ? argv[i + 1] : Number(argv[i + 1]);
  }
  if (!a.port) throw new Error(USAGE);
  // One descriptor per session; 20,000 per process at most.
  if (a.sessions > 19000) throw new Error("at most 19000 sessions");
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

// Just enough HTTP/1.1 response parsing for a keep-alive connection:
// Content-Length or chunked bodies, responses split or joined across reads.
// Calls onResponse(status, body) for each; returns the unparsed rest;
// throws on what it cannot parse.
function parseResponses(buf, onResponse) {
  for (;;) {
    const end = buf.indexOf("\r\n\r\n");
    if (end < 0) return buf;
    const head = buf.toString("latin1", 0, end).toLowerCase();
    const status = Number(head.slice(9, 12));
    if (!head.startsWith("http/1.1 ") || !(status >= 100)) throw new Error(`not an HTTP response: ${head.slice(0, 40)}`);
    let body, rest;
    if (head.includes("transfer-encoding: chunked")) {
      const parts = [];
      let pos = end + 4;
      for (;;) {
        const eol = buf.indexOf("\r\n", pos);
        if (eol < 0) return buf;
        const size = parseInt(buf.toString("latin1", pos, eol), 16);
        if (!(size >= 0)) throw new Error(`bad chunk size in ${head.split("\r\n")[0]}`);
        if (buf.length < eol + 2 + size + 2) return buf;
        parts.push(buf.subarray(eol + 2, eol + 2 + size));
        pos = eol + 2 + size + 2;
        if (size === 0) break;
      }
      body = Buffer.concat(parts).toString("latin1");
      rest = pos;
    } else {
      const m = /^content-length:\s*(\d+)/m.exec(head);
      const length = m ? Number(m[1]) : 0;
      if (buf.length < end + 4 + length) return buf;
      body = buf.toString("latin1", end + 4, end + 4 + length);
      rest = end + 4 + length;
    }
    buf = buf.subarray(rest);
    if (onResponse(status, body) === false) return buf;
  }
}

const stats = { open: 0, msgs: 0, requests: 0, errors: 0, counting: false, firstError: "" };
function error(why) {
  stats.errors++;
  if (!stats.firstError) stats.firstError = why;
}

// A polling session: handshake, then (once go() is called) POST a message,
// GET its echo, again. A ping (`2`) in a GET is answered with `3` in the
// next POST, so runs past pingInterval still hold.
function pollSession(sock, host, message, idle, ready) {
  let state = "handshake", get, postHead, outstanding = 0, pong = false, buf = Buffer.alloc(0);
  const fail = (why) => {
    if (state === "done") return;
    state = "done";
    error(why);
    sock.destroy();
    ready(null);
  };
  const send = () => {
    if (pong || !outstanding) {
      let body = pong ? "3" : "";
      if (!outstanding) {
        body += (body ? "\x1e" : "") + message;
        outstanding++;
      }
      pong = false;
      sock.write(`${postHead}Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
      state = "post";
    } else {
      sock.write(get);
      state = "poll";
    }
  };
  const onResponse = (status, body) => {
    if (state === "done") return false;
    if (status !== 200) return fail(`${state}: HTTP ${status} ${body.slice(0, 80)}`), false;
    if (state === "handshake") {
      const q = `${PATH}polling&sid=${JSON.parse(body.slice(1)).sid}`;
      get = `GET ${q} HTTP/1.1\r\nHost: ${host}\r\n\r\n`;
      postHead = `POST ${q} HTTP/1.1\r\nHost: ${host}\r\nContent-Type: text/plain;charset=UTF-8\r\n`;
      stats.open++;
      if (idle) {
        state = "held";
        sock.write(get);
        ready(null);
      } else {
        state = "ready";
        ready(() => state === "ready" && send());
      }
    } else if (state === "held") {
      return fail(`held GET answered: ${body.slice(0, 80)}`), false;
    } else if (state === "post") {
      if (body !== "ok") return fail(`POST answered ${body.slice(0, 80)}`), false;
      if (stats.counting) stats.requests++;
      sock.write(get);
      state = "poll";
    } else if (state === "poll") {
      if (stats.counting) stats.requests++;
      for (const packet of body.split("\x1e")) {
        if (packet[0] === "4") {
          outstanding--;
          if (stats.counting) stats.msgs++;
        } else if (packet === "2") {
          pong = true;
        } else if (packet !== "6") {
          return fail(`GET answered ${packet.slice(0, 80)}`), false;
        }
      }
      send();
    }
    return true;
  };
  sock.on("connect", () => sock.write(`GET ${PATH}polling HTTP/1.1\r\nHost: ${host}\r\n\r\n`));
  sock.on("data", (d) => {
    try {
      buf = parseResponses(buf.length ? Buffer.concat([buf, d]) : d, onResponse);
    } catch (e) {
      fail(`${state}: ${e.message}`);
    }
  });
  sock.on("error", (e) => fail(`${state}: ${e.message}`));
  sock.on("close", () => fail(`${state}: connection closed`));
  return () => { state = "done"; sock.destroy(); };
}

// transport=websocket without a sid: the 101, the open packet, then idle
// (a server ping is answered with a masked `3`).
function webSocketSession(sock, host, ready) {
  let state = "upgrade", buf = Buffer.alloc(0);
  const fail = (why) => {
    if (state === "done") return;
    state = "done";
    error(why);
    sock.destroy();
    ready(null);
  };
  sock.on("connect", () => sock.write(
    `GET ${PATH}websocket HTTP/1.1\r\nHost: ${host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    `Sec-WebSocket-Key: ${randomBytes(16).toString("base64")}\r\nSec-WebSocket-Version: 13\r\n\r\n`));
  sock.on("data", (d) => {
    buf = buf.length ? Buffer.concat([buf, d]) : d;
    if (state === "upgrade") {
      const end = buf.indexOf("\r\n\r\n");
      if (end < 0) return;
      if (!buf.toString("latin1", 0, 12).startsWith("HTTP/1.1 101")) return fail(`upgrade answered ${buf.toString("latin1", 0, 80)}`);
      buf = buf.subarray(end + 4);
      state = "open";
    }
    while (buf.length >= 2) {
      let length = buf[1] & 0x7f, start = 2;
      if (length === 126) [length, start] = [buf.readUInt16BE(2), 4];
      else if (length === 127) [length, start] = [Number(buf.readBigUInt64BE(2)), 10];
      if (buf.length < start + length) return;
      const opcode = buf[0] & 0x0f, payload = buf.toString("latin1", start, start + length);
      buf = buf.subarray(start + length);
      if (opcode === 8) return fail("closed by the server");
      if (state === "open") {
        if (!payload.startsWith("0{")) return fail(`first frame ${payload.slice(0, 80)}`);
        state = "idle";
        stats.open++;
        ready(null);
      } else if (payload === "2") {
        sock.write(Buffer.from([0x81, 0x81, 0, 0, 0, 0, 0x33]));
      }
    }
  });
  sock.on("error", (e) => fail(`${state}: ${e.message}`));
  sock.on("close", () => fail(`${state}: connection closed`));
  return () => { state = "done"; sock.destroy(); };
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
  const message = "4" + ("hello" + "x".repeat(a.size)).slice(0, Math.max(a.size - 1, 0));
  const sources = addresses(a.sources);
  const started = process.hrtime.bigint();
  const seconds = (since) => Number(process.hrtime.bigint() - since) / 1e9;
  const starts = [], stops = [];

  let next = 0;
  const worker = async () => {
    while (next < a.sessions) {
      const i = next++;
      await new Promise((resolve) => {
        const sock = net.connect({ port: a.port, host: "127.0.0.1", localAddress: sources[i % sources.length] });
        sock.setNoDelay(true);
        const timer = setTimeout(() => { error("session setup took over 10 s"); sock.destroy(); resolve(); }, 10000);
        const ready = (start) => {
          clearTimeout(timer);
          if (start) starts.push(start);
          resolve();
        };
        stops.push(a.mode === "idle-websocket" ? webSocketSession(sock, host, ready)
          : pollSession(sock, host, message, a.mode === "idle-polling", ready));
      });
    }
  };
  await Promise.all(Array.from({ length: Math.min(CONNECTS_IN_FLIGHT, a.sessions) }, worker));
  const opened = seconds(started);
  if (a.mode === "poll") {
    // Uncounted rounds first, so that a JIT-compiled server is measured warm.
    starts.forEach((start) => start());
    await new Promise((resolve) => setTimeout(resolve, a.warmup * 1000));
  }
  console.error(`${stats.open} sessions open after ${opened.toFixed(2)} s` +
    (a.mode === "poll" ? `, warmed up for ${a.warmup} s` : "") +
    (stats.errors ? `, ${stats.errors} failed: ${stats.firstError}` : ""));

  const finish = (line) => {
    process.stdout.write(line + "\n", () => {
      stops.forEach((stop) => stop());
      if (stats.firstError) console.error(`first error: ${stats.firstError}`);
      process.exit(0);
    });
  };
  if (a.mode === "poll") {
    const t0 = process.hrtime.bigint(), cpu0 = process.cpuUsage();
    stats.counting = true;
    setTimeout(() => {
      stats.counting = false;
      const secs = seconds(t0), cpu = process.cpuUsage(cpu0);
      // Near 1.0 the driver, not the server, sets the pace.
      const busy = (cpu.user + cpu.system) / 1e6 / secs;
      finish(`RESULT sessions=${stats.open} msgs=${stats.msgs} requests=${stats.requests} secs=${secs.toFixed(3)} ` +
        `msgs_per_s=${(stats.msgs / secs).toFixed(1)} requests_per_s=${(stats.requests / secs).toFixed(1)} ` +
        `driver_busy=${busy.toFixed(2)} errors=${stats.errors}`);
    }, a.secs * 1000);
  } else {
    const done = () => finish(`RESULT sessions=${stats.open} errors=${stats.errors}`);
    process.on("SIGINT", done);
    setTimeout(done, a.hold * 1000);
  }
}

main();
