// Loopback load run: many clients in one room, a few senders, every message
// delivered to every member. Every delivery is counted per subscriber:
// lost (expected minus received), duplicates, and out of order (a message
// before an earlier one of the same sender, or an offset not after the
// previous one). Measures deliveries per second, latency from send to
// delivery (p50 / p99), server CPU per delivery, and how busy the machine's
// cores were meanwhile (every process's CPU, the clients' too: near 100 %, the
// latency is the machine's queue more than any server's).
//
//   node tests/load/fanout.mjs [--subscribers 500] [--senders 5] [--rate 100] [--seconds 10]
//                              [--compare node|socketioxide|cluster|socketioxide-cluster|recovery]
//                              [--drop 0] [--addresses 8] [--settle-ms 15000] [--client node|rust]
//                              [--plugin chat|relay] [--min-write-interval-ms 0]
//
// --compare node (default): Switchboard against a plain Node socket.io server.
// --compare socketioxide: Switchboard against the same contract written
//   directly on socketioxide (tests/load/socketioxide-baseline, built here).
// --compare socketioxide-cluster: two Switchboard nodes over Redis against two
//   socketioxide nodes over socketioxide-redis, each on a fresh redis-server.
// --compare cluster: one Switchboard node in memory against two nodes sharing
//   a redis-server, with the subscribers split over both nodes and the senders
//   on the first; CPU is summed over both nodes and Redis.
// Two nodes share this machine's cores as two machines' nodes would not: each
// is sized to half of them (`server.threads`, and TOKIO_WORKER_THREADS for
// socketioxide's), where each would otherwise run a thread per core and the
// two take turns on every core. One node uses them all.
// --compare recovery: two nodes over Redis as above, with connection-state
//   recovery on (the default) against off, each on a fresh redis-server.
// --drop N: halfway through the sending, N subscribers (spread over the
//   nodes, no sender) close their connection (`socket.io.engine.close()`) and
//   reconnect; reports the time from each reconnect attempt to the `connect`
//   with `socket.recovered`, p50 / p99. Only servers that recover are dropped
//   from; their latency figures leave the dropped subscribers out.
// --addresses N: clients connect from 127.0.0.2 .. 127.0.0.(N+1) in turn, so
//   the per-address connection limits keep their defaults (100/s after a burst
//   of 500, 1,000 open): keep subscribers / N within them.
//
// --plugin relay: Switchboard serves the contract with the test-only relay
//   plugin (no state: the baseline's contract, message ids per instance)
//   instead of the chat plugin (a transaction on the room's counter and
//   history per message).
// --min-write-interval-ms N: Switchboard's nodes write broadcasts to a
//   WebSocket client at most once per N ms (`server.min_write_interval_ms`),
//   the messages due meanwhile together; the baselines have no such setting.
// --client rust: the clients are tests/load/clients' `fanout` (raw WebSocket, one
//   thread; built here) instead of socket.io-client in this process, which
//   cannot take 200,000 deliveries a second. Not with --drop.
//
// Every client reconnects (as socket.io-client does by default), so a
// subscriber the server disconnects comes back, and is counted.
//
// Uses target/release/switchboard (build it with `cargo build --release`).
import { availableParallelism } from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";

import { io } from "socket.io-client";

import { REPO, chatPlugin, manifestToml, metric, relayPlugin, writeManifest } from "../e2e/harness.mjs";
import { startRedis } from "../e2e/redis.mjs";
import { cpuSeconds, machineTicks } from "./proc.mjs";
import {
  UNLIMITED_SOCKET,
  buildLoadTool,
  risenBy,
  runLoadClient,
  serveRelease,
  serveSocketioxide,
  startServer,
} from "./servers.mjs";

const { values } = parseArgs({
  options: {
    subscribers: { type: "string", default: "500" },
    senders: { type: "string", default: "5" },
    rate: { type: "string", default: "100" },
    seconds: { type: "string", default: "10" },
    compare: { type: "string", default: "node" },
    drop: { type: "string", default: "0" },
    addresses: { type: "string", default: "8" },
    "settle-ms": { type: "string", default: "15000" },
    client: { type: "string", default: "node" },
    plugin: { type: "string", default: "chat" },
    "min-write-interval-ms": { type: "string", default: "0" },
  },
});
const SUBSCRIBERS = Number(values.subscribers);
const SENDERS = Number(values.senders);
const RATE = Number(values.rate); // messages per second, all senders together
const SECONDS = Number(values.seconds);
const DROPPED = Number(values.drop);
const MIN_WRITE_INTERVAL_MS = Number(values["min-write-interval-ms"]);
const ADDRESSES = Number(values.addresses);
/** A client's wait before it reconnects (no randomization), as after a network blip. */
const RECONNECT_DELAY_MS = 100;
/** How long a sender waits for its ack before counting the send as refused. */
const ACK_TIMEOUT_MS = 120000;
/** How long a join may go unanswered, and how often it is sent, before the run fails. */
const JOIN_TIMEOUT_MS = 5000;
const JOIN_ATTEMPTS = 3;
/** Clients connecting and joining at once. */
const JOINING_AT_ONCE = 20;
/** Deliveries still missing after this long without one arriving are lost. */
const SETTLE_MS = Number(values["settle-ms"]);
/** Each of two nodes' share of the machine's cores. */
const NODE_THREADS = Math.max(1, Math.floor(availableParallelism() / 2));

function connectClient(url, user, index) {
  const socket = io(url, {
    transports: ["websocket"],
    auth: { user },
    forceNew: true,
    reconnectionDelay: RECONNECT_DELAY_MS,
    reconnectionDelayMax: RECONNECT_DELAY_MS,
    randomizationFactor: 0,
    localAddress: `127.0.0.${2 + (index % ADDRESSES)}`,
  });
  return new Promise((resolve, reject) => {
    socket.once("connect", () => resolve(socket));
    socket.once("connect_error", reject);
  });
}

function percentile(sorted, p) {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))] : NaN;
}

/** Whether recovery offset `a` comes before `b` (`ms-seq` stream ids, or numbers on one node). */
function offsetBefore(a, b) {
  const [aHigh, aLow = 0] = a.split("-").map(Number);
  const [bHigh, bLow = 0] = b.split("-").map(Number);
  return aHigh < bHigh || (aHigh === bHigh && aLow < bLow);
}

/** What one subscriber received: message `index` was sent by sender `index % SENDERS`. */
class Tally {
  constructor(total) {
    this.counts = new Uint8Array(total);
    this.lastOfSender = new Int32Array(SENDERS).fill(-1);
    this.lastOffset = undefined;
    this.duplicates = 0;
    this.outOfOrder = 0;
    this.disconnects = 0;
    this.newSockets = 0;
  }

  receive(index, offset) {
    if (this.counts[index] > 0) this.duplicates++;
    this.counts[index] = Math.min(255, this.counts[index] + 1);
    const sender = index % SENDERS;
    if (index < this.lastOfSender[sender]) this.outOfOrder++;
    this.lastOfSender[sender] = Math.max(this.lastOfSender[sender], index);
    if (typeof offset === "string") {
      if (this.lastOffset !== undefined && !offsetBefore(this.lastOffset, offset)) this.outOfOrder++;
      this.lastOffset = offset;
    }
  }

  /** Messages of `accepted` (1: the sender's ack was a success) received at least once. */
  received(accepted) {
    return this.counts.reduce((sum, count, index) => sum + (count > 0 && accepted[index] ? 1 : 0), 0);
  }
}

/**
 * `servers`: `{ url, stop() }` to connect to (round robin; senders on the
 * first), `pids`: processes whose CPU counts, `recovers`: whether the server
 * gives sessions back (only then are subscribers dropped), `redisPid`: the
 * Redis among `pids`, whose share is reported on its own.
 */
async function run(name, servers, pids, options) {
  if (values.client === "rust") return runRustClients(name, servers, pids, options);
  if (values.client !== "node") throw new Error(`unknown --client \`${values.client}\`: node or rust`);
  return runNodeClients(name, servers, pids, options);
}

/**
 * CPU so far: seconds of `pids` together (`cpu`) and of Redis alone
 * (`redis`), and the machine's busy and total clock ticks, every process's
 * (`busy`, `ticks`: the clients' share of the cores shows in it).
 */
function cpuMeter(pids, redisPid) {
  return () => {
    const { busy, total } = machineTicks();
    return {
      cpu: pids.reduce((sum, pid) => sum + cpuSeconds(pid), 0),
      redis: redisPid ? cpuSeconds(redisPid) : 0,
      busy,
      ticks: total,
    };
  };
}

/**
 * The writes Switchboard's nodes made to WebSocket clients over the whole run
 * and the frames they carried, from their `/metrics` (none for the
 * baselines, which have no such series).
 */
async function websocketWrites(servers) {
  const sum = async (name) =>
    (await Promise.all(servers.map((server) => metric(server.url, name).catch(() => 0)))).reduce((a, b) => a + b, 0);
  return {
    writes: await sum("switchboard_websocket_writes_total"),
    framesWritten: await sum("switchboard_websocket_frames_written_total"),
  };
}

/** What `run` reports of the CPU `used` (risen by, over the measured phase) for `deliveries`. */
function cpuFigures(used, deliveries, redisPid) {
  return {
    cpuMicrosPerDelivery: (used.cpu * 1e6) / deliveries,
    redisCpuMicrosPerDelivery: redisPid ? (used.redis * 1e6) / deliveries : NaN,
    machineBusy: used.busy / used.ticks,
  };
}

/** `run` with tests/load/clients' `fanout` as the clients. */
async function runRustClients(name, servers, pids, { redisPid }) {
  if (DROPPED) throw new Error("--drop needs --client node");
  const meter = cpuMeter(pids, redisPid);
  const args = {
    urls: servers.map((server) => server.url).join(","),
    subscribers: SUBSCRIBERS,
    senders: SENDERS,
    rate: RATE,
    seconds: SECONDS,
    addresses: ADDRESSES,
    "settle-ms": SETTLE_MS,
  };
  const { result, used } = await runLoadClient(
    buildLoadTool("clients", "fanout"),
    Object.entries(args).flatMap(([key, value]) => [`--${key}`, String(value)]),
    { start: "sending", end: "delivered", meter },
  );
  const written = await websocketWrites(servers);
  await Promise.all(servers.map((server) => server.stop?.()));
  return {
    ...result,
    ...written,
    name,
    dropped: 0,
    ...cpuFigures(used, result.deliveries, redisPid),
    p50: result.p50 ?? NaN,
    p99: result.p99 ?? NaN,
  };
}

/** Runs the clients in this process (socket.io-client). */
async function runNodeClients(name, servers, pids, { recovers, redisPid }) {
  const total = Math.round(RATE * SECONDS);
  const clients = [];
  const join = async (index) => {
    // Senders are clients 0..SENDERS-1 and all sit on the first server.
    const server = index < SENDERS ? servers[0] : servers[index % servers.length];
    const socket = await connectClient(server.url, `user${index}`, index);
    // Plain socketioxide can drop an event that arrives right after the
    // CONNECT reply, before the handlers it registers on connect exist: a
    // join unanswered for 5 s is sent again (and counted).
    for (let attempt = 1; ; attempt++) {
      try {
        const reply = await socket.timeout(JOIN_TIMEOUT_MS).emitWithAck("join", { room: "load" });
        if (reply?.error) throw new Error(`${name}: user${index} could not join: ${JSON.stringify(reply.error)}`);
        break;
      } catch (error) {
        if (!/timed out/.test(error.message) || attempt === JOIN_ATTEMPTS) throw error;
        unansweredJoins++;
      }
    }
    clients[index] = socket;
  };
  let unansweredJoins = 0;
  // A few at a time, as users arrive: 2,000 joins at once are partly refused
  // (`overloaded`, `plugin_timeout`) by the chat plugin's concurrency limit,
  // which is not what this measures.
  for (let first = 0; first < SUBSCRIBERS; first += JOINING_AT_ONCE) {
    const batch = Array.from({ length: Math.min(JOINING_AT_ONCE, SUBSCRIBERS - first) }, (_, offset) => first + offset);
    await Promise.all(batch.map(join));
  }

  // Spread evenly over the subscribers (never a sender), so over every node.
  const dropped = new Set();
  if (recovers) {
    const stride = Math.max(1, Math.floor((SUBSCRIBERS - SENDERS) / DROPPED));
    for (let index = SENDERS; index < SUBSCRIBERS && dropped.size < DROPPED; index += stride) dropped.add(index);
  }
  const latencies = new Float64Array(total * SUBSCRIBERS);
  let measured = 0;
  let deliveries = 0;
  let lastDelivery = Date.now();
  const recoveries = { attemptToConnect: [], disconnectToConnect: [] };
  const disconnectReasons = {};
  const tallies = clients.map((socket, index) => {
    const tally = new Tally(total);
    const timed = !dropped.has(index);
    socket.on("message", (message, offset) => {
      const now = process.hrtime.bigint();
      const [sent, at] = message.text.split(" ");
      tally.receive(Number(sent), offset);
      deliveries++;
      lastDelivery = Date.now();
      if (timed) latencies[measured++] = Number(now - BigInt(at)) / 1e6;
    });
    let disconnectedAt;
    let attemptAt;
    socket.on("disconnect", (reason) => {
      tally.disconnects++;
      disconnectReasons[reason] = (disconnectReasons[reason] ?? 0) + 1;
      disconnectedAt = performance.now();
    });
    socket.io.on("reconnect_attempt", () => (attemptAt = performance.now()));
    socket.on("connect", () => {
      if (!socket.recovered) {
        tally.newSockets++;
        return;
      }
      const now = performance.now();
      recoveries.attemptToConnect.push(now - attemptAt);
      recoveries.disconnectToConnect.push(now - disconnectedAt);
    });
    return tally;
  });

  const meter = cpuMeter(pids, redisPid);
  const before = meter();
  const accepted = new Uint8Array(total);
  const refused = [];
  const reasons = {};
  const acks = [];
  const started = process.hrtime.bigint();
  for (let sent = 0; sent < total; sent++) {
    const due = started + BigInt(Math.round((sent * 1e9) / RATE));
    const wait = Number(due - process.hrtime.bigint()) / 1e6;
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    if (sent === Math.floor(total / 2)) for (const index of dropped) clients[index].io.engine.close();
    const message = { room: "load", text: `${sent} ${process.hrtime.bigint()}` };
    acks.push(
      clients[sent % SENDERS]
        .timeout(ACK_TIMEOUT_MS)
        .emitWithAck("send_message", message)
        .then(
          (reply) => {
            if (!reply?.error) return (accepted[sent] = 1);
            refused.push(reply.error.code);
            reasons[reply.error.code] ??= reply.error.message;
          },
          () => refused.push("no ack"),
        ),
    );
  }
  // A send the server refused (e.g. `overloaded`) is not expected anywhere.
  await Promise.all(acks);
  const expected = accepted.reduce((sum, ok) => sum + ok, 0) * SUBSCRIBERS;
  lastDelivery = Date.now();
  while (deliveries < expected && Date.now() - lastDelivery < SETTLE_MS) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const elapsed = Number(process.hrtime.bigint() - started) / 1e9;
  const used = risenBy(before, meter());
  const timed = latencies.subarray(0, measured).sort();
  const sum = (field) => tallies.reduce((total, tally) => total + field(tally), 0);
  const receivedNow = () => tallies.map((tally) => tally.received(accepted));
  const missing = (received) => expected - received.reduce((total, count) => total + count, 0);
  const received = receivedNow();
  for (const times of Object.values(recoveries)) times.sort((a, b) => a - b);
  const result = {
    name,
    deliveries,
    expected,
    lost: missing(received),
    // Who lost: subscribers with anything missing, and how many of them had been disconnected.
    lossy: tallies.filter((_, index) => received[index] < expected / SUBSCRIBERS).map(({ disconnects, newSockets }) => ({ disconnects, newSockets })),
    refused: [...new Set(refused)].map(
      (code) => `${refused.filter((other) => other === code).length} ${code} (${reasons[code] ?? "no ack"})`,
    ),
    unansweredJoins,
    duplicates: sum((tally) => tally.duplicates),
    outOfOrder: sum((tally) => tally.outOfOrder),
    disconnects: sum((tally) => tally.disconnects),
    newSockets: sum((tally) => tally.newSockets),
    dropped: dropped.size,
    recoveries,
    perSecond: deliveries / elapsed,
    ...cpuFigures(used, deliveries, redisPid),
    p50: percentile(timed, 50),
    p99: percentile(timed, 99),
  };
  if (result.lost) {
    // Missing or only late? Whatever still arrives in another settle window was in flight, not lost.
    const before = deliveries;
    lastDelivery = Date.now();
    while (Date.now() - lastDelivery < SETTLE_MS) await new Promise((resolve) => setTimeout(resolve, 100));
    result.late = deliveries - before;
    result.stillMissing = missing(receivedNow());
    result.neverBack = clients.filter((socket) => !socket.connected).length;
    result.disconnectReasons = disconnectReasons;
  }
  for (const socket of clients) socket.close();
  Object.assign(result, await websocketWrites(servers));
  await Promise.all(servers.map((server) => server.stop?.()));
  return result;
}

const PLUGINS = {
  chat: chatPlugin({ config: { history_size: 10 } }),
  relay: relayPlugin(),
};
const plugin = PLUGINS[values.plugin];
if (!plugin) throw new Error(`unknown --plugin \`${values.plugin}\`: ${Object.keys(PLUGINS).join(" or ")}`);
// A sender may send above the default event rate (`--rate` over `--senders`): not what this measures.
const namespaces = { "/": UNLIMITED_SOCKET };
const manifest = ({ redis, recovery = true, threads } = {}) =>
  writeManifest(
    manifestToml({
      server: {
        ...(threads ? { threads } : {}),
        ...(recovery ? {} : { recovery: { enabled: false } }),
        ...(MIN_WRITE_INTERVAL_MS ? { min_write_interval_ms: MIN_WRITE_INTERVAL_MS } : {}),
      },
      plugins: [plugin],
      namespaces,
    }) +
      (redis ? `\n[cluster]\nredis_url = "${redis.url}"\n` : ""),
  );

async function twoNodes(name, recovery) {
  const redis = await startRedis();
  const clustered = manifest({ redis, recovery, threads: NODE_THREADS });
  const nodes = [await serveRelease(clustered), await serveRelease(clustered)];
  const result = await run(name, nodes, [...nodes.map((node) => node.child.pid), redis.pid], {
    recovers: recovery,
    redisPid: redis.pid,
  });
  await redis.stop();
  return result;
}

async function twoSocketioxideNodes() {
  const redis = await startRedis();
  const options = { env: { REDIS_URL: redis.url }, threads: NODE_THREADS };
  const nodes = [await serveSocketioxide(options), await serveSocketioxide(options)];
  const result = await run("socketioxide, two nodes + Redis", nodes, [...nodes.map((node) => node.child.pid), redis.pid], {
    recovers: false,
    redisPid: redis.pid,
  });
  await redis.stop();
  return result;
}

const results = [];
if (values.compare === "recovery") {
  results.push(await twoNodes("two nodes + Redis, recovery on", true));
  results.push(await twoNodes("two nodes + Redis, recovery off", false));
} else if (values.compare === "socketioxide-cluster") {
  results.push(await twoNodes("switchboard, two nodes + Redis", true));
  results.push(await twoSocketioxideNodes());
} else {
  const ours = await serveRelease(manifest());
  results.push(await run(`switchboard, one node (${plugin.name} plugin)`, [ours], [ours.child.pid], { recovers: true }));
  if (values.compare === "cluster") {
    results.push(await twoNodes("switchboard, two nodes + Redis", true));
  } else if (values.compare === "socketioxide") {
    const baseline = await serveSocketioxide();
    results.push(await run("socketioxide (baseline)", [baseline], [baseline.child.pid], { recovers: false }));
  } else {
    const baseline = await startServer(process.execPath, [path.join(REPO, "tests/load/baseline-server.mjs")]);
    results.push(await run("node socket.io (baseline)", [baseline], [baseline.child.pid], { recovers: false }));
  }
}

console.log(
  `${SUBSCRIBERS} subscribers in one room, ${SENDERS} senders, ${RATE} msg/s for ${SECONDS} s, websocket, loopback` +
    (DROPPED ? `, ${DROPPED} subscribers dropped halfway` : "") +
    (MIN_WRITE_INTERVAL_MS ? `, Switchboard's writes of broadcasts to a client at least ${MIN_WRITE_INTERVAL_MS} ms apart` : ""),
);
console.log("| server | sends accepted | delivered | lost | duplicates | out of order | disconnects / new sockets | deliveries/s | server CPU µs/delivery | of which Redis | machine busy | p50 ms | p99 ms |");
console.log("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
const fixed = (value, digits) => (Number.isFinite(value) ? value.toFixed(digits) : "-");
for (const r of results) {
  console.log(
    `| ${r.name} | ${r.expected / SUBSCRIBERS}/${Math.round(RATE * SECONDS)} | ${r.deliveries}/${r.expected} | ${r.lost} | ${r.duplicates} | ${r.outOfOrder} | ${r.disconnects} / ${r.newSockets} | ` +
      `${r.perSecond.toFixed(0)} | ${r.cpuMicrosPerDelivery.toFixed(2)} | ${fixed(r.redisCpuMicrosPerDelivery, 2)} | ${(100 * r.machineBusy).toFixed(0)} % | ` +
      `${fixed(r.p50, 1)} | ${fixed(r.p99, 1)} |`,
  );
}
for (const r of results.filter((result) => result.lost)) {
  const disconnected = r.lossy.filter(({ disconnects }) => disconnects > 0).length;
  const renewed = r.lossy.filter(({ newSockets }) => newSockets > 0).length;
  console.log(
    `${r.name}: ${r.lossy.length} subscribers missed something; ${disconnected} of them had been disconnected, ` +
      `${renewed} came back unrecovered`,
  );
  if (values.client === "rust") {
    console.log(`${r.name}: lost counts what was still missing after a second ${SETTLE_MS} ms, in which ${r.late} deliveries arrived`);
    continue;
  }
  console.log(`${r.name}: ${r.late} deliveries arrived in another ${SETTLE_MS} ms; ${r.stillMissing} still missing after it`);
  console.log(`${r.name}: ${r.neverBack} subscribers not connected then; disconnects by reason ${JSON.stringify(r.disconnectReasons)}`);
}
for (const r of results.filter((result) => result.writes)) {
  console.log(
    `${r.name}: ${r.writes} writes to clients over the run, ${(r.framesWritten / r.writes).toFixed(2)} frames each ` +
      "(switchboard_websocket_writes_total, switchboard_websocket_frames_written_total)",
  );
}
for (const r of results.filter((result) => result.unansweredJoins)) {
  console.log(`${r.name}: ${r.unansweredJoins} joins went unanswered for ${JOIN_TIMEOUT_MS} ms and were sent again`);
}
for (const r of results.filter((result) => result.refused.length)) {
  console.log(`${r.name}: sends refused: ${r.refused.join(", ")}`);
}
for (const r of results.filter((result) => result.dropped)) {
  const { attemptToConnect, disconnectToConnect } = r.recoveries;
  console.log(
    `${r.name}: ${attemptToConnect.length}/${r.dropped} dropped subscribers recovered; reconnect attempt to connect ` +
      `p50 ${fixed(percentile(attemptToConnect, 50), 1)} ms, p99 ${fixed(percentile(attemptToConnect, 99), 1)} ms; ` +
      `disconnect to connect (with the client's ${RECONNECT_DELAY_MS} ms delay) ` +
      `p50 ${fixed(percentile(disconnectToConnect, 50), 1)} ms, p99 ${fixed(percentile(disconnectToConnect, 99), 1)} ms`,
  );
}
const [first, second] = results;
console.log(
  `${first.name} / ${second.name}: CPU per delivery ${(first.cpuMicrosPerDelivery / second.cpuMicrosPerDelivery).toFixed(2)}x, ` +
    `p99 ${(first.p99 / second.p99).toFixed(2)}x`,
);
process.exit(0);
