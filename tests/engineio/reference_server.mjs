// The Engine.IO v4 reference server in the configuration the engine.io-protocol
// test suite expects (every message sent back), bound to loopback only.
//
//   node reference_server.mjs PORT [--ping-interval MS] [--ping-timeout MS]
//                                  [--max-payload N] [--no-cors]
//
// Prints `listening on 127.0.0.1:PORT` to stderr once it accepts connections.
// engine.io's own `listen()` binds every interface; this builds the same
// server (a 501 answer outside /engine.io/) but on 127.0.0.1.
import { createServer } from "node:http";
import { attach } from "engine.io";

function parseArgs(argv) {
  const usage =
    "usage: reference_server.mjs PORT [--ping-interval MS] [--ping-timeout MS] [--max-payload N] [--no-cors]";
  // The test suite's configuration names `maxPayload: 1e6`, which engine.io
  // ignores: the open packet's maxPayload, the POST body limit (413) and the
  // WebSocket message limit all come from maxHttpBufferSize (default 1e6).
  const options = { pingInterval: 300, pingTimeout: 200, maxHttpBufferSize: 1e6, cors: { origin: "*" } };
  const numeric = { "--ping-interval": "pingInterval", "--ping-timeout": "pingTimeout", "--max-payload": "maxHttpBufferSize" };
  const port = Number(argv[0]);
  if (!Number.isInteger(port) || port <= 0 || port > 65535) throw new Error(usage);
  for (let i = 1; i < argv.length; i++) {
    const flag = argv[i];
    if (flag === "--no-cors") {
      delete options.cors;
    } else if (flag in numeric) {
      const value = Number(argv[++i]);
      if (!Number.isInteger(value) || value <= 0) throw new Error(`${flag} needs a positive integer\n${usage}`);
      options[numeric[flag]] = value;
    } else {
      throw new Error(`unknown argument ${flag}\n${usage}`);
    }
  }
  return { port, options };
}

let parsed;
try {
  parsed = parseArgs(process.argv.slice(2));
} catch (err) {
  console.error(err.message);
  process.exit(2);
}
const { port, options } = parsed;

const httpServer = createServer((req, res) => {
  res.writeHead(501);
  res.end("Not Implemented");
});
const engine = attach(httpServer, options);
engine.on("connection", (socket) => {
  socket.on("data", (...args) => socket.send(...args));
});

httpServer.on("error", (err) => {
  console.error(`cannot listen on 127.0.0.1:${port}: ${err.message}`);
  process.exit(1);
});
httpServer.listen(port, "127.0.0.1", () => {
  console.error(`listening on 127.0.0.1:${port}`);
});

for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => {
    engine.close();
    httpServer.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 1000).unref();
  });
}
