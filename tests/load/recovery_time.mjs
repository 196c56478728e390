// How long a session takes to recover: many clients in one room receive a
// message stream; their connections are all dropped at once
// (`socket.io.engine.close()`); each reconnects at once and must get its
// session back (`socket.recovered`) with every message exactly once, in order.
// Reports the time from each client's reconnect attempt to its `connect`
// (handshake, CONNECT, and the catch-up of what it missed), p50 / p99.
//
//   node tests/load/recovery_time.mjs [--clients 200] [--rate 100] [--cluster]
//
// --cluster: two nodes over a redis-server; each client was on node A and
//   reconnects to node B, so its session and missed events come from Redis.
//
// Uses target/release/switchboard (build it with `cargo build --release`).
import { parseArgs } from "node:util";

import { io } from "socket.io-client";

import { chatPlugin, manifestToml, writeManifest } from "../e2e/harness.mjs";
import { startRedis } from "../e2e/redis.mjs";
import { UNLIMITED_SOCKET, serveRelease } from "./servers.mjs";

const { values } = parseArgs({
  options: {
    clients: { type: "string", default: "200" },
    rate: { type: "string", default: "100" },
    cluster: { type: "boolean", default: false },
  },
});
const CLIENTS = Number(values.clients);
const RATE = Number(values.rate);

// Every client connects from 127.0.0.1: no per-address limits; the sender
// may send faster than the default event rate.
const server = { connections_per_second_per_ip: 0, max_connections_per_ip: 0 };
const namespaces = { "/": UNLIMITED_SOCKET };
const plugins = [chatPlugin({ config: { history_size: 10 } })];
const redis = values.cluster ? await startRedis() : undefined;
const manifest = writeManifest(
  manifestToml({ server, plugins, namespaces }) + (redis ? `\n[cluster]\nredis_url = "${redis.url}"\n` : ""),
);
const nodes = redis ? [await serveRelease(manifest), await serveRelease(manifest)] : [await serveRelease(manifest)];
const [first, second] = [nodes[0], nodes.at(-1)];

function connect(url, user, options = {}) {
  const socket = io(url, { transports: ["websocket"], auth: { user }, forceNew: true, reconnection: false, ...options });
  return new Promise((resolve, reject) => {
    socket.once("connect", () => resolve(socket));
    socket.once("connect_error", reject);
  });
}

const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))];
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const sender = await connect(first.url, "sender");
await sender.timeout(10000).emitWithAck("join", { room: "stream" });
const clients = [];
for (let index = 0; index < CLIENTS; index++) {
  const socket = await connect(first.url, `reader${index}`, { reconnection: true, reconnectionDelay: 0, reconnectionDelayMax: 0 });
  await socket.timeout(10000).emitWithAck("join", { room: "stream" });
  const client = { socket, got: [], attempt: 0, recoveredIn: NaN };
  socket.on("message", (message) => client.got.push(Number(message.text)));
  socket.io.on("reconnect_attempt", () => {
    client.attempt = performance.now();
  });
  socket.on("connect", () => {
    client.recoveredIn = performance.now() - client.attempt;
  });
  // Where a client behind a balancer lands once its node is gone.
  socket.on("disconnect", () => {
    socket.io.uri = second.url;
  });
  clients.push(client);
}

let sent = 0;
let sending = true;
const stream = (async () => {
  const started = performance.now();
  while (sending) {
    await sender.timeout(10000).emitWithAck("send_message", { room: "stream", text: String(sent) });
    sent++;
    const due = started + (sent * 1000) / RATE;
    await sleep(Math.max(0, due - performance.now()));
  }
})();

await sleep(1000);
for (const client of clients) client.socket.io.engine.close();
const deadline = Date.now() + 30000;
while (clients.some((client) => !client.socket.connected) && Date.now() < deadline) await sleep(20);
await sleep(1000);
sending = false;
await stream;
const settle = Date.now() + 10000;
while (clients.some((client) => client.got.length < sent) && Date.now() < settle) await sleep(20);

const times = clients.map((client) => client.recoveredIn).filter(Number.isFinite).sort((a, b) => a - b);
const recovered = clients.filter((client) => client.socket.recovered).length;
let lost = 0;
let wrong = 0;
for (const client of clients) {
  lost += sent - new Set(client.got).size;
  wrong += client.got.some((n, index) => n !== index) ? 1 : 0;
}
console.log(
  `${CLIENTS} clients dropped at once, ${RATE} msg/s to their room, ${values.cluster ? "two nodes over Redis (reconnecting to the other)" : "one node"}`,
);
console.log("| recovered | messages sent | lost | clients with a duplicate or out of order | recovery p50 ms | p99 ms |");
console.log("|---|---|---|---|---|---|");
console.log(
  `| ${recovered}/${CLIENTS} | ${sent} | ${lost} | ${wrong} | ${percentile(times, 50).toFixed(1)} | ${percentile(times, 99).toFixed(1)} |`,
);
for (const client of clients) client.socket.close();
sender.close();
for (const node of nodes) node.child.kill("SIGTERM");
await redis?.stop();
process.exit(0);
