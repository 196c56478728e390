// Loopback load run: a well-behaved client's round trips to one plugin, alone
// and then with hostile sockets calling another plugin beside it. Reports the
// well-behaved client's p50 / p99 per phase, how many of its acks were wrong
// or missing, what the hostile calls got back, and the server's peak RSS.
//
//   node tests/load/isolation.mjs [--seconds 10] [--spinners 4] [--hogs 32]
//
// Phases, one server: `alone`; `spin` (each spinner keeps a `spin` call of
// the faulty plugin running, stopped by its 1 s time limit, again and again);
// `hog` (each hog keeps a `hog` call allocating to its 64 MiB limit).
// Uses target/release/switchboard, or $SWITCHBOARD_BIN.
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

import { io } from "socket.io-client";

import { FAULTY_EVENTS, manifestToml, wasm, writeManifest } from "../e2e/harness.mjs";
import { serveRelease } from "./servers.mjs";

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "10" },
    spinners: { type: "string", default: "4" },
    hogs: { type: "string", default: "32" },
  },
});
const SECONDS = Number(values.seconds);

function connectClient(url, namespace) {
  const socket = io(`${url}${namespace}`, { transports: ["websocket"], forceNew: true, reconnection: false });
  return new Promise((resolve, reject) => {
    socket.once("connect", () => resolve(socket));
    socket.once("connect_error", reject);
  });
}

function percentile(sorted, p) {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))] : NaN;
}

function peakRssMib(pid) {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Math.round(Number(status.match(/^VmHWM:\s+(\d+) kB$/m)[1]) / 1024);
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

/** Keeps one `event` call running per socket until `stop()`; counts what came back. */
function hostile(sockets, event) {
  const outcomes = {};
  let stopped = false;
  const loops = sockets.map(async (socket) => {
    while (!stopped) {
      let code;
      try {
        const reply = await socket.timeout(20000).emitWithAck(event, {});
        code = reply?.error?.code ?? "ok";
      } catch {
        code = "no ack";
      }
      outcomes[code] = (outcomes[code] ?? 0) + 1;
    }
  });
  return {
    async stop() {
      stopped = true;
      await Promise.all(loops);
      return outcomes;
    },
  };
}

const manifest = manifestToml({
  plugins: [
    { name: "faulty", path: wasm("faulty"), namespaces: ["/faulty"], events: FAULTY_EVENTS },
    { name: "steady", path: wasm("faulty"), namespaces: ["/steady"], events: ["echo"] },
  ],
  // The clients send as fast as acks return: over the default event rate, which is not what this measures.
  namespaces: {
    "/steady": { events_per_second: 100_000, event_burst: 100_000 },
    "/faulty": { events_per_second: 100_000, event_burst: 100_000 },
  },
});
const server = await serveRelease(writeManifest(manifest));
const steady = await connectClient(server.url, "/steady");
await roundTrips(steady, 1000); // warm-up

const rows = [];
async function phase(name, event, count) {
  const sockets = await Promise.all(Array.from({ length: count }, () => connectClient(server.url, "/faulty")));
  const load = hostile(sockets, event);
  const { latencies, wrong } = await roundTrips(steady, SECONDS * 1000);
  const outcomes = await load.stop();
  for (const socket of sockets) socket.close();
  latencies.sort((a, b) => a - b);
  rows.push({
    phase: name,
    round_trips: latencies.length,
    wrong_or_missing: wrong,
    p50_ms: percentile(latencies, 50).toFixed(2),
    p99_ms: percentile(latencies, 99).toFixed(2),
    hostile_outcomes: JSON.stringify(outcomes),
    peak_rss_mib: peakRssMib(server.child.pid),
  });
}

await phase("alone", "echo", 0);
await phase(`spin x${values.spinners}`, "spin", Number(values.spinners));
await phase(`hog x${values.hogs}`, "hog", Number(values.hogs));
steady.close();
server.child.kill("SIGTERM");
console.table(rows);
