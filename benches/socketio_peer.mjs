// The Node side of benches/socketio.py: the socket.io server (4.8.4, the one
// pinned by tests/socketio, from its node_modules) with its default options,
// bound to 127.0.0.1. On "/": a connecting socket joins room "all";
// `broadcast` (P) emits `tick` (P) to room "all", the sender included;
// `message` (...) is answered `message-back` (...).
//
// Prints `listening on 127.0.0.1:PORT` to stderr once it accepts connections.
//
// usage: npm ci --prefix tests/socketio --no-audit --no-fund   # once
//        node benches/socketio_peer.mjs PORT
//
// No uWebSockets.js variant: socket.io's attachApp() needs uWebSockets.js,
// which is published on GitHub only; the npm registry's `uwebsockets.js`
// fetches it from there and does not install here.
import { createServer } from "node:http";
import { createRequire } from "node:module";

const require = createRequire(new URL("../tests/socketio/package.json", import.meta.url));
const { Server } = require("socket.io");

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port <= 0 || port > 65535 || process.argv.length > 3) {
  console.error("usage: socketio_peer.mjs PORT");
  process.exit(2);
}

const httpServer = createServer((req, res) => {
  res.writeHead(404);
  res.end();
});
const io = new Server(httpServer);

io.on("connection", (socket) => {
  socket.join("all");
  socket.on("broadcast", (payload) => {
    io.to("all").emit("tick", payload);
  });
  socket.on("message", (...args) => {
    socket.emit("message-back", ...args);
  });
});

httpServer.on("error", (err) => {
  console.error(`cannot listen on 127.0.0.1:${port}: ${err.message}`);
  process.exit(1);
});
httpServer.listen(port, "127.0.0.1", () => {
  console.error(`listening on 127.0.0.1:${port}`);
});
