// Engine.IO sessions with the stock engine.io-client (in Node) through a
// balancer in front of several echo nodes (tuning/haproxy-engineio.cfg).
//
//   node through_balancer.mjs URL [--cookie NAME | --no-cookie] SCENARIO...
//
// URL is the balancer (http://127.0.0.1:PORT); NAME the balancer's
// stickiness cookie (default SERVERID). --no-cookie is for a balancer that
// keeps sessions together by client address (tuning/nginx-engineio.conf):
// no cookie is expected, and a cookieless session must last. Scenarios run
// side by side, each starting 100 ms after the one before (name one several
// times for several sessions):
//   polling     polling only, keeping cookies: messages across heartbeats
//   upgrade     polling upgraded to WebSocket, keeping cookies, messages
//               sent throughout
//   cookieless  polling only without keeping cookies: the session must be
//               lost (its requests reach nodes that do not know its sid),
//               which shows the cookie is what holds the others together
// Prints one JSON line per session ({"scenario", "ok", "cookie", ...}; the
// cookie is the node the balancer pinned it to) and exits 1 if any failed,
// 2 on bad arguments. Every wait is bounded: 5 s per step.
import { Socket } from "engine.io-client";

const ENGINE_PATH = "/engine.io/";
const STEP_MS = 5000;
const usage = "usage: through_balancer.mjs URL [--cookie NAME | --no-cookie] polling|upgrade|cookieless...";

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

class Failure extends Error {
  constructor(message, details = {}) {
    super(message);
    this.details = details;
  }
}

// One client socket whose events are recorded, so a scenario can wait on
// them and a failure can say what had happened.
class Session {
  constructor(url, options) {
    this.messages = [];
    this.pings = 0;
    this.upgraded = false;
    this.closed = null;
    this.sid = null;
    this.waiters = [];
    this.socket = new Socket(url, { path: ENGINE_PATH, ...options });
    this.socket.on("handshake", (data) => {
      this.sid = data.sid;
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
      const context = description && description.context;
      this.closed = {
        reason,
        description: description && (description.description ?? description.message ?? String(description)),
        status: context && context.status,
        body: context && typeof context.responseText === "string" ? context.responseText.slice(0, 200) : undefined,
      };
      this.wake();
    });
    this.socket.on("error", () => {});
  }

  wake() {
    for (const waiter of this.waiters.splice(0)) waiter();
  }

  // Resolves once `predicate()` holds; rejects if the session closes first
  // or STEP_MS pass.
  until(predicate, what) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Failure(`timed out after ${STEP_MS} ms ${what}`)), STEP_MS);
      const test = () => {
        if (predicate()) {
          clearTimeout(timer);
          resolve();
        } else if (this.closed) {
          clearTimeout(timer);
          reject(new Failure(`closed ${what}`, { closed: this.closed }));
        } else {
          this.waiters.push(test);
        }
      };
      test();
    });
  }

  open() {
    return this.until(() => this.socket.readyState === "open" && this.sid, "waiting for open");
  }

  transport() {
    return this.socket.transport && this.socket.transport.name;
  }

  // The balancer's cookie from the client's own jar (there is one only with
  // `withCredentials: true`): the node this session is pinned to.
  cookie(name) {
    const jar = this.socket._cookieJar;
    if (!jar) return null;
    for (const [key, cookie] of jar.cookies) if (key === name) return cookie.value;
    return null;
  }

  close() {
    this.socket.close();
  }
}

// The node the balancer's cookie names (null with --no-cookie).
function pinnedTo(session, cookieName) {
  if (cookieName === null) return null;
  const cookie = session.cookie(cookieName);
  if (!cookie) throw new Failure(`no ${cookieName} cookie after the handshake`);
  return cookie;
}

function checkEchoes(session, sent) {
  const got = session.messages.slice(0, sent.length);
  sent.forEach((message, i) => {
    if (got[i] !== message) throw new Failure(`echo ${i} differs`, { sent: message, got: got[i] });
  });
}

// Polling only: one message at a time, 100 ms apart, so the session lives
// through several heartbeats (each a held GET answered and a POSTed pong,
// every one a request the balancer must send to the same node).
async function polling(url, cookieName) {
  const session = new Session(url, { transports: ["polling"], withCredentials: true });
  try {
    await session.open();
    const cookie = pinnedTo(session, cookieName);
    const sent = [];
    const started = Date.now();
    for (let i = 0; i < 12; i++) {
      sent.push(`polling-${i}`);
      session.socket.send(sent[i]);
      await session.until(() => session.messages.length > i, `waiting for echo ${i}`);
      await sleep(100);
    }
    checkEchoes(session, sent);
    if (session.transport() !== "polling") throw new Failure("transport changed", { transport: session.transport() });
    if (session.cookie(cookieName) !== cookie) throw new Failure("cookie changed mid-session", { cookie, now: session.cookie(cookieName) });
    return { cookie, echoed: sent.length, pings: session.pings, ms: Date.now() - started };
  } finally {
    session.close();
  }
}

// Messages go out every 20 ms from open until 300 ms after the upgrade: some
// over polling, some buffered while the upgrade is under way, the rest over
// the WebSocket, whose upgrade request must carry the cookie to reach the
// node that knows the sid.
async function upgrade(url, cookieName) {
  const session = new Session(url, { withCredentials: true });
  let sending = true;
  const sent = [];
  try {
    await session.open();
    const cookie = pinnedTo(session, cookieName);
    const sender = (async () => {
      while (sending && !session.closed && sent.length < 500) {
        sent.push(`upgrade-${sent.length}`);
        session.socket.send(sent[sent.length - 1]);
        await sleep(20);
      }
    })();
    await session.until(() => session.upgraded, "waiting for the upgrade");
    const upgradedAfter = sent.length;
    await sleep(300);
    sending = false;
    await sender;
    await session.until(() => session.messages.length >= sent.length, `waiting for ${sent.length} echoes`);
    checkEchoes(session, sent);
    if (session.transport() !== "websocket") throw new Failure("not on websocket", { transport: session.transport() });
    return { cookie, echoed: sent.length, sentBeforeUpgrade: upgradedAfter };
  } finally {
    sending = false;
    session.close();
  }
}

// Without a cookie jar every request is balanced on its own; with more than
// one node the session cannot last through a dozen exchanges, unless the
// balancer keys on the client's address (cookieName null: --no-cookie).
async function cookieless(url, cookieName) {
  const session = new Session(url, { transports: ["polling"] });
  try {
    await session.open();
    for (let i = 0; i < 12; i++) {
      session.socket.send(`cookieless-${i}`);
      try {
        await session.until(() => session.messages.length > i, `waiting for echo ${i}`);
      } catch (err) {
        if (session.closed && cookieName !== null) return { lostAfter: i, closed: session.closed };
        throw err;
      }
    }
    if (cookieName === null) return { lostAfter: null };
    throw new Failure("the session survived without the cookie: is the balancer spreading requests?");
  } finally {
    session.close();
  }
}

const SCENARIOS = { polling, upgrade, cookieless };

function parseArgs(argv) {
  const [url, ...rest] = argv;
  if (!url || !/^https?:\/\//.test(url)) throw new Error(usage);
  let cookieName = "SERVERID";
  const names = [];
  for (let i = 0; i < rest.length; i++) {
    if (rest[i] === "--cookie" && rest[i + 1]) cookieName = rest[++i];
    else if (rest[i] === "--no-cookie") cookieName = null;
    else if (rest[i] in SCENARIOS) names.push(rest[i]);
    else throw new Error(`unknown argument ${rest[i]}\n${usage}`);
  }
  if (names.length === 0) throw new Error(usage);
  return { url, cookieName, names };
}

let args;
try {
  args = parseArgs(process.argv.slice(2));
} catch (err) {
  console.error(err.message);
  process.exit(2);
}

// Staggered, so that each handshake finds the sessions before it already
// holding a GET or a WebSocket on their nodes: what a leastconn balancer
// counts to spread new sessions. All at once, ties decide.
const STAGGER_MS = 100;

const results = await Promise.all(
  args.names.map(async (scenario, i) => {
    await sleep(i * STAGGER_MS);
    try {
      const details = await SCENARIOS[scenario](args.url, args.cookieName);
      return { scenario, ok: true, ...details };
    } catch (err) {
      return { scenario, ok: false, error: err.message, ...(err.details || {}) };
    }
  }),
);
for (const result of results) console.log(JSON.stringify(result));
// Sockets just closed may still hold timers; the results are out.
process.exit(results.every((r) => r.ok) ? 0 : 1);
