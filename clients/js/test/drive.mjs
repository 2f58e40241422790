// Drives one surge.js client for the Rust tests in tests/js_client.rs:
//   node drive.mjs URL TOPIC [OPTIONS-JSON] [queue-while-away]
// Subscribes to TOPIC and, on every open, publishes {"hello": N} to it: its
// own hello coming back proves the subscription is live. Every event is one
// JSON line on stdout, with `t` in milliseconds since start. OPTIONS-JSON
// goes to connect(); its "random" is a number, the jitter made fixed. With
// queue-while-away, the first close is followed by three publishes of
// {"queued": K} and one of 1000 bytes, whose refusal is printed.
import WebSocket from "ws";
import * as surge from "../surge.js";

const [url, topic, optionsJson, mode] = process.argv.slice(2);
const options = JSON.parse(optionsJson ?? "{}");
if (typeof options.random === "number") {
  const r = options.random;
  options.random = () => r;
}
const start = Date.now();
const say = (ev, fields = {}) =>
  process.stdout.write(JSON.stringify({ ev, t: Date.now() - start, ...fields }) + "\n");

const hub = surge.connect(url, { WebSocket, ...options });
let opens = 0;
hub.on("open", () => {
  opens += 1;
  say("open", { opens });
  hub.publish(topic, { hello: opens });
});
let closes = 0;
hub.on("close", (code, reason) => {
  say("close", { code, reason });
  closes += 1;
  if (mode !== "queue-while-away" || closes > 1) return;
  for (let k = 1; k <= 3; k++) hub.publish(topic, { queued: k });
  try {
    hub.publish(topic, "x".repeat(1000));
  } catch (e) {
    say("refused", { error: e.message });
  }
});
hub.on("state", (state, info) => say("state", { state, info }));
hub.on("gap", (t, reason) => say("gap", { topic: t, reason }));
hub.on("error", (error) => say("error", { error }));
hub.subscribe(topic, (data, meta) => {
  if (data && data.hello === opens) say("ready", { opens });
  // Large messages (the slow-consumer test's) are shown by size only.
  else say("message", { data: JSON.stringify(data).length < 200 ? data : null, meta });
});
// The test ends it by closing stdin (or killing it).
process.stdin.on("end", () => {
  hub.close();
  process.exit(0);
});
process.stdin.resume();
