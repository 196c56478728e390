// Calls per second and latency of transactional state calls, against the
// single-operation path (`immediate::incr`, one Redis script per call, as
// every state call was before calls became transactions), in the same run:
// `--clients` sockets send acked events back to back for `--seconds` each,
// on one node in memory and on two nodes sharing Redis (clients split).
// Uncontended: each client increments its own key; contended: all one key.
// The retry rate is the calls run again after a conflict per committed call
// (the ledger plugin counts its runs with an immediate counter).
//
//   node tests/load/transactions.mjs [--clients 32] [--seconds 5]
//
// Uses target/release/switchboard, or $SWITCHBOARD_BIN.
import { parseArgs } from "node:util";

import { io } from "socket.io-client";

import { manifestToml, unique, wasm, writeManifest } from "../e2e/harness.mjs";
import { startRedis } from "../e2e/redis.mjs";
import { UNLIMITED_SOCKET, serveRelease } from "./servers.mjs";

const { values } = parseArgs({
  options: { clients: { type: "string", default: "32" }, seconds: { type: "string", default: "5" } },
});
const CLIENTS = Number(values.clients);
const SECONDS = Number(values.seconds);

const plugin = {
  name: "ledger",
  path: wasm("ledger"),
  namespaces: ["/ledger"],
  events: ["count", "open", "read"],
  limits: { time_ms: 10_000, queue_ms: 60_000 },
};
const namespaces = { "/ledger": UNLIMITED_SOCKET };
const server = { connections_per_second_per_ip: 10_000, connection_burst_per_ip: 10_000 };

function connect(url) {
  const socket = io(`${url}/ledger`, { transports: ["websocket"], forceNew: true });
  return new Promise((resolve, reject) => {
    socket.once("connect", () => resolve(socket));
    socket.once("connect_error", reject);
  });
}

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))];
}

/** Each client sends `event` with `data(index)` as fast as acks come back. */
async function measure(sockets, event, data) {
  const latencies = [];
  const deadline = Date.now() + SECONDS * 1000;
  await Promise.all(
    sockets.map(async (socket, index) => {
      while (Date.now() < deadline) {
        const started = performance.now();
        const reply = await socket.emitWithAck(event, data(index));
        if (reply?.error) throw new Error(`${event}: ${JSON.stringify(reply.error)}`);
        latencies.push(performance.now() - started);
      }
    }),
  );
  latencies.sort((a, b) => a - b);
  return { calls: latencies.length, perSecond: latencies.length / SECONDS, p50: percentile(latencies, 50), p99: percentile(latencies, 99) };
}

async function value(socket, key) {
  return Number((await socket.emitWithAck("read", { key })).value ?? 0);
}

async function run(label, urls) {
  const sockets = await Promise.all(Array.from({ length: CLIENTS }, (_, index) => connect(urls[index % urls.length])));
  const run = unique("bench");
  const rows = [];
  const single = await measure(sockets, "open", () => ({ gate: `${run}:single` }));
  rows.push({ mode: "single operation (immediate incr)", ...single, retries: "-" });
  const own = (index) => `${run}:own:${index}`;
  const uncontended = await measure(sockets, "count", (index) => ({ key: own(index) }));
  let runs = 0;
  let committed = 0;
  for (let index = 0; index < CLIENTS; index += 1) {
    runs += await value(sockets[0], `runs:${own(index)}`);
    committed += await value(sockets[0], own(index));
  }
  rows.push({ mode: "transaction, uncontended", ...uncontended, retries: ((runs - committed) / committed).toFixed(3) });
  const shared = `${run}:shared`;
  const contended = await measure(sockets, "count", () => ({ key: shared }));
  const sharedRuns = await value(sockets[0], `runs:${shared}`);
  const sharedCommitted = await value(sockets[0], shared);
  rows.push({ mode: "transaction, contended", ...contended, retries: ((sharedRuns - sharedCommitted) / sharedCommitted).toFixed(3) });
  for (const socket of sockets) socket.close();
  console.log(`\n${label}: ${CLIENTS} clients, ${SECONDS} s per mode`);
  console.log("| mode | calls/s | p50 ms | p99 ms | retries per commit |");
  console.log("|---|---:|---:|---:|---:|");
  for (const row of rows) {
    console.log(`| ${row.mode} | ${Math.round(row.perSecond)} | ${row.p50.toFixed(2)} | ${row.p99.toFixed(2)} | ${row.retries} |`);
  }
}

const redis = await startRedis();
const clustered = writeManifest(
  manifestToml({ plugins: [plugin], namespaces, server }) + `\n[cluster]\nredis_url = "${redis.url}"\nprefix = "bench"\n`,
);
const nodes = await Promise.all([serveRelease(clustered), serveRelease(clustered)]);
await run("Two nodes + Redis", nodes.map((node) => node.url));
for (const node of nodes) node.child.kill();
await redis.stop();

const alone = await serveRelease(writeManifest(manifestToml({ plugins: [plugin], namespaces, server })));
await run("One node in memory", [alone.url]);
alone.child.kill();
process.exit(0);
