// The Socket.IO v5 reference server in the configuration the socket.io-protocol
// test suite expects (the end of the protocol's Readme), bound to loopback only.
//
//   node reference_server.mjs PORT [--ping-interval MS] [--ping-timeout MS] [--max-payload N]
//                                  [--connect-timeout MS] [--recovery-ms N] [--rooms]
//
// Prints `listening on 127.0.0.1:PORT` to stderr once it accepts connections.
// The Readme's `new Server(3000, ...)` binds every interface and serves the
// client bundle at /socket.io/socket.io.js; this one binds 127.0.0.1 and serves
// no bundle (serveClient: false), otherwise the same 404 outside /socket.io/.
//
// Beyond the Readme, only behind flags:
//   --connect-timeout MS  socket.io's connectTimeout (default 45000): how long a session
//                         may stay without any namespace before the server closes it
//   --recovery-ms N       connectionStateRecovery: { maxDisconnectionDuration: N }
//   --rooms               on "/": `join` (room, ack) and `leave` (room, ack) ack with the
//                         socket's rooms; `to-room` (room, ...args, ack?) emits
//                         `room-event` (room, ...args) to the room, then acks with no args
import { createServer } from "node:http";
import { Server } from "socket.io";

function parseArgs(argv) {
  const usage =
    "usage: reference_server.mjs PORT [--ping-interval MS] [--ping-timeout MS] [--max-payload N]" +
    " [--connect-timeout MS] [--recovery-ms N] [--rooms]";
  // The Readme names `maxPayload: 1000000`, which is not a socket.io option and
  // is ignored: the open packet's maxPayload and the body/frame limits come
  // from engine.io's maxHttpBufferSize (default 1e6), which --max-payload sets.
  const options = { pingInterval: 300, pingTimeout: 200, maxHttpBufferSize: 1e6, cors: { origin: "*" }, serveClient: false };
  const numeric = {
    "--ping-interval": "pingInterval",
    "--ping-timeout": "pingTimeout",
    "--max-payload": "maxHttpBufferSize",
    "--connect-timeout": "connectTimeout",
  };
  let rooms = false;
  const port = Number(argv[0]);
  if (!Number.isInteger(port) || port <= 0 || port > 65535) throw new Error(usage);
  for (let i = 1; i < argv.length; i++) {
    const flag = argv[i];
    if (flag === "--rooms") {
      rooms = true;
      continue;
    }
    if (!(flag in numeric) && flag !== "--recovery-ms") throw new Error(`unknown argument ${flag}\n${usage}`);
    const value = Number(argv[++i]);
    if (!Number.isInteger(value) || value <= 0) throw new Error(`${flag} needs a positive integer\n${usage}`);
    if (flag === "--recovery-ms") options.connectionStateRecovery = { maxDisconnectionDuration: value };
    else options[numeric[flag]] = value;
  }
  return { port, options, rooms };
}

let parsed;
try {
  parsed = parseArgs(process.argv.slice(2));
} catch (err) {
  console.error(err.message);
  process.exit(2);
}
const { port, options, rooms } = parsed;

// The same answer socket.io's own listen() gives outside its path.
const httpServer = createServer((req, res) => {
  res.writeHead(404);
  res.end();
});
const io = new Server(httpServer, options);

// The socket's own room (its id) is left out: clients only see rooms they joined.
const joined = (socket) => [...socket.rooms].filter((room) => room !== socket.id);

io.on("connection", (socket) => {
  socket.emit("auth", socket.handshake.auth);
  socket.on("message", (...args) => {
    socket.emit("message-back", ...args);
  });
  socket.on("message-with-ack", (...args) => {
    const ack = args.pop();
    ack(...args);
  });
  if (!rooms) return;
  socket.on("join", (room, ack) => {
    socket.join(room);
    if (typeof ack === "function") ack(joined(socket));
  });
  socket.on("leave", (room, ack) => {
    socket.leave(room);
    if (typeof ack === "function") ack(joined(socket));
  });
  socket.on("to-room", (room, ...args) => {
    const ack = typeof args[args.length - 1] === "function" ? args.pop() : null;
    io.to(room).emit("room-event", room, ...args);
    if (ack) ack();
  });
});

io.of("/custom").on("connection", (socket) => {
  socket.emit("auth", socket.handshake.auth);
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
    io.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 1000).unref();
  });
}
