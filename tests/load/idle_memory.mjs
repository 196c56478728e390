// Loopback load run: the memory a server holds per idle connection. Opens
// `--connections` Socket.IO sockets (WebSocket, connected to `/`, then silent
// but for answering pings) against each server in turn, on fresh processes,
// and reports the growth of the server's resident memory (VmRSS) per
// connection, once the opening has settled. Servers: Switchboard (the chat
// plugin on `/`, a node in memory, with recovery sessions as by default), the
// same contract on plain socketioxide (tests/load/socketioxide-baseline), and
// Node's socket.io (tests/load/baseline-server.mjs).
//
//   node tests/load/idle_memory.mjs [--connections 10000] [--servers switchboard,socketioxide,node]
//
// Clients connect from 127.0.0.2 onwards, 500 per address, so Switchboard's
// per-address limits keep their defaults; its `max_connections` is raised to
// fit. A process here may hold 20,000 files (`ulimit -n`), which bounds one
// server to a little under that many connections. Uses
// target/release/switchboard (or $SWITCHBOARD_BIN).
import path from "node:path";
import { parseArgs } from "node:util";

import { REPO, chatPlugin, manifestToml, sleep, writeManifest } from "../e2e/harness.mjs";
import { memoryKib } from "./proc.mjs";
import { openRawSocket } from "../e2e/raw_socket.mjs";
import { serveRelease, serveSocketioxide, startServer } from "./servers.mjs";

const { values } = parseArgs({
  options: {
    connections: { type: "string", default: "10000" },
    servers: { type: "string", default: "switchboard,socketioxide,node" },
  },
});
const CONNECTIONS = Number(values.connections);
const PER_ADDRESS = 500;
const OPENING_AT_ONCE = 200;
const SETTLE_MS = 3000;

const SERVERS = {
  switchboard: () =>
    serveRelease(
      writeManifest(manifestToml({ server: { max_connections: CONNECTIONS + 100 }, plugins: [chatPlugin()] })),
    ),
  socketioxide: () => serveSocketioxide(),
  node: () => startServer(process.execPath, [path.join(REPO, "tests/load/baseline-server.mjs")]),
};

async function measure(name) {
  const server = await SERVERS[name]();
  const port = new URL(server.url).port;
  const sockets = [];
  try {
    // One connection first, so what every server allocates once (its first
    // socket's buffers, lazily started pools) is not counted per connection.
    sockets.push(await openRawSocket(port, "/"));
    await sleep(SETTLE_MS);
    const before = memoryKib(server.child.pid).rss;
    for (let opened = 1; opened < CONNECTIONS + 1; opened += OPENING_AT_ONCE) {
      const batch = Array.from({ length: Math.min(OPENING_AT_ONCE, CONNECTIONS + 1 - opened) }, (_, n) =>
        openRawSocket(port, "/", { localAddress: `127.0.0.${2 + Math.floor((opened + n) / PER_ADDRESS)}` }),
      );
      sockets.push(...(await Promise.all(batch)));
    }
    await sleep(SETTLE_MS);
    const after = memoryKib(server.child.pid).rss;
    return { name, before, after, perConnection: (after - before) / CONNECTIONS };
  } finally {
    for (const socket of sockets) socket.close();
    await server.stop();
  }
}

const results = [];
for (const name of values.servers.split(",")) results.push(await measure(name));
const baseline = results.find((result) => result.name === "socketioxide");
console.log(`${CONNECTIONS} idle Socket.IO connections (WebSocket), RSS growth per connection`);
for (const result of results) {
  const ratio = baseline ? ` (${(result.perConnection / baseline.perConnection).toFixed(2)}x socketioxide)` : "";
  console.log(
    `${result.name.padEnd(12)} ${result.perConnection.toFixed(1).padStart(6)} KiB per connection${ratio}` +
      `  RSS ${Math.round(result.before / 1024)} -> ${Math.round(result.after / 1024)} MiB`,
  );
}
