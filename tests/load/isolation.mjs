// Loopback load run: a well-behaved client's round trips to one plugin, alone
// and then with each hostile case running beside it, one case at a time on
// the same server. Reports the well-behaved client's p50 / p99 per phase (and
// its p99 against the `alone` phase), how many of its acks were wrong or
// missing, what the hostile side got back, and the server's peak RSS in the phase.
//
//   node tests/load/isolation.mjs [--seconds 10] [--only spin,hog,...]
//
// Hostile cases (issue 11): plugins that spin (`spin`, 4 sockets keep a call
// of the faulty plugin spinning until its 1 s time limit), allocate to their
// limit from many calls (`hog`, 32 sockets), flood a room with emits
// (`emit-flood`, 4 members each asking the greedy plugin for 100 emits of
// 1 KB, again and again) and return a huge value (`huge-reply`, 4 sockets,
// 512 KB replies); clients that stop reading (`stuck-readers`, 200 raw
// sockets in a room that stop reading while a member floods it), open
// connections and send nothing (`idle`, 1,000 TCP connections, reopened when
// closed), send a 2 MB handshake `auth` (`huge-handshake`, 4 clients again
// and again), join 10,000 rooms (`rooms`, 4 sockets again and again), and
// flood events without waiting for acks (`event-flood`, 4 raw sockets on a
// namespace with the default rate limit). Clients come from 127.0.0.2 on, so
// the well-behaved client's own address is never rate limited by them.
// Uses target/release/switchboard, or $SWITCHBOARD_BIN.
import { fork } from "node:child_process";
import net from "node:net";
import { parseArgs } from "node:util";

import { io } from "socket.io-client";

import { FAULTY_EVENTS, manifestToml, metric, sleep, wasm, writeManifest } from "../e2e/harness.mjs";
import { openRawSocket } from "../e2e/raw_socket.mjs";
import { memoryKib, resetPeak } from "./proc.mjs";
import { UNLIMITED_SOCKET, serveRelease } from "./servers.mjs";

const CASES = ["spin", "hog", "emit-flood", "huge-reply", "stuck-readers", "idle", "huge-handshake", "rooms", "event-flood"];
const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "10" },
    only: { type: "string", default: CASES.join(",") },
    // Internal: this process runs one hostile case against `--url` for its parent.
    hostile: { type: "string" },
    url: { type: "string" },
  },
});
const SECONDS = Number(values.seconds);
/** Hostile clients connect from 127.0.0.2 .. 127.0.0.(ADDRESSES + 1) in turn. */
const ADDRESSES = 8;
let nextAddress = 0;
const hostileAddress = () => `127.0.0.${2 + (nextAddress++ % ADDRESSES)}`;

function connectClient(url, namespace, options = {}) {
  const socket = io(`${url}${namespace}`, { transports: ["websocket"], forceNew: true, reconnection: false, ...options });
  return new Promise((resolve, reject) => {
    const refused = (error) => {
      socket.close();
      reject(error);
    };
    socket.once("connect", () => resolve(socket));
    socket.once("connect_error", refused);
    // A session the server closes before the namespace answers (a frame over its limit).
    socket.once("disconnect", (reason) => refused(new Error(reason)));
  });
}

const connectHostile = (url, namespace, options = {}) =>
  connectClient(url, namespace, { localAddress: hostileAddress(), ...options });

function percentile(sorted, p) {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))] : NaN;
}


/** Sequential echo round trips for `ms`; resolves to `{ latencies, wrong }`. */
async function roundTrips(socket, ms) {
  const latencies = [];
  let wrong = 0;
  const end = performance.now() + ms;
  for (let n = 0; performance.now() < end; n++) {
    const started = performance.now();
    try {
      const reply = await socket.timeout(5000).emitWithAck("echo", { n });
      if (reply?.echo?.n !== n) wrong++;
    } catch {
      wrong++;
    }
    latencies.push(performance.now() - started);
  }
  return { latencies, wrong };
}

/**
 * Runs `attempt()` in `count` loops until `stop()`, which resolves to how
 * often each outcome (the string `attempt` resolves to) came back.
 */
function loops(count, attempt) {
  const outcomes = {};
  let stopped = false;
  const tally = (outcome) => (outcomes[outcome] = (outcomes[outcome] ?? 0) + 1);
  const running = Array.from({ length: count }, async (_, index) => {
    while (!stopped) tally(await attempt(index).catch((error) => `failed: ${error.message}`));
  });
  return {
    async stop() {
      stopped = true;
      await Promise.all(running);
      return outcomes;
    },
  };
}

/** An acked call's outcome: `ok`, the error code, or `no ack`. */
async function callOutcome(socket, event, payload) {
  try {
    const reply = await socket.timeout(20000).emitWithAck(event, payload);
    return reply?.error?.code ?? "ok";
  } catch {
    return "no ack";
  }
}

/**
 * `count` sockets on `namespace`, each in the room `join` asks the greedy
 * plugin for (if given), that keep making `call(socket)`, which resolves to
 * its outcome.
 */
async function calling(url, namespace, count, call, { join } = {}) {
  const sockets = await Promise.all(Array.from({ length: count }, () => connectHostile(url, namespace)));
  if (join) for (const socket of sockets) await socket.emitWithAck("join_rooms", join);
  const load = loops(count, (index) => call(sockets[index]));
  return {
    async stop() {
      const outcomes = await load.stop();
      for (const socket of sockets) socket.close();
      return outcomes;
    },
  };
}

/** A raw Socket.IO socket (tests/e2e/raw_socket.mjs) on `namespace`, from a hostile address. */
const rawSocket = (url, namespace) =>
  openRawSocket(Number(new URL(url).port), namespace, { localAddress: hostileAddress() });

const GREEDY = "/greedy";

const phases = {
  spin: (url) => calling(url, "/faulty", 4, (socket) => callOutcome(socket, "spin", {})),
  hog: (url) => calling(url, "/faulty", 32, (socket) => callOutcome(socket, "hog", {})),
  "emit-flood": (url) =>
    calling(url, GREEDY, 4, (socket) => callOutcome(socket, "flood", { room: "flood0", count: 100, size: 1000 }), {
      join: { prefix: "flood", count: 1 },
    }),
  "huge-reply": (url) => calling(url, GREEDY, 4, (socket) => callOutcome(socket, "huge", { size: 512 * 1024 })),
  async "stuck-readers"(url) {
    const stuck = [];
    for (let index = 0; index < 200; index++) {
      const socket = await rawSocket(url, GREEDY);
      await socket.emitWithAck("join_rooms", { prefix: "stuck", count: 1 });
      stuck.push(socket);
    }
    for (const socket of stuck) socket.pause();
    const flooder = await connectHostile(url, GREEDY);
    await flooder.emitWithAck("join_rooms", { prefix: "stuck", count: 1 });
    // A reader that stopped reading does not see its connection close either: the server's count does.
    const slowDisconnects = () => metric(url, "switchboard_disconnects_total", { reason: "slow_client" });
    const before = await slowDisconnects();
    const load = loops(1, () => callOutcome(flooder, "flood", { room: "stuck0", count: 100, size: 1000 }));
    return {
      async stop() {
        const outcomes = await load.stop();
        const disconnected = (await slowDisconnects()) - before;
        flooder.close();
        for (const socket of stuck) socket.close();
        return { ...outcomes, "stuck readers disconnected as slow": `${disconnected}/200` };
      },
    };
  },
  async idle(url) {
    const { port } = new URL(url);
    let stopped = false;
    let closedByServer = 0;
    const open = new Set();
    const hold = () => {
      if (stopped) return;
      const socket = net.connect({ port: Number(port), host: "127.0.0.1", localAddress: hostileAddress() });
      open.add(socket);
      socket.on("error", () => {});
      socket.on("close", () => {
        open.delete(socket);
        if (stopped) return;
        closedByServer++;
        setTimeout(hold, 100);
      });
    };
    for (let index = 0; index < 1000; index++) hold();
    return {
      async stop() {
        stopped = true;
        for (const socket of open) socket.destroy();
        return { "closed by the server (then reopened)": closedByServer };
      },
    };
  },
  async "huge-handshake"(url) {
    const auth = { blob: "x".repeat(2 * 1024 * 1024) };
    const load = loops(4, () =>
      connectHostile(url, "/faulty", { auth }).then(
        (socket) => {
          socket.close();
          return "accepted";
        },
        (error) => `refused: ${error.data?.code ?? error.message}`,
      ),
    );
    return load;
  },
  rooms(url) {
    let round = 0;
    return calling(url, GREEDY, 4, async (socket) => {
      const reply = await socket.timeout(20000).emitWithAck("join_rooms", { prefix: `r${round++}-`, count: 10000 });
      return reply?.error?.code ?? `joined ${reply.joined}, refused ${JSON.stringify(reply.refused)}`;
    });
  },
  async "event-flood"(url) {
    const outcomes = {};
    const tally = (reply) => {
      const outcome = reply?.error?.code ?? "ok";
      outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;
    };
    const sockets = await Promise.all(Array.from({ length: 4 }, () => rawSocket(url, "/flood")));
    let stopped = false;
    let disconnected = 0;
    for (const socket of sockets) socket.closed.then(() => disconnected++);
    const flood = (socket) => {
      const burst = () => {
        if (stopped) return;
        // As fast as the client's own socket drains, without waiting for acks.
        for (let n = 0; n < 100 && socket.bufferedAmount() < 64 * 1024; n++) {
          socket.emitWithAck("echo", {}).then(tally);
        }
        setImmediate(burst);
      };
      burst();
    };
    sockets.forEach(flood);
    return {
      async stop() {
        stopped = true;
        for (const socket of sockets) socket.close();
        return { ...outcomes, "flooders disconnected by the server": `${disconnected}/4` };
      },
    };
  },
};

// The hostile side runs in a process of its own, so its work never holds up
// the well-behaved client's event loop: what is measured is the server.
if (values.hostile) {
  const load = await phases[values.hostile](values.url);
  process.send({ ready: true });
  process.once("message", async () => {
    process.send({ outcomes: (await load.stop()) ?? {} });
    process.exit(0);
  });
} else {
  await measure();
}

/** Starts case `name` in a child process; resolves once it runs, to `{ stop() }` resolving to its outcomes. */
function hostileProcess(name, url) {
  const child = fork(new URL(import.meta.url), ["--hostile", name, "--url", url]);
  const message = () => new Promise((resolve) => child.once("message", resolve));
  return message().then(() => ({
    async stop() {
      const outcomes = message();
      child.send("stop");
      return (await outcomes).outcomes;
    },
  }));
}

async function measure() {
  const manifest = manifestToml({
    plugins: [
      { name: "faulty", path: wasm("faulty"), namespaces: ["/faulty", "/flood"], events: FAULTY_EVENTS },
      { name: "steady", path: wasm("faulty"), namespaces: ["/steady"], events: ["echo"] },
      { name: "greedy", path: wasm("greedy"), namespaces: [GREEDY], events: ["join_rooms", "flood", "huge"] },
    ],
    // These clients send as fast as acks return: over the default event rate, which is not what this
    // measures (`event-flood` is on `/flood`, which keeps the default).
    namespaces: {
      "/steady": UNLIMITED_SOCKET,
      "/faulty": { events_per_second: 100_000, event_burst: 100_000 },
      [GREEDY]: { events_per_second: 100_000, event_burst: 100_000 },
    },
  });
  const server = await serveRelease(writeManifest(manifest));
  const steady = await connectClient(server.url, "/steady");
  await roundTrips(steady, 1000); // warm-up

  const rows = [];
  let aloneP99;
  const phase = async (name) => {
    const load = name === "alone" ? undefined : await hostileProcess(name, server.url);
    resetPeak(server.child.pid);
    const { latencies, wrong } = await roundTrips(steady, SECONDS * 1000);
    const outcomes = (await load?.stop()) ?? {};
    latencies.sort((a, b) => a - b);
    const p99 = percentile(latencies, 99);
    aloneP99 ??= p99;
    rows.push({
      phase: name,
      round_trips: latencies.length,
      wrong_or_missing: wrong,
      p50_ms: percentile(latencies, 50).toFixed(2),
      p99_ms: p99.toFixed(2),
      p99_vs_alone: `${(p99 / aloneP99).toFixed(2)}x`,
      hostile_side: JSON.stringify(outcomes),
      peak_rss_mib: Math.round(memoryKib(server.child.pid).peak / 1024),
    });
    // What the case left behind (closing sockets, discarded instances) settles before the next.
    await sleep(2000);
  };

  await phase("alone");
  for (const name of values.only.split(",")) {
    if (!phases[name]) throw new Error(`unknown case \`${name}\`; cases: ${CASES.join(", ")}`);
    await phase(name);
  }
  steady.close();
  await server.stop();
  console.table(rows);
  process.exit(0);
}
