// Bid throughput of the auction plugin: `--bidders` clients bid on one
// auction as fast as their acks come back, for `--seconds`, against two nodes
// sharing Redis (bidders split over them), then against one node in memory
// as the baseline. Every bid is a compare-and-swap on the auction's state,
// so this measures contended atomic updates, not just dispatch.
//
//   node tests/load/bids.mjs [--bidders 40] [--seconds 10]
//
// Uses target/release/switchboard (build it with `cargo build --release`).
import { parseArgs } from "node:util";

import { io } from "socket.io-client";

import { auctionPlugin } from "../e2e/apps.mjs";
import { manifestToml, writeManifest } from "../e2e/harness.mjs";
import { startRedis } from "../e2e/redis.mjs";
import { HS256_AUTH, tokenFor } from "../e2e/tokens.mjs";
import { UNLIMITED_SOCKET, serveRelease } from "./servers.mjs";

const { values } = parseArgs({
  options: { bidders: { type: "string", default: "40" }, seconds: { type: "string", default: "10" } },
});
const BIDDERS = Number(values.bidders);
const SECONDS = Number(values.seconds);

function connect(url, user) {
  const socket = io(`${url}/auction`, { auth: { token: tokenFor(user) }, transports: ["websocket"], forceNew: true });
  return new Promise((resolve, reject) => {
    socket.once("connect", () => resolve(socket));
    socket.once("connect_error", reject);
  });
}

async function createAuction(url) {
  const response = await fetch(`${url}/apps/auction/auctions`, {
    method: "POST",
    headers: { authorization: `Bearer ${tokenFor("seller")}`, "content-type": "application/json" },
    body: JSON.stringify({ item: "load", starting_price: 1, min_increment: 1, duration_ms: 3_600_000 }),
  });
  return (await response.json()).id;
}

/** Each bidder bids one more than the last amount it saw, until time is up. */
async function run(urls) {
  const id = await createAuction(urls[0]);
  const sockets = await Promise.all(
    Array.from({ length: BIDDERS }, (_, index) => connect(urls[index % urls.length], `bidder-${index}`)),
  );
  let highest = 0;
  for (const socket of sockets) {
    await socket.emitWithAck("join_auction", { id });
    socket.on("bid_placed", ({ amount }) => (highest = Math.max(highest, amount)));
  }
  const latencies = [];
  let accepted = 0;
  let rejected = 0;
  const deadline = Date.now() + SECONDS * 1000;
  await Promise.all(
    sockets.map(async (socket) => {
      while (Date.now() < deadline) {
        const started = process.hrtime.bigint();
        const ack = await socket.emitWithAck("place_bid", { id, amount: highest + 1 });
        latencies.push(Number(process.hrtime.bigint() - started) / 1e6);
        if (ack.error) rejected += 1;
        else {
          accepted += 1;
          highest = Math.max(highest, ack.amount);
        }
      }
    }),
  );
  for (const socket of sockets) socket.close();
  latencies.sort((a, b) => a - b);
  const at = (p) => latencies[Math.min(latencies.length - 1, Math.floor((latencies.length * p) / 100))];
  return { bids: latencies.length / SECONDS, accepted: accepted / SECONDS, rejected: rejected / SECONDS, p50: at(50), p99: at(99) };
}

const plugins = [auctionPlugin()];
// Bidders bid as fast as acks return: above the default event rate, which is not what this measures.
const namespaces = { "/auction": UNLIMITED_SOCKET };
const redis = await startRedis();
const clustered = writeManifest(
  manifestToml({ plugins, namespaces }) + HS256_AUTH + `\n[cluster]\nredis_url = "${redis.url}"\nprefix = "bids"\n`,
);
const alone = writeManifest(manifestToml({ plugins, namespaces }) + HS256_AUTH);

const nodes = await Promise.all([serveRelease(clustered), serveRelease(clustered)]);
const cluster = await run(nodes.map((node) => node.url));
for (const node of nodes) node.child.kill();
await redis.stop();

const single = await serveRelease(alone);
const memory = await run([single.url]);
single.child.kill();

const row = (name, r) =>
  `| ${name} | ${r.bids.toFixed(0)} | ${r.accepted.toFixed(0)} | ${r.rejected.toFixed(0)} | ${r.p50.toFixed(2)} | ${r.p99.toFixed(2)} |`;
console.log(`${BIDDERS} bidders, ${SECONDS} s each\n`);
console.log("| setup | bids/s | accepted/s | rejected/s | ack p50 ms | ack p99 ms |");
console.log("|---|---|---|---|---|---|");
console.log(row("2 nodes + Redis", cluster));
console.log(row("1 node, memory (baseline)", memory));
console.log(`\nthroughput ratio (2 nodes + Redis / baseline): ${(cluster.bids / memory.bids).toFixed(2)}x`);
process.exit(0);
