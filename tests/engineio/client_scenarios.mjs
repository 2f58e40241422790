// Named scenarios run with the stock engine.io-client (in Node) against an
// Engine.IO v4 echo server (one that sends every message back).
//
//   node client_scenarios.mjs URL SCENARIO...     (URL like http://127.0.0.1:PORT)
//
// Prints one JSON line per scenario ({"scenario", "ok", ...details}) and exits
// 1 if any failed, 2 on bad arguments. Every scenario is bounded in time: a
// timeout fails it. Timing expectations come from the server's open packet
// (pingInterval, pingTimeout, maxPayload), never from constants here.
import { request } from "node:http";
import { Socket } from "engine.io-client";

const ENGINE_PATH = "/engine.io/";

class ScenarioError extends Error {
  constructor(message, details = {}) {
    super(message);
    this.details = details;
  }
}

function check(condition, message, details) {
  if (!condition) throw new ScenarioError(message, details);
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// Settles with the promise, or rejects once `ms` have passed.
function within(ms, what, promise) {
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new ScenarioError(`timed out after ${ms} ms ${what}`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

// A stock client socket whose events are recorded, so a scenario can await
// them in order and still see everything that happened on failure.
class Client {
  constructor(url, options) {
    this.messages = [];
    this.pings = 0;
    this.closed = null;
    this.handshake = null;
    this.upgraded = false;
    this.waiters = [];
    this.socket = new Socket(url, { path: ENGINE_PATH, ...options });
    this.socket.on("handshake", (data) => {
      this.handshake = data;
      this.wake();
    });
    this.socket.on("open", () => this.wake());
    this.socket.on("message", (data) => {
      this.messages.push(data);
      this.wake();
    });
    this.socket.on("ping", () => {
      this.pings += 1;
      this.wake();
    });
    this.socket.on("upgrade", () => {
      this.upgraded = true;
      this.wake();
    });
    this.socket.on("close", (reason, description) => {
      this.closed = { reason, description: describe(description) };
      this.wake();
    });
    this.socket.on("error", () => {});
  }

  wake() {
    for (const waiter of this.waiters.splice(0)) waiter();
  }

  // Resolves when `predicate()` holds; fails early if the socket closes first
  // (unless the predicate is about the close itself).
  until(predicate, ms, what) {
    return within(
      ms,
      what,
      new Promise((resolve, reject) => {
        const test = () => {
          let value;
          try {
            value = predicate();
          } catch (err) {
            reject(err);
            return;
          }
          if (value) resolve(value);
          else if (this.closed) reject(new ScenarioError(`closed (${this.closed.reason}) ${what}`, { closed: this.closed }));
          else this.waiters.push(test);
        };
        test();
      }),
    );
  }

  async open(ms = 5000) {
    await this.until(() => this.socket.readyState === "open" && this.handshake, ms, "waiting for open");
    return this.handshake;
  }

  transport() {
    return this.socket.transport && this.socket.transport.name;
  }

  close() {
    this.socket.close();
  }
}

function describe(description) {
  if (description === undefined || description === null) return null;
  if (description instanceof Error) return description.message;
  if (typeof description === "object") {
    const out = {};
    for (const key of ["message", "description", "type", "context"]) {
      if (description[key] !== undefined) out[key] = describe(description[key]);
    }
    if (description.context && typeof description.context === "object") {
      out.context = { status: description.context.status, responseText: description.context.responseText };
    }
    return out;
  }
  return String(description);
}

function toBuffer(data) {
  if (Buffer.isBuffer(data)) return data;
  if (data instanceof ArrayBuffer) return Buffer.from(data);
  if (ArrayBuffer.isView(data)) return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  return null;
}

function sameMessage(sent, got) {
  // engine.io-parser decodes the bare packet "4" (an empty message) with no
  // data at all, so the stock client delivers an echoed "" as undefined.
  if (sent === "") return got === "" || got === undefined;
  if (typeof sent === "string") return got === sent;
  const bytes = toBuffer(got);
  return bytes !== null && Buffer.compare(bytes, toBuffer(sent)) === 0;
}

function summarize(data) {
  if (typeof data === "string") return data.length > 40 ? `${data.slice(0, 40)}... (${data.length} chars)` : data;
  const bytes = toBuffer(data);
  return bytes ? `<binary ${bytes.length} bytes>` : `<${typeof data}>`;
}

// Sends `payloads` back to back and checks each is echoed once, in order,
// with its kind (text or binary) kept.
async function echoInOrder(client, payloads, ms) {
  const start = client.messages.length;
  for (const payload of payloads) client.socket.send(payload);
  await client.until(() => client.messages.length >= start + payloads.length, ms, `waiting for ${payloads.length} echoes`);
  const echoed = client.messages.slice(start);
  payloads.forEach((sent, i) => {
    check(sameMessage(sent, echoed[i]), `echo ${i} differs`, { sent: summarize(sent), got: summarize(echoed[i]) });
  });
  return echoed.length;
}

function mixedPayloads() {
  return [
    "hello",
    Buffer.from([1, 2, 3, 4]),
    "é€ unicode 🙂",
    Buffer.from([0, 0x1e, 0xff, 0x34]),
    "",
    ...Array.from({ length: 10 }, (_, i) => `ordered-${i}`),
    Buffer.from("binary tail"),
  ];
}

async function echoOverOnly(url, transport) {
  const client = new Client(url, { transports: [transport] });
  try {
    const handshake = await client.open();
    check(client.transport() === transport, "unexpected transport", { transport: client.transport() });
    const expectedUpgrades = transport === "polling" ? ["websocket"] : [];
    check(
      JSON.stringify(handshake.upgrades) === JSON.stringify(expectedUpgrades),
      "open packet lists unexpected upgrades",
      { upgrades: handshake.upgrades },
    );
    const echoed = await echoInOrder(client, mixedPayloads(), 5000);
    check(client.transport() === transport, "transport changed", { transport: client.transport() });
    return { transport, echoed, sid: handshake.sid.length > 0 };
  } finally {
    client.close();
  }
}

// Messages go out every few milliseconds from open until well after the
// upgrade, so some are sent over polling, some while the upgrade is under way
// (the client buffers them) and some over the WebSocket.
async function upgrade(url) {
  const client = new Client(url, {});
  const sent = [];
  let sentAtUpgrade = null;
  let timer = null;
  try {
    await client.open();
    check(client.transport() === "polling", "default client did not start on polling", { transport: client.transport() });
    const afterUpgrade = 30;
    const done = new Promise((resolve) => {
      let next = 0;
      const tick = () => {
        const message = `seq-${next++}`;
        sent.push(message);
        client.socket.send(message);
        if (client.upgraded && sentAtUpgrade === null) sentAtUpgrade = sent.length;
        if (sentAtUpgrade !== null && sent.length >= sentAtUpgrade + afterUpgrade) {
          clearInterval(timer);
          resolve();
        }
      };
      tick(); // at least one message leaves over polling, however fast the upgrade
      timer = setInterval(tick, 5);
    });
    await client.until(() => client.upgraded, 5000, "waiting for the upgrade");
    await within(5000, "sending after the upgrade", done);
    await client.until(() => client.messages.length >= sent.length, 5000, `waiting for ${sent.length} echoes`);
    await sleep(100); // a duplicate would arrive now
    check(client.messages.length === sent.length, "echo count differs", { sent: sent.length, echoed: client.messages.length });
    const firstWrong = sent.findIndex((message, i) => client.messages[i] !== message);
    check(firstWrong === -1, "echoes out of order or altered", {
      index: firstWrong,
      sent: sent[firstWrong],
      got: client.messages[firstWrong],
    });
    check(client.transport() === "websocket", "did not end on websocket", { transport: client.transport() });
    return { sent: sent.length, sent_before_upgrade: sentAtUpgrade, echoed: client.messages.length, transport: client.transport() };
  } finally {
    clearInterval(timer);
    client.close();
  }
}

async function heartbeatOver(url, transport) {
  const client = new Client(url, { transports: [transport] });
  try {
    const { pingInterval, pingTimeout } = await client.open();
    const stay = Math.round(3.5 * pingInterval);
    const opened = Date.now();
    await client.until(() => client.pings >= 3, stay + pingTimeout + 2000, "waiting for 3 pings");
    const remaining = stay - (Date.now() - opened);
    if (remaining > 0) await sleep(remaining);
    check(client.closed === null, "closed while answering pings", { closed: client.closed });
    check(client.socket.readyState === "open", "not open", { readyState: client.socket.readyState });
    // Still usable after the heartbeats.
    await echoInOrder(client, ["after-heartbeat"], pingInterval + pingTimeout + 2000);
    return { transport, pingInterval, pingTimeout, open_ms: Date.now() - opened, pings: client.pings };
  } finally {
    client.close();
  }
}

async function heartbeat(url) {
  return { sessions: [await heartbeatOver(url, "polling"), await heartbeatOver(url, "websocket")] };
}

// A raw HTTP request on its own connection: resolves with status, headers
// and body text, or rejects on a socket error or after `ms`.
function http(url, { method = "GET", body = null, headers = {}, ms = 5000 } = {}) {
  return within(
    ms,
    `on ${method} ${url}`,
    new Promise((resolve, reject) => {
      const req = request(url, { method, headers, agent: false }, (res) => {
        const chunks = [];
        res.on("data", (chunk) => chunks.push(chunk));
        res.on("end", () =>
          resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString("utf8") }),
        );
        res.on("error", reject);
      });
      req.on("error", reject);
      // Past the deadline the request is abandoned: free its socket too.
      req.setTimeout(ms, () => req.destroy(new ScenarioError(`no answer within ${ms} ms on ${method} ${url}`)));
      req.end(body);
    }),
  );
}

function pollingUrl(base, sid) {
  const url = new URL(ENGINE_PATH, base);
  url.searchParams.set("EIO", "4");
  url.searchParams.set("transport", "polling");
  if (sid) url.searchParams.set("sid", sid);
  return url.toString();
}

async function rawHandshake(base) {
  const res = await http(pollingUrl(base));
  check(res.status === 200 && res.body.startsWith("0"), "polling handshake failed", res);
  return JSON.parse(res.body.slice(1));
}

// A raw polling client that reads the server's pings and never answers them:
// the server must drop the session about pingInterval + pingTimeout after the
// handshake. Each GET is held until the server has a packet for it.
async function pingTimeout(base) {
  const opened = Date.now();
  const { sid, pingInterval, pingTimeout: timeout } = await rawHandshake(base);
  const expected = pingInterval + timeout;
  const budget = expected + Math.max(1000, expected);
  const seen = [];
  let goneAt = null;
  let answer = null;
  while (goneAt === null) {
    const left = budget - (Date.now() - opened);
    check(left > 0, "session still alive past the budget", { seen, expected_ms: expected });
    const res = await http(pollingUrl(base, sid), { ms: left });
    const at = Date.now() - opened;
    seen.push({ at_ms: at, status: res.status, body: res.body });
    if (res.status !== 200 || res.body.split("\x1e").includes("1")) {
      goneAt = at;
      answer = { status: res.status, body: res.body };
    }
  }
  const after = await http(pollingUrl(base, sid));
  check(after.status === 400, "a GET after the timeout is not 400", { status: after.status, body: after.body });
  const pings = seen.filter((r) => r.status === 200 && r.body === "2").length;
  check(pings >= 1, "no ping seen before the timeout", { seen });
  const slack = Math.max(150, Math.round(0.3 * expected));
  check(goneAt >= expected - 50 && goneAt <= expected + slack, "session dropped at the wrong time", {
    gone_ms: goneAt,
    expected_ms: expected,
    seen,
  });
  return { pingInterval, pingTimeout: timeout, expected_ms: expected, gone_ms: goneAt, pings, gone_answer: answer, after: { status: after.status, body: after.body } };
}

async function binary(url) {
  const size = 100 * 1024;
  const payload = Buffer.alloc(size);
  for (let i = 0; i < size; i++) payload[i] = (i * 31 + 7) & 0xff;
  const sessions = [];
  for (const transport of ["polling", "websocket"]) {
    const client = new Client(url, { transports: [transport] });
    try {
      const { maxPayload: limit } = await client.open();
      const encoded = 1 + 4 * Math.ceil(size / 3); // "b" + base64, as polling carries it
      check(transport !== "polling" || limit >= encoded, "maxPayload too small for the round trip", { maxPayload: limit, encoded });
      const started = Date.now();
      await echoInOrder(client, [payload], 10000);
      check(client.transport() === transport, "transport changed", { transport: client.transport() });
      sessions.push({ transport, bytes: size, round_trip_ms: Date.now() - started });
    } finally {
      client.close();
    }
  }
  return { sessions };
}

// A POST body one byte over maxPayload: the raw answer, whether the session
// survives it, and what the stock client does when it sends such a message.
async function maxPayload(base) {
  const { sid, maxPayload: limit } = await rawHandshake(base);
  const body = `4${"x".repeat(limit)}`;
  let answer;
  try {
    const res = await http(pollingUrl(base, sid), { method: "POST", body, headers: { "Content-Type": "text/plain;charset=UTF-8" } });
    answer = { status: res.status, body: res.body, content_type: res.headers["content-type"] ?? null, connection: res.headers.connection ?? null };
  } catch (err) {
    answer = { error: err.message };
  }
  check(answer.status === 413, "an over-maxPayload POST is not answered 413", { answer });
  const after = await http(pollingUrl(base, sid), { method: "POST", body: "4small" });
  const sessionAfter = { status: after.status, body: after.body };

  const client = new Client(base, { transports: ["polling"] });
  try {
    await client.open();
    client.socket.send("x".repeat(limit + 1));
    await client.until(() => client.closed, 10000, "waiting for the stock client to give up");
  } finally {
    client.close();
  }
  return { maxPayload: limit, post_bytes: Buffer.byteLength(body), answer, post_after: sessionAfter, client_closed: client.closed };
}

const SCENARIOS = {
  polling: (url) => echoOverOnly(url, "polling"),
  websocket: (url) => echoOverOnly(url, "websocket"),
  upgrade,
  heartbeat,
  ping_timeout: pingTimeout,
  binary,
  max_payload: maxPayload,
};
// No scenario may run longer than this, whatever the server's settings.
const SCENARIO_CAP_MS = 120000;

async function main() {
  const [url, ...names] = process.argv.slice(2);
  const unknown = names.filter((name) => !(name in SCENARIOS));
  if (!url || !/^https?:\/\//.test(url) || names.length === 0 || unknown.length > 0) {
    console.error(`usage: client_scenarios.mjs URL SCENARIO...\nscenarios: ${Object.keys(SCENARIOS).join(" ")}`);
    if (unknown.length > 0) console.error(`unknown: ${unknown.join(" ")}`);
    process.exit(2);
  }
  let failed = 0;
  for (const name of names) {
    const started = Date.now();
    let line;
    try {
      const details = await within(SCENARIO_CAP_MS, `running ${name}`, SCENARIOS[name](url));
      line = { scenario: name, ok: true, ms: Date.now() - started, ...details };
    } catch (err) {
      failed += 1;
      line = { scenario: name, ok: false, ms: Date.now() - started, error: err.message, ...(err.details ?? {}) };
    }
    console.log(JSON.stringify(line));
  }
  process.exit(failed > 0 ? 1 : 0);
}

main();
