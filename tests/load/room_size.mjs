// How long a cluster-wide room size takes: `GET /api/v1/namespaces/%2F/rooms/{room}`
// on node A while the room's members are spread over nodes A and B, then the
// same right after node B is killed with SIGKILL (it must not stall).
//
//   node tests/load/room_size.mjs [--queries 300]
//
// Uses target/release/switchboard (build it with `cargo build --release`).
import { parseArgs } from "node:util";

import { io } from "socket.io-client";

import { chatPlugin, manifestToml, writeManifest } from "../e2e/harness.mjs";
import { startRedis } from "../e2e/redis.mjs";
import { serveRelease } from "./servers.mjs";

const { values } = parseArgs({ options: { queries: { type: "string", default: "300" } } });
const QUERIES = Number(values.queries);
const TOKEN = "bench";

async function sizes(node, count) {
  const millis = [];
  let size;
  for (let index = 0; index < count; index++) {
    const started = process.hrtime.bigint();
    const response = await fetch(`${node.url}/api/v1/namespaces/%2F/rooms/measured`, {
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    size = (await response.json()).size;
    millis.push(Number(process.hrtime.bigint() - started) / 1e6);
  }
  const sorted = [...millis].sort((a, b) => a - b);
  const at = (p) => sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))];
  return { size, first: millis[0], p50: at(50), p99: at(99) };
}

const redis = await startRedis();
const manifest = writeManifest(
  manifestToml({ plugins: [chatPlugin()] }) +
    `\n[cluster]\nredis_url = "${redis.url}"\nrequest_timeout_ms = 1000\n\n[api]\ntoken = "${TOKEN}"\n`,
);
const [nodeA, nodeB] = [await serveRelease(manifest), await serveRelease(manifest)];
const sockets = await Promise.all(
  Array.from({ length: 100 }, (_, index) => {
    const socket = io(index % 2 ? nodeB.url : nodeA.url, { transports: ["websocket"], auth: { user: `u${index}` } });
    return socket.timeout(5000).emitWithAck("join", { room: "measured" }).then(() => socket);
  }),
);
const live = await sizes(nodeA, QUERIES);
nodeB.child.kill("SIGKILL");
const afterKill = await sizes(nodeA, QUERIES);
console.log(`room of 100 sockets over 2 nodes, ${QUERIES} sequential queries on node A`);
console.log("| when | size | first query ms | p50 ms | p99 ms |");
console.log("|---|---|---|---|---|");
for (const [when, r] of [["both nodes up", live], ["node B just SIGKILLed", afterKill]]) {
  console.log(`| ${when} | ${r.size} | ${r.first.toFixed(2)} | ${r.p50.toFixed(2)} | ${r.p99.toFixed(2)} |`);
}
for (const socket of sockets) socket.close();
nodeA.child.kill("SIGTERM");
await redis.stop();
process.exit(0);
