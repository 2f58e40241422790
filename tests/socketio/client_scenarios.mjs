// Named scenarios run with the stock socket.io-client (in Node) against a
// Socket.IO v5 server configured as the socket.io-protocol reference (auth
// echoed as `auth`, `message` -> `message-back`, `message-with-ack` acked with
// its arguments, a `/custom` namespace), at path /socket.io/.
//
//   node client_scenarios.mjs URL SCENARIO...     (URL like http://127.0.0.1:PORT)
//
// Prints one JSON line per scenario ({"scenario", "ok", ...details}), then
// `client_scenarios: N passed, N failed`; exits 1 if any failed, 2 on bad
// arguments. Every step is bounded (a timeout fails it) and no scenario runs
// past 120 s. Timing comes from the server's open packet, never from constants.
// `rooms` needs the server's room events (reference_server.mjs --rooms),
// `recovery` those and connection state recovery (--recovery-ms N); with
// recovery on, server events carry an offset argument, so connect_auth,
// polling, websocket, multiplex and refused need a server without it
// (upgrade and heartbeat take either). The `hub_*` scenarios are for surge's
// `kind = "socketio"` route instead (subscribe / unsubscribe / publish events):
// `hub_ticker` wants the ticker feed next to it, `hub_two_nodes` a second node
// bridged to the first, its URL in SECOND_URL. The `app_*` scenarios are for
// tests/socketio_app.rs: the socketio_chat example's namespaces and `/fan`.
import { request } from "node:http";
import { io, Manager } from "socket.io-client";

const PATH = "/socket.io/";
const STEP_MS = 5000;

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

// Buffers (and ArrayBuffers, typed arrays) become {"$binary": hex} so that
// arguments compare and print as JSON.
function plain(value) {
  if (Buffer.isBuffer(value)) return { $binary: value.toString("hex") };
  if (value instanceof ArrayBuffer) return { $binary: Buffer.from(value).toString("hex") };
  if (ArrayBuffer.isView(value)) return { $binary: Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString("hex") };
  if (typeof value === "function") return { $function: true };
  if (Array.isArray(value)) return value.map(plain);
  if (value && typeof value === "object") return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, plain(v)]));
  return value;
}

function same(a, b) {
  return JSON.stringify(plain(a)) === JSON.stringify(plain(b));
}

// With connection state recovery on, every server event carries the server's
// offset as a last string argument: left out where a scenario compares arguments.
function withoutOffset(client, args) {
  return client.socket._pid && typeof args.at(-1) === "string" ? args.slice(0, -1) : args;
}

// What a connect_error says: the server's CONNECT_ERROR message and data, or
// the transport's failure (an HTTP status, a socket error) for a transport error.
function describeError(err) {
  const out = { message: err.message, data: err.data ?? null };
  const description = err.description;
  if (description !== undefined) out.description = description instanceof Error ? description.message : description?.message ?? description;
  const context = err.context;
  if (context && typeof context === "object" && "status" in context) out.context = { status: context.status, responseText: context.responseText };
  return out;
}

// A stock client socket whose events are recorded, so a scenario can await
// them in order and still see everything that happened on failure.
class Client {
  constructor(socket) {
    this.socket = socket;
    this.events = []; // [name, ...args], acks callbacks included as functions
    this.connects = 0;
    this.connectErrors = [];
    this.disconnects = [];
    this.pings = 0;
    this.waiters = [];
    socket.onAny((...args) => this.record(() => this.events.push(args)));
    socket.on("connect", () => this.record(() => (this.connects += 1)));
    socket.on("connect_error", (err) => this.record(() => this.connectErrors.push(describeError(err))));
    socket.on("disconnect", (reason) => this.record(() => this.disconnects.push(reason)));
    socket.io.on("ping", () => this.record(() => (this.pings += 1)));
  }

  static connect(url, options = {}) {
    return new Client(io(url, { path: PATH, forceNew: true, reconnection: false, ...options }));
  }

  record(change) {
    change();
    for (const waiter of this.waiters.splice(0)) waiter();
  }

  // Resolves when `predicate()` holds; fails early if the socket disconnects
  // first, unless `whileDown` (the predicate is about being disconnected).
  until(predicate, ms, what, { whileDown = false } = {}) {
    const disconnectsAtStart = this.disconnects.length;
    return within(
      ms,
      what,
      new Promise((resolve, reject) => {
        const test = () => {
          const value = predicate();
          if (value) resolve(value);
          else if (!whileDown && this.disconnects.length > disconnectsAtStart)
            reject(new ScenarioError(`disconnected (${this.disconnects.at(-1)}) ${what}`, { disconnects: this.disconnects }));
          else this.waiters.push(test);
        };
        test();
      }),
    );
  }

  // `offsets`: the scenario takes a server with connection state recovery,
  // whose events carry an offset argument (the CONNECT answer has a pid).
  async connected({ ms = STEP_MS, offsets = false } = {}) {
    await this.until(() => this.socket.connected || this.connectErrors.length > 0, ms, "waiting for connect");
    check(this.socket.connected, "connect refused", { connect_errors: this.connectErrors });
    check(offsets || this.socket._pid === undefined,
      "the server has connection state recovery (its events carry offsets): run this scenario against one without");
  }

  // The next `count` events named `name` from index `from` on.
  async next(name, count = 1, from = 0, ms = STEP_MS) {
    const matching = () => this.events.slice(from).filter((event) => event[0] === name);
    await this.until(() => matching().length >= count, ms, `waiting for ${count} "${name}"`);
    return matching().slice(0, count).map((event) => event.slice(1));
  }

  // Emits with an ack callback and resolves with the ack's arguments.
  ack(ms, ...args) {
    return within(ms, `waiting for the ack of "${args[0]}"`, new Promise((resolve) => this.socket.emit(...args, (...reply) => resolve(reply))));
  }

  transport() {
    return this.socket.io.engine && this.socket.io.engine.transport.name;
  }

  close() {
    this.socket.disconnect();
    this.socket.io.engine?.close();
  }
}

// A raw HTTP request on its own connection, for the open packet's settings.
function http(url, ms = STEP_MS) {
  return within(
    ms,
    `on GET ${url}`,
    new Promise((resolve, reject) => {
      const req = request(url, { agent: false }, (res) => {
        const chunks = [];
        res.on("data", (chunk) => chunks.push(chunk));
        res.on("end", () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString("utf8") }));
        res.on("error", reject);
      });
      req.on("error", reject);
      req.setTimeout(ms, () => req.destroy(new ScenarioError(`no answer within ${ms} ms on GET ${url}`)));
      req.end();
    }),
  );
}

// pingInterval, pingTimeout and maxPayload from a throwaway polling handshake
// (the session is left to time out on the server).
async function openPacket(base) {
  const res = await http(new URL(`${PATH}?EIO=4&transport=polling`, base).toString());
  check(res.status === 200 && res.body.startsWith("0"), "polling handshake failed", res);
  return JSON.parse(res.body.slice(1));
}

function plainArgs() {
  return [1, "2", { 3: [true] }, null, "é€ unicode 🙂", [1.5, -2, false], { nested: { deep: ["x"] } }, ""];
}

function binaryArgs() {
  return [
    Buffer.from([1, 2, 3]),
    "between",
    { file: Buffer.from([0, 0x1e, 0xff, 0x34]), list: [Buffer.from("one"), { two: Buffer.from("two") }] },
    Buffer.alloc(0),
  ];
}

// Every exchange of the reference configuration over one transport setting:
// auth echoed, events, acks both ways, binary both ways, in order.
async function exchanges(url, options) {
  const auth = { token: "123", user: { name: "é", roles: ["a", "b"] } };
  const client = Client.connect(url, { auth, ...options });
  try {
    await client.connected();
    const [echoed] = await client.next("auth");
    check(same(echoed, [auth]), "auth not echoed", { sent: auth, got: plain(echoed) });
    check(typeof client.socket.id === "string" && client.socket.id.length > 0, "no socket id", { id: client.socket.id });
    check(client.socket.id !== client.socket.io.engine.id, "socket id is the Engine.IO sid");

    // Events, in order, each echoed once.
    const from = client.events.length;
    const batches = [plainArgs(), ...Array.from({ length: 10 }, (_, i) => [`ordered-${i}`, i]), binaryArgs()];
    for (const args of batches) client.socket.emit("message", ...args);
    const back = await client.next("message-back", batches.length, from);
    batches.forEach((args, i) => check(same(back[i], args), `message-back ${i} differs`, { sent: plain(args), got: plain(back[i]) }));

    // Client -> server ack, plain and binary (the answer is an ACK or a BINARY_ACK).
    const acked = await client.ack(STEP_MS, "message-with-ack", ...plainArgs());
    check(same(acked, plainArgs()), "ack differs", { got: plain(acked) });
    const ackedBinary = await client.ack(STEP_MS, "message-with-ack", ...binaryArgs());
    check(same(ackedBinary, binaryArgs()), "binary ack differs", { got: plain(ackedBinary) });
    const ackedEmpty = await client.ack(STEP_MS, "message-with-ack");
    check(same(ackedEmpty, []), "empty ack differs", { got: plain(ackedEmpty) });

    // Server -> client ack: "message" with an ack makes the reference emit
    // "message-back" asking for an ack, and it hands our answer back to us.
    const reply = [Buffer.from([9, 8, 7]), "from-client"];
    const pending = within(STEP_MS, "waiting for the chained ack", new Promise((resolve) =>
      client.socket.emit("message", "ask", (...args) => resolve(args))));
    const mark = client.events.length;
    const [asked] = await client.next("message-back", 1, mark);
    check(asked.length === 2 && asked[0] === "ask" && typeof asked[1] === "function", "message-back does not ask for an ack", { got: plain(asked) });
    asked[1](...reply);
    const chained = await pending;
    check(same(chained, reply), "server -> client ack differs", { sent: plain(reply), got: plain(chained) });

    return { transport: client.transport(), events: batches.length, acks: 4 };
  } finally {
    client.close();
  }
}

async function connectAuth(url) {
  const results = [];
  for (const [label, auth] of [["none", undefined], ["object", { token: "abc" }]]) {
    const client = Client.connect(url, auth === undefined ? {} : { auth });
    try {
      await client.connected();
      const [echoed] = await client.next("auth");
      check(same(echoed, [auth ?? {}]), "auth not echoed", { auth: label, got: plain(echoed) });
      results.push({ auth: label, echoed: plain(echoed[0]) });
    } finally {
      client.close();
    }
  }
  return { sessions: results };
}

// "/" and "/custom" over one Engine.IO session; leaving one namespace keeps
// the other (the suite's "connect then disconnect from a custom namespace").
async function multiplex(url) {
  const manager = new Manager(url, { path: PATH, reconnection: false });
  const main = new Client(manager.socket("/", { auth: { ns: "main" } }));
  const custom = new Client(manager.socket("/custom", { auth: { ns: "custom" } }));
  try {
    await main.connected();
    await custom.connected();
    check(same(await main.next("auth"), [[{ ns: "main" }]]), "main auth not echoed", { got: plain(main.events) });
    check(same(await custom.next("auth"), [[{ ns: "custom" }]]), "custom auth not echoed", { got: plain(custom.events) });
    check(main.socket.id !== custom.socket.id, "same socket id in both namespaces");
    const engine = manager.engine;
    custom.socket.disconnect();
    const from = main.events.length;
    main.socket.emit("message", "message to main namespace");
    const [back] = await main.next("message-back", 1, from);
    check(same(back, ["message to main namespace"]), "main namespace echo differs", { got: plain(back) });
    check(manager.engine === engine && engine.readyState === "open", "the Engine.IO session did not survive leaving /custom");
    // Joining /custom again on the same session.
    custom.socket.connect();
    await custom.until(() => custom.connects === 2, STEP_MS, "waiting for the second /custom connect");
    check(manager.engine === engine, "reconnecting /custom opened a new session");
    return { engine_sid: engine.id.length > 0, namespaces: ["/", "/custom"], transport: engine.transport.name };
  } finally {
    main.socket.disconnect();
    custom.socket.disconnect();
    manager.engine?.close();
  }
}

// A namespace the server does not have: CONNECT_ERROR, no retry, and the
// session's other namespace unaffected.
async function refused(url) {
  const manager = new Manager(url, { path: PATH, reconnection: false });
  const main = new Client(manager.socket("/"));
  const random = new Client(manager.socket("/random"));
  try {
    await main.connected();
    await random.until(() => random.connectErrors.length > 0, STEP_MS, "waiting for connect_error");
    const error = random.connectErrors[0];
    check(error.message === "Invalid namespace", "unexpected connect_error", { error });
    check(!random.socket.connected && !random.socket.active, "the refused socket is still active", { active: random.socket.active });
    await sleep(200);
    check(random.connectErrors.length === 1 && random.connects === 0, "the refused socket retried", { errors: random.connectErrors });
    const from = main.events.length;
    main.socket.emit("message", "still here");
    check(same(await main.next("message-back", 1, from), [["still here"]]), "main namespace broken by the refusal");
    return { connect_error: error, main_still_connected: main.socket.connected };
  } finally {
    main.socket.disconnect();
    random.socket.disconnect();
    manager.engine?.close();
  }
}

// The default client: polling, then the upgrade, with events sent every few
// milliseconds from before the namespace CONNECT until 30 after the upgrade
// (the client buffers them while it connects and while it upgrades); all
// echoed once, in order.
async function upgrade(url) {
  const client = Client.connect(url);
  const engine = client.socket.io.engine;
  const startedOn = engine.transport.name;
  let upgraded = false;
  engine.on("upgrade", () => (upgraded = true));
  let timer = null;
  try {
    const sent = [];
    let sentAtConnect = null;
    let sentAtUpgrade = null;
    const from = client.events.length;
    const sending = within(STEP_MS, "sending across the upgrade", new Promise((resolve) => {
      const tick = () => {
        sent.push(`seq-${sent.length}`);
        client.socket.emit("message", sent.at(-1));
        if (client.socket.connected && sentAtConnect === null) sentAtConnect = sent.length;
        if (upgraded && sentAtUpgrade === null) sentAtUpgrade = sent.length;
        if (sentAtUpgrade !== null && sent.length >= sentAtUpgrade + 30) {
          clearInterval(timer);
          resolve();
        }
      };
      tick();
      timer = setInterval(tick, 5);
    }));
    await client.connected({ offsets: true });
    await sending;
    check(startedOn === "polling", "default client did not start on polling", { started_on: startedOn });
    await client.next("message-back", sent.length, from);
    await sleep(100); // a duplicate would arrive now
    const all = client.events.slice(from).filter((e) => e[0] === "message-back").map((e) => e[1]);
    check(same(all, sent), "echoes out of order, altered or duplicated", { sent: sent.length, got: all.length });
    check(client.transport() === "websocket", "did not end on websocket", { transport: client.transport() });
    return { sent: sent.length, sent_before_connect: sentAtConnect, sent_before_upgrade: sentAtUpgrade, started_on: startedOn, transport: client.transport() };
  } finally {
    clearInterval(timer);
    client.close();
  }
}

async function heartbeatOver(url, transport) {
  const { pingInterval, pingTimeout } = await openPacket(url);
  const client = Client.connect(url, { transports: [transport] });
  try {
    await client.connected({ offsets: true });
    const opened = Date.now();
    const stay = Math.round(3.5 * pingInterval);
    await client.until(() => client.pings >= 3, stay + pingTimeout + 2000, "waiting for 3 pings");
    const remaining = stay - (Date.now() - opened);
    if (remaining > 0) await sleep(remaining);
    check(client.socket.connected && client.disconnects.length === 0, "disconnected while answering pings", { disconnects: client.disconnects });
    const from = client.events.length;
    client.socket.emit("message", "after-heartbeat");
    await client.next("message-back", 1, from, pingInterval + pingTimeout + 2000);
    return { transport, pingInterval, pingTimeout, open_ms: Date.now() - opened, pings: client.pings };
  } finally {
    client.close();
  }
}

async function heartbeat(url) {
  return { sessions: [await heartbeatOver(url, "polling"), await heartbeatOver(url, "websocket")] };
}

async function polling(url) {
  const details = await exchanges(url, { transports: ["polling"] });
  check(details.transport === "polling", "transport changed", details);
  return details;
}

async function websocket(url) {
  const details = await exchanges(url, { transports: ["websocket"] });
  check(details.transport === "websocket", "transport changed", details);
  return details;
}

// Room events of reference_server.mjs --rooms: one client joins, another
// emits to the room; after `leave` nothing more arrives.
async function rooms(url) {
  const member = Client.connect(url);
  const sender = Client.connect(url, { transports: ["polling"] });
  try {
    await member.connected({ offsets: true });
    await sender.connected({ offsets: true });
    const joined = await member.ack(STEP_MS, "join", "r1");
    check(same(joined, [["r1"]]), "join not acked with the rooms", { got: plain(joined) });
    check(same(await member.ack(STEP_MS, "join", "r2"), [["r1", "r2"]]), "second join not acked with both rooms");
    await sender.ack(STEP_MS, "to-room", "r1", "hello", Buffer.from([1, 2]));
    const [got] = await member.next("room-event");
    check(same(withoutOffset(member, got), ["r1", "hello", Buffer.from([1, 2])]), "room-event differs", { got: plain(got) });
    check(same(await member.ack(STEP_MS, "leave", "r1"), [["r2"]]), "leave not acked with the rooms left");
    const from = member.events.length;
    await sender.ack(STEP_MS, "to-room", "r1", "after-leave");
    await sender.ack(STEP_MS, "to-room", "r2", "still-in-r2");
    const [second] = await member.next("room-event", 1, from);
    check(same(withoutOffset(member, second), ["r2", "still-in-r2"]), "got an event for a room left", { got: plain(second) });
    return { member: member.transport(), sender: sender.transport() };
  } finally {
    member.close();
    sender.close();
  }
}

// Connection state recovery (reference_server.mjs --rooms --recovery-ms N):
// the member's transport drops, the server emits to its room meanwhile, and on
// reconnecting the member is `recovered` with its id, rooms and the missed
// events, each exactly once and in order.
async function recoveryOver(url, transport) {
  const member = Client.connect(url, { transports: [transport] });
  const sender = Client.connect(url, { transports: ["websocket"] });
  try {
    await member.connected({ offsets: true });
    await sender.connected({ offsets: true });
    check(typeof member.socket._pid === "string", "the CONNECT answer has no pid: the server has no connection state recovery");
    await member.ack(STEP_MS, "join", "r1");
    await sender.ack(STEP_MS, "to-room", "r1", "live");
    await member.next("room-event");
    const id = member.socket.id;
    // Dropping the Engine.IO session (not a namespace DISCONNECT) is a
    // disconnection the server may recover from.
    member.socket.io.engine.close();
    await member.until(() => member.disconnects.length === 1, STEP_MS, "waiting for the drop", { whileDown: true });
    const missed = Array.from({ length: 5 }, (_, i) => `missed-${i}`);
    for (const text of missed) await sender.ack(STEP_MS, "to-room", "r1", text);
    const from = member.events.length;
    member.socket.connect();
    await member.until(() => member.socket.connected, STEP_MS, "waiting for the reconnect", { whileDown: true });
    check(member.socket.recovered === true, "not recovered", { recovered: member.socket.recovered });
    check(member.socket.id === id, "socket id changed", { before: id, after: member.socket.id });
    await member.next("room-event", missed.length, from);
    await sleep(200); // a duplicate would arrive now
    // Each event carries the server's offset as its last argument.
    const got = member.events.slice(from).filter((e) => e[0] === "room-event").map((e) => e[2]);
    check(same(got, missed), "missed events not delivered exactly once in order", { got });
    const after = member.events.length;
    await sender.ack(STEP_MS, "to-room", "r1", "after-recovery");
    const [live] = await member.next("room-event", 1, after);
    check(live[1] === "after-recovery", "the room was not restored", { got: plain(live) });
    return { transport, recovered: true, drop_reason: member.disconnects[0], missed: got.length, offset_arg: typeof live.at(-1) };
  } finally {
    member.close();
    sender.close();
  }
}

async function recovery(url) {
  return { sessions: [await recoveryOver(url, "websocket"), await recoveryOver(url, "polling")] };
}

// surge's `kind = "socketio"` route (the hub as events): `subscribe` and
// `unsubscribe` ack with the socket's rooms, `publish` (room, ...args) reaches
// every member as `publish` (room, ...args), binary included, on whichever
// shard or transport each is; after `unsubscribe` nothing more arrives.
async function hubRooms(url) {
  const ws = Client.connect(url, { transports: ["websocket"] });
  const polling = Client.connect(url, { transports: ["polling"] });
  const sender = Client.connect(url);
  try {
    for (const c of [ws, polling, sender]) await c.connected();
    check(same(await ws.ack(STEP_MS, "subscribe", "r1"), [{ rooms: ["r1"] }]), "subscribe not acked with the rooms");
    check(same(await polling.ack(STEP_MS, "subscribe", ["r1", "r2"]), [{ rooms: ["r1", "r2"] }]), "subscribe to an array not acked");
    check(same(await sender.ack(STEP_MS, "publish", "r1", "hello", Buffer.from([1, 2])), []), "publish not acked");
    for (const member of [ws, polling]) {
      const [got] = await member.next("publish");
      check(same(got, ["r1", "hello", Buffer.from([1, 2])]), "publish differs", { got: plain(got) });
    }
    check(same(await polling.ack(STEP_MS, "unsubscribe", "r1"), [{ rooms: ["r2"] }]), "unsubscribe not acked with the rooms left");
    const from = polling.events.length;
    await sender.ack(STEP_MS, "publish", "r1", "after");
    await sender.ack(STEP_MS, "publish", "r2", "in-r2");
    const [second] = await polling.next("publish", 1, from);
    check(same(second, ["r2", "in-r2"]), "got a publish for a room left", { got: plain(second) });
    const [wsSecond] = await ws.next("publish", 1, ws.events.length - 1);
    check(same(wsSecond, ["r1", "after"]), "the member left in r1 missed it", { got: plain(wsSecond) });
    return { transports: [ws.transport(), polling.transport(), sender.transport()] };
  } finally {
    for (const c of [ws, polling, sender]) c.close();
  }
}

// The `socketio` route's answers to mistakes: in the ack when there is one,
// else an `error` event; the socket stays connected.
async function hubErrors(url) {
  const c = Client.connect(url);
  try {
    await c.connected();
    const [unknown] = await c.ack(STEP_MS, "nonsense", 1);
    check(typeof unknown?.error === "string", "an unknown event is not answered with an error", { got: plain(unknown) });
    const [noRoom] = await c.ack(STEP_MS, "publish", 42);
    check(typeof noRoom?.error === "string", "a publish without a room is not refused", { got: plain(noRoom) });
    const [badRoom] = await c.ack(STEP_MS, "subscribe", "");
    check(typeof badRoom?.error === "string", "an empty room name is not refused", { got: plain(badRoom) });
    const [controlRoom] = await c.ack(STEP_MS, "subscribe", "\u0001[[],[],null]");
    check(typeof controlRoom?.error === "string", "a room name with a control character is not refused", { got: plain(controlRoom) });
    const [big] = await c.ack(STEP_MS, "publish", "r", "x".repeat(40000));
    check(typeof big?.error === "string", "a publish over the bound is not refused", { got: plain(big) });
    c.socket.emit("subscribe", 7);
    const [[event]] = await c.next("error");
    check(typeof event?.message === "string", "no error event without an ack", { got: plain(event) });
    check(c.socket.connected, "the socket did not stay connected");
    check(same(await c.ack(STEP_MS, "subscribe", "fine"), [{ rooms: ["fine"] }]), "the socket stopped working");
    return { errors: [unknown.error, noRoom.error, badRoom.error, big.error, event.message] };
  } finally {
    c.close();
  }
}

// A `socketio` route with `--jwt-first-message-s`: the token comes in the
// CONNECT's auth payload (`io(url, { auth: { token } })`), as apps written for
// Socket.IO send it. TOKEN allows subscribe ["chat", "news.*"]; BAD_TOKEN does
// not verify; a CONNECT without one is refused with what to send.
async function hubAuthPayload(url) {
  const c = Client.connect(url, { auth: { token: process.env.TOKEN } });
  const bad = Client.connect(url, { auth: { token: process.env.BAD_TOKEN } });
  const none = Client.connect(url);
  try {
    await c.connected();
    const [secret] = await c.ack(STEP_MS, "subscribe", ["chat", "secret"]);
    check(/may not subscribe to secret/.test(secret?.error ?? ""), "the token's patterns were not applied", { got: plain(secret) });
    check(same(await c.ack(STEP_MS, "subscribe", "chat"), [{ rooms: ["chat"] }]), "an allowed room was not joined");
    for (const [client, want] of [[bad, /^token refused: bad token signature$/], [none, /^a token is needed \(auth\.token\)$/]]) {
      await client.until(() => client.connectErrors.length > 0 || client.socket.connected, STEP_MS, "waiting for the refusal");
      check(!client.socket.connected && want.test(client.connectErrors[0]?.message ?? ""), "a CONNECT without a good token was not refused as it should be",
        { connect_errors: client.connectErrors });
    }
    return { bad: bad.connectErrors[0].message, none: none.connectErrors[0].message };
  } finally {
    for (const client of [c, bad, none]) client.close();
  }
}

// A `socketio` route with the server API on (API_URL, API_KEY): a disconnect
// of TOKEN's user (alice) through the API ends her sessions, on either
// transport, and leaves OTHER_TOKEN's (bob's).
async function hubApiDisconnect(url) {
  const query = (token) => ({ query: { token } });
  const alice = [Client.connect(url, { ...query(process.env.TOKEN), transports: ["websocket"] }),
                 Client.connect(url, { ...query(process.env.TOKEN), transports: ["polling"] })];
  const bob = Client.connect(url, query(process.env.OTHER_TOKEN));
  try {
    for (const c of [...alice, bob]) await c.connected();
    const response = await fetch(`${process.env.API_URL}/api/disconnect`, {
      method: "POST",
      headers: { Authorization: `Bearer ${process.env.API_KEY}`, "Content-Type": "application/json" },
      body: JSON.stringify({ user: "alice" }),
    });
    const answer = await response.json();
    check(response.status === 200 && answer.closed === 2, "the API did not close alice's two sessions", { status: response.status, answer });
    for (const c of alice) {
      await c.until(() => c.disconnects.length > 0, STEP_MS, "waiting for alice's session to end", { whileDown: true });
    }
    check(bob.socket.connected, "bob's session was closed");
    check(same(await bob.ack(STEP_MS, "subscribe", "chat"), [{ rooms: ["chat"] }]), "bob's socket stopped working");
    return { answer, reasons: alice.map((c) => c.disconnects[0]) };
  } finally {
    for (const c of [...alice, bob]) c.close();
  }
}

// A `socketio` route under `--publish-rate 1 --publish-burst 2`: a session
// publishes its burst, the next publish is refused in its ack and reaches
// nobody, the socket stays, and another session has its own bucket.
async function hubPublishRate(url) {
  const c = Client.connect(url);
  const other = Client.connect(url);
  try {
    await c.connected();
    await other.connected();
    await c.ack(STEP_MS, "subscribe", "r");
    const answers = await Promise.all([1, 2, 3].map((n) => c.ack(STEP_MS, "publish", "r", n)));
    const refused = answers.filter(([a]) => typeof a?.error === "string");
    check(refused.length === 1 && /^publish rate exceeded: at most 1 per second$/.test(refused[0][0].error),
      "the publish past the burst was not refused, or more were", { answers: plain(answers) });
    await c.ack(STEP_MS, "publish", "r", 4).then(([a]) => check(typeof a?.error === "string", "the bucket refilled at once", { got: plain(a) }));
    const [fromOther] = await other.ack(STEP_MS, "publish", "r", 10);
    check(fromOther === undefined, "another session was held back", { got: plain(fromOther) });
    const got = await c.next("publish", 3);
    check(same(got.map(([, n]) => n).sort((a, b) => a - b), [1, 2, 10]), "members got other than the allowed publishes", { got: plain(got) });
    check(c.socket.connected, "the socket did not stay connected");
    return { refused: refused[0][0].error };
  } finally {
    c.close();
    other.close();
  }
}

// A `socketio` route on a server requiring signed tokens (surge serve --jwt-*):
// TOKEN allows subscribe ["chat", "news.*"] and publish ["chat"]; BAD_TOKEN
// does not verify; SHORT_TOKEN (the same claims) expires within seconds. The
// token rides in the query of every Engine.IO request; its claims decide what
// the socket may join and publish to, and its expiry ends the session.
async function hubTokens(url) {
  const refused = Client.connect(url, { query: { token: process.env.BAD_TOKEN } });
  const c = Client.connect(url, { query: { token: process.env.TOKEN } });
  const short = Client.connect(url, { query: { token: process.env.SHORT_TOKEN }, transports: ["websocket"] });
  try {
    check(Boolean(process.env.TOKEN && process.env.BAD_TOKEN && process.env.SHORT_TOKEN), "set TOKEN, BAD_TOKEN and SHORT_TOKEN");
    await refused.until(() => refused.connectErrors.length > 0 || refused.socket.connected, STEP_MS, "waiting for the refusal");
    check(!refused.socket.connected, "a token that does not verify connected");
    await c.connected();
    await short.connected();
    const [secret] = await c.ack(STEP_MS, "subscribe", ["chat", "secret"]);
    check(/may not subscribe to secret/.test(secret?.error ?? ""), "a room the token does not allow was joined", { got: plain(secret) });
    check(same(await c.ack(STEP_MS, "subscribe", ["chat", "news.eu"]), [{ rooms: ["chat", "news.eu"] }]), "allowed rooms were not joined");
    const [news] = await c.ack(STEP_MS, "publish", "news.eu", 1);
    check(/may not publish to news.eu/.test(news?.error ?? ""), "a publish the token does not allow went out", { got: plain(news) });
    c.socket.emit("publish", "chat", "hi");
    const [[room, data]] = await c.next("publish");
    check(room === "chat" && data === "hi", "the allowed publish did not come back", { got: [room, data] });
    check(c.events.filter((e) => e[0] === "publish").length === 1, "the refused publish reached a member", { events: plain(c.events) });
    await short.until(() => short.disconnects.length > 0, 10000, "waiting for the expired token's session to end", { whileDown: true });
    // The server closed the session (an Engine.IO close): the stock client
    // would reconnect, with the new token an app puts in its query.
    check(short.disconnects[0] === "transport close", "the expired session did not end by the server", { disconnects: short.disconnects });
    check(c.socket.connected, "the valid token's socket was closed");
    return { refused: refused.connectErrors[0], subscribe_error: secret.error, publish_error: news.error, expired: short.disconnects[0] };
  } finally {
    for (const client of [refused, c, short]) client.close();
  }
}

// A `socketio` route next to the feed (`surge serve --ticker-symbols ...`):
// subscribing to a symbol's room brings its ticks as `publish` events.
async function hubTicker(url) {
  const c = Client.connect(url);
  try {
    await c.connected();
    await c.ack(STEP_MS, "subscribe", "AAPL");
    const ticks = await c.next("publish", 3);
    for (const [room, tick] of ticks) {
      check(room === "AAPL" && typeof tick === "string" && tick.startsWith("AAPL "), "not a tick of AAPL", { got: plain(ticks) });
    }
    const [spoof] = await c.ack(STEP_MS, "publish", "AAPL", "AAPL 1 0 0.01");
    check(typeof spoof?.error === "string", "a client may publish into the feed's room", { got: plain(spoof) });
    return { first: ticks[0][1], spoof_refused: spoof.error };
  } finally {
    c.close();
  }
}

// Two `socketio` nodes bridged by redis-server: members on the second node
// (SECOND_URL in the environment), one on each transport, get what a client of
// the first publishes, binary included, once each.
async function hubTwoNodes(url) {
  const second = process.env.SECOND_URL;
  check(Boolean(second), "set SECOND_URL to the second node's URL");
  const members = [Client.connect(second, { transports: ["websocket"] }), Client.connect(second, { transports: ["polling"] })];
  const sender = Client.connect(url);
  try {
    for (const c of [...members, sender]) await c.connected();
    for (const m of members) await m.ack(STEP_MS, "subscribe", "across");
    await sender.ack(STEP_MS, "publish", "across", "over-redis", Buffer.from([9]));
    for (const m of members) {
      const [got] = await m.next("publish");
      check(same(got, ["across", "over-redis", Buffer.from([9])]), "publish differs across nodes", { got: plain(got) });
    }
    await sleep(200); // a duplicate would arrive now
    for (const m of members) check(m.events.filter((e) => e[0] === "publish").length === 1, "delivered more than once");
    return { members: members.map((m) => m.transport()) };
  } finally {
    for (const c of [...members, sender]) c.close();
  }
}

// The `socketio_chat` example's namespaces (an app route): a refused
// connect, rooms, a broadcast that skips its sender, acks with errors, a
// departure with its reason, a polling member.
async function appChat(url) {
  const nameless = Client.connect(url);
  const nowhere = Client.connect(`${url}/nowhere`, { auth: { name: "ada" } });
  const ada = Client.connect(url, { auth: { name: "ada" }, transports: ["websocket"] });
  const bob = Client.connect(url, { auth: { name: "bob" }, transports: ["polling"] });
  const cy = Client.connect(url, { auth: { name: "cy" } });
  try {
    await nameless.until(() => nameless.connectErrors.length > 0, STEP_MS, "waiting for the refusal");
    check(nameless.connectErrors[0].message === "a name is needed (auth.name)", "not refused with the handler's message", { got: nameless.connectErrors });
    await nowhere.until(() => nowhere.connectErrors.length > 0, STEP_MS, "waiting for the namespace refusal");
    check(nowhere.connectErrors[0].message === "Invalid namespace", "a namespace no handler serves is not refused", { got: nowhere.connectErrors });
    for (const c of [ada, bob, cy]) await c.connected();
    check(same(await ada.ack(STEP_MS, "join", "lobby"), [["lobby"]]), "join not acked with the rooms");
    check(same(await bob.ack(STEP_MS, "join", "lobby"), [["lobby"]]), "bob's join not acked");
    const [[joined]] = await ada.next("joined");
    check(same(joined, { name: "bob", room: "lobby" }), "ada did not see bob join", { got: joined });
    await cy.ack(STEP_MS, "join", "other");
    check(same(await ada.ack(STEP_MS, "say", { room: "lobby", text: "hi" }), [true]), "say not acked");
    const [[said]] = await bob.next("said");
    check(same(said, { from: "ada", room: "lobby", text: "hi" }), "bob did not hear ada", { got: said });
    const [notJoined] = await cy.ack(STEP_MS, "say", { room: "lobby", text: "psst" });
    check(notJoined?.error === "join the room first", "saying into a room not joined is not refused", { got: notJoined });
    const [badRoom] = await cy.ack(STEP_MS, "join", "no spaces");
    check(typeof badRoom?.error === "string", "a bad room name is not refused", { got: badRoom });
    const [unknown] = await cy.ack(STEP_MS, "nonsense");
    check(typeof unknown?.error === "string", "an unknown event is not answered", { got: unknown });
    await sleep(200); // anything misdelivered arrives by now
    check(ada.events.filter((e) => e[0] === "said").length === 0, "the sender heard itself");
    check(cy.events.filter((e) => e[0] === "said" || e[0] === "joined").length === 0, "a non-member got the room's events");
    const [bobId, cyId] = [bob.socket.id, cy.socket.id];
    bob.socket.disconnect();
    const [[left]] = await ada.next("left");
    check(same(left, { id: bobId, name: "bob", reason: "client namespace disconnect" }), "bob's leaving not told", { got: left });
    cy.socket.io.engine.close();
    const [, [gone]] = await ada.next("left", 2);
    check(same(gone, { id: cyId, name: "cy", reason: "transport close" }), "cy's dropped session not told", { got: gone });
    return { transports: [ada.transport(), "polling", "any"] };
  } finally {
    for (const c of [nameless, nowhere, ada, bob, cy]) c.close();
  }
}

// `/admin` broadcasts into `/` from the route's thread-safe emitter (one
// user's sockets, or everyone), and the example's clock thread emits to room
// `clock`.
async function appAdmin(url) {
  const ada = Client.connect(url, { auth: { name: "ada" } });
  const bob = Client.connect(url, { auth: { name: "bob" }, transports: ["polling"] });
  const admin = Client.connect(`${url}/admin`);
  try {
    for (const c of [ada, bob, admin]) await c.connected();
    check(same(await admin.ack(STEP_MS, "whisper", { to: "bob", text: "psst" }), [true]), "whisper not acked");
    const [[whisper]] = await bob.next("whisper");
    check(whisper === "psst", "bob did not get the whisper", { got: whisper });
    check(same(await admin.ack(STEP_MS, "announce", "hello all"), [true]), "announce not acked");
    for (const c of [ada, bob]) {
      const [[text]] = await c.next("announcement");
      check(text === "hello all", "an announcement missed", { got: text });
    }
    check(ada.events.filter((e) => e[0] === "whisper").length === 0, "a whisper reached another user");
    check(admin.events.filter((e) => e[0] === "announcement").length === 0, "an announcement left its namespace");
    await ada.ack(STEP_MS, "join", "clock");
    const ticks = await ada.next("clock", 2);
    check(ticks.every(([n]) => Number.isInteger(n)), "clock ticks are not numbers", { got: ticks });
    check(bob.events.filter((e) => e[0] === "clock").length === 0, "a tick reached a non-member");
    return { ticks: ticks.map(([n]) => n) };
  } finally {
    for (const c of [ada, bob, admin]) c.close();
  }
}

// The test's `/fan` namespace: its connect reads the handshake's headers, a
// broadcast to several rooms reaches each member once and skips the excepted
// rooms and the sender, the server disconnects a socket, and a handler's panic
// ends only its own session.
async function appFan(url) {
  const headers = { extraHeaders: { "x-team": "blue" } };
  const fan = (transports) => Client.connect(`${url}/fan`, { ...headers, transports });
  const noTeam = Client.connect(`${url}/fan`);
  const [a, b, c, d, sender] = [fan(["websocket"]), fan(["polling"]), fan(["websocket"]), fan(["polling"]), fan(["websocket"])];
  const all = [a, b, c, d, sender];
  try {
    await noTeam.until(() => noTeam.connectErrors.length > 0, STEP_MS, "waiting for the refusal");
    check(noTeam.connectErrors[0].message === "no team", "the handshake's headers were not seen", { got: noTeam.connectErrors });
    for (const x of all) await x.connected();
    const team = await a.ack(STEP_MS, "team");
    check(same(team, [{ eio: "4", team: "blue" }]), "the handshake is not the socket's", { got: team });
    await a.ack(STEP_MS, "join", ["r1"]);
    await b.ack(STEP_MS, "join", ["r1", "r2"]);
    await c.ack(STEP_MS, "join", ["r2", "muted"]);
    await sender.ack(STEP_MS, "join", ["r1"]);
    await sender.ack(STEP_MS, "fanout", { to: ["r1", "r2"], except: ["muted"], text: "one" });
    await a.next("fan");
    await b.next("fan");
    const fromA = a.events.length;
    await sender.ack(STEP_MS, "fanout", { to: [], except: ["r2"], text: "two" });
    const [[toA]] = await a.next("fan", 1, fromA);
    const [[toD]] = await d.next("fan");
    check(toA === "two" && toD === "two", "a namespace broadcast missed", { a: toA, d: toD });
    await sleep(300);
    const got = all.map((x) => x.events.filter((e) => e[0] === "fan").map((e) => e[1]));
    check(same(got, [["one", "two"], ["one"], [], ["two"], []]), "broadcast reached the wrong sockets, or twice", { got });
    check(same(await d.ack(STEP_MS, "bye"), [true]), "bye not acked");
    await d.until(() => d.disconnects.length > 0, STEP_MS, "waiting for the server's disconnect", { whileDown: true });
    check(d.disconnects[0] === "io server disconnect", "not disconnected by the server", { got: d.disconnects });
    c.socket.emit("panic");
    await c.until(() => c.disconnects.length > 0, STEP_MS, "waiting for the panicking session to end", { whileDown: true });
    check(same(await a.ack(STEP_MS, "join", ["after"]), [["r1", "after"]]), "the server stopped after a handler's panic");
    return { fans: got, panicked: c.disconnects[0] };
  } finally {
    for (const x of [noTeam, ...all]) x.close();
  }
}

const SCENARIOS = {
  app_chat: appChat,
  app_admin: appAdmin,
  app_fan: appFan,
  hub_two_nodes: hubTwoNodes,
  hub_rooms: hubRooms,
  hub_errors: hubErrors,
  hub_tokens: hubTokens,
  hub_publish_rate: hubPublishRate,
  hub_api_disconnect: hubApiDisconnect,
  hub_auth_payload: hubAuthPayload,
  hub_ticker: hubTicker,
  connect_auth: connectAuth,
  polling,
  websocket,
  upgrade,
  multiplex,
  refused,
  heartbeat,
  rooms,
  recovery,
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
  console.log(`client_scenarios: ${names.length - failed} passed, ${failed} failed`);
  process.exit(failed > 0 ? 1 : 0);
}

main();
