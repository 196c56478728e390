// Loopback load run: many clients in one room, a few senders, every message
// delivered to every member. Measures deliveries per second, latency from
// send to delivery (p50 / p99), and server CPU per delivery.
//
//   node tests/load/fanout.mjs [--subscribers 500] [--senders 5] [--rate 100] [--seconds 10] [--compare node|cluster]
//
// --compare node (default): Switchboard against a plain Node socket.io server.
// --compare cluster: one Switchboard node in memory against two nodes sharing
//   a redis-server, with the subscribers split over both nodes and the senders
//   on the first; CPU is summed over both nodes and Redis.
//
// Uses target/release/switchboard (build it with `cargo build --release`).
import { readFileSync } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";

import { io } from "socket.io-client";

import { REPO, chatPlugin, manifestToml, writeManifest } from "../e2e/harness.mjs";
import { startRedis } from "../e2e/redis.mjs";
import { serveRelease, startServer } from "./servers.mjs";

const { values } = parseArgs({
  options: {
    subscribers: { type: "string", default: "500" },
    senders: { type: "string", default: "5" },
    rate: { type: "string", default: "100" },
    seconds: { type: "string", default: "10" },
    compare: { type: "string", default: "node" },
  },
});
const SUBSCRIBERS = Number(values.subscribers);
const SENDERS = Number(values.senders);
const RATE = Number(values.rate); // messages per second, all senders together
const SECONDS = Number(values.seconds);
const CLOCK_TICKS = 100; // Linux USER_HZ

function cpuSeconds(pid) {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}

function connectClient(url, user) {
  const socket = io(url, { transports: ["websocket"], auth: { user }, forceNew: true, reconnection: false });
  return new Promise((resolve, reject) => {
    socket.once("connect", () => resolve(socket));
    socket.once("connect_error", reject);
  });
}

function percentile(sorted, p) {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))] : NaN;
}

/** `servers`: `{ url }` to connect to (round robin; senders on the first), `pids`: processes whose CPU counts. */
async function run(name, servers, pids) {
  const clients = [];
  for (let index = 0; index < SUBSCRIBERS; index++) {
    // Senders are clients 0..SENDERS-1 and all sit on the first server.
    const server = index < SENDERS ? servers[0] : servers[index % servers.length];
    clients.push(await connectClient(server.url, `user${index}`));
  }
  await Promise.all(clients.map((socket) => socket.timeout(10000).emitWithAck("join", { room: "load" })));

  const latencies = [];
  let deliveries = 0;
  for (const socket of clients) {
    socket.on("message", (message) => {
      deliveries++;
      latencies.push(Number(process.hrtime.bigint() - BigInt(message.text)) / 1e6);
    });
  }
  const expected = Math.round(RATE * SECONDS) * SUBSCRIBERS;
  const totalCpu = () => pids.reduce((sum, pid) => sum + cpuSeconds(pid), 0);
  const cpuBefore = totalCpu();
  const started = process.hrtime.bigint();
  const total = Math.round(RATE * SECONDS);
  for (let sent = 0; sent < total; sent++) {
    const due = started + BigInt(Math.round((sent * 1e9) / RATE));
    const wait = Number(due - process.hrtime.bigint()) / 1e6;
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    clients[sent % SENDERS].emit("send_message", { room: "load", text: String(process.hrtime.bigint()) });
  }
  const deadline = Date.now() + 30000;
  while (deliveries < expected && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
  const elapsed = Number(process.hrtime.bigint() - started) / 1e9;
  const cpu = totalCpu() - cpuBefore;
  latencies.sort((a, b) => a - b);
  for (const socket of clients) socket.close();
  for (const server of servers) server.child?.kill("SIGTERM");
  return {
    name,
    deliveries,
    expected,
    perSecond: deliveries / elapsed,
    cpuMicrosPerDelivery: (cpu * 1e6) / deliveries,
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
  };
}

const chat = chatPlugin({ config: { history_size: 10 } });
// Every simulated user connects from 127.0.0.1: no per-address connection rate or cap.
const crowd = { connections_per_second_per_ip: 0, max_connections_per_ip: 0 };
// A sender may send above the default event rate (`--rate` over `--senders`): not what this measures.
const namespaces = { "/": { events_per_second: 100_000, event_burst: 100_000 } };
const single = writeManifest(manifestToml({ server: crowd, plugins: [chat], namespaces }));
const results = [];
const ours = await serveRelease(single);
results.push(await run("switchboard, one node (chat plugin)", [ours], [ours.child.pid]));
if (values.compare === "cluster") {
  const redis = await startRedis();
  const clustered = writeManifest(manifestToml({ server: crowd, plugins: [chat], namespaces }) + `\n[cluster]\nredis_url = "${redis.url}"\n`);
  const nodes = [await serveRelease(clustered), await serveRelease(clustered)];
  results.push(await run("switchboard, two nodes + Redis", nodes, [...nodes.map((node) => node.child.pid), redis.pid]));
  await redis.stop();
} else {
  const baseline = await startServer(process.execPath, [path.join(REPO, "tests/load/baseline-server.mjs")]);
  results.push(await run("node socket.io (baseline)", [baseline], [baseline.child.pid]));
}

console.log(`${SUBSCRIBERS} subscribers in one room, ${SENDERS} senders, ${RATE} msg/s for ${SECONDS} s, websocket, loopback`);
console.log("| server | delivered | deliveries/s | server CPU µs/delivery | p50 ms | p99 ms |");
console.log("|---|---|---|---|---|---|");
for (const r of results) {
  console.log(`| ${r.name} | ${r.deliveries}/${r.expected} | ${r.perSecond.toFixed(0)} | ${r.cpuMicrosPerDelivery.toFixed(2)} | ${r.p50.toFixed(1)} | ${r.p99.toFixed(1)} |`);
}
const [first, second] = results;
console.log(
  `${first.name} / ${second.name}: CPU per delivery ${(first.cpuMicrosPerDelivery / second.cpuMicrosPerDelivery).toFixed(2)}x, ` +
    `p99 ${(first.p99 / second.p99).toFixed(2)}x`,
);
process.exit(0);
