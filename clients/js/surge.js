// surge.js: a client for the surge hub (`/hub`) that survives reconnects.
// One ES module, no build step, for browsers and Node 18+.
//
//   import * as surge from "./surge.js";
//   const hub = surge.connect("wss://example.com/hub", { maxQueuedBytes: 1 << 20 });
//   const off = hub.subscribe("scores", (data, meta) => console.log(meta.offset, data));
//   hub.publish("scores", { home: 1, away: 0 });
//   hub.on("gap", (topic, reason) => reloadFromScratch(topic, reason));
//   hub.close();
//
// What it does:
// - Keeps each topic's last position (epoch, offset) from the messages it
//   receives and, on every reconnect, resubscribes with `since`, so a server
//   that keeps history replays what was missed. A topic that cannot be
//   resumed (epoch changed, too old, a server that sends no positions) is
//   reported once as a `gap` event: the application reloads it its own way.
//   Duplicates (an offset already seen) are dropped.
// - Reconnects with full-jitter exponential backoff (`backoffBaseMs`,
//   `backoffCapMs`), honouring the server's hints: a 1013 close whose reason
//   says "retry in N s" waits at least N s; the drain's 1001 reconnects after
//   a short jittered delay (`drainDelayMs`); a refused upgrade's
//   `Retry-After`, where the WebSocket implementation shows the response (the
//   npm `ws` package's 'unexpected-response'; browsers never do).
// - Queues publishes made while disconnected, up to `maxQueuedBytes`, and
//   sends them in order once resubscribed; past the bound publish() throws.
//   A publish handed to a socket that then drops may be lost (at most once).
// - Falls back to server-sent events (`GET /hub/events`, for networks that
//   break WebSocket) after `sseAfterFailures` WebSocket failures in a row (a
//   connection that never opened, or dropped within 5 s); off by default
//   (0). Each event carries the hub's message JSON and, as its id, the
//   position in every topic ("TOPIC:EPOCH:OFFSET,...", topic names
//   encodeURIComponent'd), which the browser sends back as Last-Event-ID
//   when it reconnects by itself; a fresh EventSource, which cannot set
//   headers, sends the same list as `since=`. Every stream opens with a
//   `subscribed` event, the WebSocket answer's JSON: a topic it could not
//   resume is reported as a `gap`. Publishes stay queued while on SSE (the
//   stream is one-way); a stream the browser gives up on (a refusal, a
//   wrong type) sends the client back to WebSocket.
//
// Events (hub.on(name, fn) returns a function that removes fn):
//   open ()             a connection is open (and resubscribing)
//   close (code, reason) a connection ended (not yet the hub: it reconnects)
//   gap (topic, reason) a topic could not be resumed; messages were missed
//   state (state, info) "connecting" | "open" | "waiting" ({delayMs, why}) | "closed"
//   error (message)     the server refused a request ({"op":"error"})
//
// Offsets are JavaScript numbers: exact up to 2^53 publishes per epoch.
//
// In Node without a global WebSocket (before 22), pass one:
//   import WebSocket from "ws"; surge.connect(url, { WebSocket });
// Node's EventSource, for the fallback, is behind --experimental-eventsource
// (or pass one as options.EventSource).

const DEFAULTS = {
  WebSocket: undefined, // a constructor; default: globalThis.WebSocket
  EventSource: undefined, // a constructor; default: globalThis.EventSource
  backoffBaseMs: 500,
  backoffCapMs: 30000,
  drainDelayMs: 1000, // after a 1001: wait a random 0..this
  connectTimeoutMs: 10000, // an upgrade that takes longer counts as failed
  maxQueuedBytes: 1 << 20, // publishes waiting while disconnected
  sseAfterFailures: 0, // WebSocket failures in a row before SSE (0: never)
  sseUrl: undefined, // default: the hub URL with http(s) and "/events"
  random: Math.random, // the jitter's source (tests make it fixed)
};

// The hub refuses more topics than this in one request.
const TOPICS_PER_REQUEST = 64;
// A connection that ends sooner than this after opening counts as failed, so
// a server (or proxy) that accepts and drops at once is backed off from,
// and counts toward the fallback to server-sent events.
const STABLE_MS = 5000;
const encoder = new TextEncoder();

export function connect(url, options = {}) {
  return new Hub(url, options);
}

export class Hub {
  #url;
  #opts;
  #topics = new Map(); // topic -> {handlers, position, live, asked}
  #listeners = new Map(); // event name -> Set of functions
  #queue = []; // publish frames waiting for a connection
  #queuedBytes = 0;
  #socket = null;
  #sse = null;
  #state = "connecting";
  #failures = 0; // connections in a row that failed (see STABLE_MS)
  #timer = null;
  #hintMs = 0; // a wait the server asked for, for the next reconnect

  constructor(url, options) {
    new URL(url); // a malformed URL throws here, not on every reconnect
    this.#url = url;
    this.#opts = { ...DEFAULTS, ...options };
    this.#opts.WebSocket ??= globalThis.WebSocket;
    if (typeof this.#opts.WebSocket !== "function") {
      throw new TypeError(
        "surge: no WebSocket here: pass one as options.WebSocket (e.g. the npm package ws)",
      );
    }
    // After the caller's synchronous on() and subscribe() calls, so its
    // listeners see the first "connecting".
    queueMicrotask(() => this.#state !== "closed" && this.#dial());
  }

  /** "connecting", "open", "waiting" or "closed". */
  get state() {
    return this.#state;
  }

  on(event, fn) {
    if (!this.#listeners.has(event)) this.#listeners.set(event, new Set());
    this.#listeners.get(event).add(fn);
    return () => this.#listeners.get(event).delete(fn);
  }

  /** Calls onMessage(data, {topic, epoch, offset}); returns the unsubscribe. */
  subscribe(topic, onMessage) {
    let entry = this.#topics.get(topic);
    if (!entry) {
      entry = { handlers: new Set(), position: null, live: false, asked: false };
      this.#topics.set(topic, entry);
      if (this.#sse) this.#openSse();
      else this.#subscribe([topic]);
    }
    const handler = (data, meta) => onMessage(data, meta);
    entry.handlers.add(handler);
    return () => {
      entry.handlers.delete(handler);
      if (entry.handlers.size > 0 || this.#topics.get(topic) !== entry) return;
      this.#topics.delete(topic);
      if (this.#isOpen()) this.#send({ op: "unsubscribe", topics: [topic] });
      if (this.#sse) this.#openSse();
    };
  }

  publish(topic, data) {
    if (this.#state === "closed") throw new Error("surge: publish on a closed hub");
    if (data === undefined) throw new TypeError("surge: publish needs data (any JSON value)");
    const frame = JSON.stringify({ op: "publish", topic, data });
    if (this.#isOpen() && !this.#sse) return this.#socket.send(frame);
    const bytes = encoder.encode(frame).length;
    if (this.#queuedBytes + bytes > this.#opts.maxQueuedBytes) {
      throw new Error(
        `surge: publish queue full: ${this.#queuedBytes} bytes wait for a connection ` +
          `and this publish is ${bytes} (maxQueuedBytes ${this.#opts.maxQueuedBytes})`,
      );
    }
    this.#queue.push(frame);
    this.#queuedBytes += bytes;
  }

  close() {
    if (this.#state === "closed") return;
    clearTimeout(this.#timer);
    this.#setState("closed");
    this.#sse?.close();
    this.#sse = null;
    const socket = this.#socket;
    this.#socket = null;
    if (socket) socket.close(1000);
    this.#queue = [];
    this.#queuedBytes = 0;
  }

  // ---- connection ----

  #dial() {
    this.#setState("connecting");
    let socket;
    try {
      socket = new this.#opts.WebSocket(this.#url);
    } catch (e) {
      // Refused before any I/O (a browser's security rule, a bad port).
      this.#emit("error", String(e?.message ?? e));
      this.#failures += 1;
      return this.#retry(1006, "");
    }
    this.#socket = socket;
    let openedAt = 0;
    const timeout = setTimeout(() => socket.close(), this.#opts.connectTimeoutMs);
    // The npm ws package shows a refused upgrade's response (browsers hide
    // it): its Retry-After is the server's word on when to come back.
    if (typeof socket.on === "function") {
      socket.on("unexpected-response", (_req, res) => {
        this.#hintMs = retryAfterMs(res.headers["retry-after"]);
        socket.terminate();
      });
    }
    socket.addEventListener("open", () => {
      if (this.#socket !== socket) return;
      clearTimeout(timeout);
      openedAt = Date.now();
      this.#hintMs = 0;
      // Subscribes first, then the queued publishes in the order they were
      // made, then the listeners (whose publishes go after both).
      this.#state = "open";
      this.#resubscribe();
      for (const frame of this.#queue) socket.send(frame);
      this.#queue = [];
      this.#queuedBytes = 0;
      this.#setState("open");
      this.#emit("open");
    });
    socket.addEventListener("message", (event) => {
      if (this.#socket === socket) this.#receive(event.data);
    });
    // Once per socket, whichever event comes first.
    const ended = (code, reason) => {
      clearTimeout(timeout);
      if (this.#socket !== socket) return;
      this.#socket = null;
      for (const entry of this.#topics.values()) entry.asked = false;
      this.#emit("close", code, reason);
      if (this.#state === "closed") return;
      const stable = openedAt > 0 && Date.now() - openedAt >= STABLE_MS;
      this.#failures = stable ? 0 : this.#failures + 1;
      this.#retry(code, reason);
    };
    // An open socket's error is followed by its close, which has the code.
    // One that never opened may stay silent after its error (Node 20's
    // WebSocket does), so the error ends it.
    socket.addEventListener("error", () => {
      if (openedAt > 0) return;
      ended(1006, "");
      try {
        socket.close();
      } catch {
        // Already closing.
      }
    });
    socket.addEventListener("close", (event) => ended(event.code, event.reason));
  }

  #retry(code, reason) {
    const o = this.#opts;
    if (o.sseAfterFailures > 0 && this.#failures >= o.sseAfterFailures) {
      const EventSource = o.EventSource ?? globalThis.EventSource;
      if (typeof EventSource === "function") return this.#openSse(EventSource);
    }
    // Full jitter: a random wait up to the exponential bound, so clients
    // dropped together do not come back together.
    const bound = Math.min(o.backoffCapMs, o.backoffBaseMs * 2 ** this.#failures);
    let delayMs = o.random() * bound;
    let why = "backoff";
    const hinted = code === 1013 && /retry in (\d+(?:\.\d+)?) ?s/.exec(reason ?? "");
    if (hinted) {
      delayMs = Math.max(delayMs, Number(hinted[1]) * 1000);
      why = "retry in";
    } else if (code === 1001) {
      // A drain (or an idle close): the server is fine, this node is going;
      // the balancer has another. The server already spread its closes.
      delayMs = o.random() * o.drainDelayMs;
      why = "going away";
    } else if (this.#hintMs > 0) {
      delayMs = Math.max(delayMs, this.#hintMs);
      why = "Retry-After";
    }
    this.#hintMs = 0;
    this.#setState("waiting", { delayMs: Math.round(delayMs), why });
    this.#timer = setTimeout(() => this.#dial(), delayMs);
  }

  // A WebSocket that is open and ours (a close listener runs after the
  // socket is gone but before the state says so).
  #isOpen() {
    return this.#state === "open" && this.#socket !== null;
  }

  #send(request) {
    if (this.#socket) this.#socket.send(JSON.stringify(request));
  }

  // ---- subscriptions and positions ----

  #resubscribe() {
    for (const [topic, entry] of this.#topics) {
      // Live before without a position: the server keeps none, so what was
      // published while away is lost and nobody can tell how much.
      if (entry.live && !entry.position) this.#emit("gap", topic, "server sends no positions");
      entry.live = false;
    }
    this.#subscribe([...this.#topics.keys()]);
  }

  #subscribe(topics) {
    if (!this.#isOpen() || this.#sse) return;
    for (let i = 0; i < topics.length; i += TOPICS_PER_REQUEST) {
      const chunk = topics.slice(i, i + TOPICS_PER_REQUEST);
      const since = {};
      for (const topic of chunk) {
        const entry = this.#topics.get(topic);
        entry.asked = true;
        if (entry.position) since[topic] = entry.position;
      }
      // Only a server that sent positions gets `since`: one that does not
      // know the field refuses the whole request.
      const request = { op: "subscribe", topics: chunk };
      if (Object.keys(since).length > 0) request.since = since;
      this.#send(request);
    }
  }

  #receive(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    if (msg.op === "subscribed") return this.#subscribed(msg);
    if (msg.op === "error") return this.#refused(msg.error);
    if (typeof msg.topic === "string" && !msg.op) this.#deliver(msg);
  }

  #subscribed(msg) {
    const recovered = msg.recovered ?? {};
    const reasons = msg.reasons ?? {};
    for (const topic of msg.topics ?? []) {
      const entry = this.#topics.get(topic);
      if (!entry) continue;
      entry.live = true;
      entry.asked = false;
      const now = msg.positions?.[topic];
      if (recovered[topic] === true) continue; // the replay moves our position
      if (recovered[topic] === false) this.#emit("gap", topic, reasons[topic] ?? "not recovered");
      // From here on: the server's position, so the next message is now+1.
      if (now) entry.position = { epoch: now.epoch, offset: now.offset };
    }
  }

  #refused(error) {
    // A server that predates positions refuses `since`: ask again without,
    // and say those topics were not resumed.
    if (typeof error === "string" && error.includes('"since"')) {
      const again = [];
      for (const [topic, entry] of this.#topics) {
        if (!entry.asked || !entry.position) continue;
        entry.position = null;
        entry.live = false;
        this.#emit("gap", topic, "server cannot resume");
        again.push(topic);
      }
      if (again.length > 0) return this.#subscribe(again);
    }
    this.#emit("error", error);
  }

  #deliver(msg, eventId) {
    const entry = this.#topics.get(msg.topic);
    if (!entry) return;
    const position = positionOf(msg) ?? eventId?.get(msg.topic);
    if (position) {
      const last = entry.position;
      if (last && last.epoch === position.epoch) {
        if (position.offset <= last.offset) return; // seen already
        if (position.offset > last.offset + 1) {
          const missed = position.offset - last.offset - 1;
          this.#emit("gap", msg.topic, `missed ${missed} (after offset ${last.offset})`);
        }
      } else if (last && !(last.offset === 0 && position.offset === 1)) {
        // From an empty stream to the first message of another one nothing
        // was missed: a topic nobody published to yet gets its epoch with
        // its first publish when its positions live in Redis.
        this.#emit("gap", msg.topic, "epoch changed");
      }
      entry.position = position;
    }
    const meta = { topic: msg.topic, epoch: position?.epoch, offset: position?.offset };
    for (const handler of entry.handlers) safely(handler, msg.data, meta);
  }

  // ---- server-sent events ----

  #openSse(EventSource = this.#opts.EventSource ?? globalThis.EventSource) {
    this.#sse?.close();
    const url = new URL(this.#opts.sseUrl ?? sseUrlOf(this.#url));
    // Topic names encoded, as the server and parseEventId decode them: a
    // name may hold the lists' own ',' and ':'.
    const topics = [...this.#topics.keys()].map(encodeURIComponent);
    url.searchParams.set("topics", topics.join(","));
    // A fresh EventSource cannot send Last-Event-ID: the same list goes in
    // the query (the browser's own reconnects send the header).
    const since = [];
    for (const [topic, { position }] of this.#topics) {
      if (position) since.push(`${encodeURIComponent(topic)}:${position.epoch}:${position.offset}`);
    }
    if (since.length > 0) url.searchParams.set("since", since.join(","));
    const sse = new EventSource(url.toString());
    this.#sse = sse;
    this.#setState("connecting", { transport: "sse" });
    sse.onopen = () => {
      if (this.#sse !== sse) return;
      this.#setState("open", { transport: "sse" });
      this.#emit("open");
    };
    // Every (re)connection's answer: where each topic starts, and which
    // could not be resumed.
    sse.addEventListener("subscribed", (event) => {
      if (this.#sse !== sse) return;
      try {
        this.#subscribed(JSON.parse(event.data));
      } catch {
        // Not JSON: nothing to learn from it.
      }
    });
    sse.onmessage = (event) => {
      if (this.#sse !== sse) return;
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch {
        return;
      }
      if (typeof msg.topic === "string") this.#deliver(msg, parseEventId(event.lastEventId));
    };
    sse.onerror = () => {
      // CONNECTING: the browser retries by itself. CLOSED: it gave up (a
      // refusal, a wrong type): back to WebSocket from a clean slate.
      if (this.#sse !== sse || sse.readyState !== 2) return;
      this.#sse = null;
      this.#emit("close", 1006, "event stream failed");
      this.#failures = 0;
      if (this.#state !== "closed") this.#retry(1006, "");
    };
  }

  #emit(event, ...args) {
    for (const fn of this.#listeners.get(event) ?? []) safely(fn, ...args);
  }

  #setState(state, info = {}) {
    this.#state = state;
    this.#emit("state", state, info);
  }
}

// Calls an application's function. Its bug must not stop the client nor
// the other functions: the error is rethrown on its own, where the page's or
// the process's error handler sees it.
function safely(fn, ...args) {
  try {
    fn(...args);
  } catch (e) {
    setTimeout(() => {
      throw e;
    });
  }
}

// The (epoch, offset) a message carries, if the server sends positions.
function positionOf(msg) {
  if (typeof msg.epoch !== "string" || typeof msg.offset !== "number") return null;
  return { epoch: msg.epoch, offset: msg.offset };
}

// An SSE event id, "TOPIC:EPOCH:OFFSET,...", as a Map topic -> position.
// The topic is what comes before the last two colons.
function parseEventId(id) {
  const positions = new Map();
  for (const part of (id ?? "").split(",")) {
    const m = /^(.+):([0-9a-f]{16}):(\d+)$/.exec(part);
    if (m) positions.set(decodeURIComponent(m[1]), { epoch: m[2], offset: Number(m[3]) });
  }
  return positions;
}

function sseUrlOf(hubUrl) {
  const url = new URL(hubUrl);
  url.protocol = url.protocol === "wss:" ? "https:" : "http:";
  url.pathname = url.pathname.replace(/\/$/, "") + "/events";
  return url.toString();
}

// Retry-After is seconds or an HTTP date.
function retryAfterMs(value) {
  if (value === undefined) return 0;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const date = Date.parse(value);
  return Number.isNaN(date) ? 0 : Math.max(0, date - Date.now());
}

export default { connect, Hub };
