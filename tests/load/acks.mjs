// Loopback load run: acked events, the path packet → queue → handler → ack.
// Each of `--clients` raw WebSocket clients sends `echo` and waits for its ack
// before sending the next (one in flight each), for `--seconds`, against every
// server in turn, one at a time on fresh processes: Switchboard (the `echo`
// of the test-only relay plugin, which acks `{echo: payload}` as the baselines
// do, a wasm call per event), the same contract written directly on
// socketioxide (tests/load/socketioxide-baseline, built here), and Node's
// socket.io (tests/load/baseline-server.mjs). Reports acks per second,
// acks per server CPU-second, round-trip p50 / p99, and each server's figures
// as a ratio to socketioxide's in the same run.
//
//   node tests/load/acks.mjs [--clients 50] [--seconds 10] [--servers switchboard,socketioxide,node]
//                            [--rounds 1] [--min-ratio R] [--client node|rust] [--threads N]
//
// --rounds N: measures the servers in turn N times, each on fresh processes,
//   and reports each server's median figures and median ratio to
//   socketioxide's in the same round (one run of a build moves 10-20 % here).
// --min-ratio R: exits 1 when Switchboard's acks per CPU-second fall below R
//   times socketioxide's (the median ratio over the rounds; the CI regression
//   guard: a gross regression only, never an absolute time).
//
// --client rust: the clients are tests/load/clients' `acks` (one thread,
//   built here) instead of this process. Node stalls for milliseconds now and
//   then (its collector, its one thread), and every server's p99 shows it.
// --threads N: Switchboard and socketioxide serve with N threads
//   (`server.threads`, TOKIO_WORKER_THREADS) instead of one per core, leaving
//   the client the other cores (Node's server has one thread either way).
//
// Clients speak Engine.IO / Socket.IO on a raw WebSocket (`ws`), not
// socket.io-client, so the client process, which shares the machine's cores
// with the server, costs as little as it can. Uses target/release/switchboard
// (or $SWITCHBOARD_BIN).
import path from "node:path";
import { parseArgs } from "node:util";

import { REPO, manifestToml, relayPlugin, writeManifest } from "../e2e/harness.mjs";
import { closedLoops } from "./closed_loop.mjs";
import { openRawSocket } from "../e2e/raw_socket.mjs";
import { cpuSeconds } from "./proc.mjs";
import { UNLIMITED_SOCKET, buildLoadTool, runLoadClient, serveRelease, serveSocketioxide, startServer } from "./servers.mjs";

const { values } = parseArgs({
  options: {
    clients: { type: "string", default: "50" },
    seconds: { type: "string", default: "10" },
    servers: { type: "string", default: "switchboard,socketioxide,node" },
    rounds: { type: "string", default: "1" },
    "min-ratio": { type: "string" },
    client: { type: "string", default: "node" },
    threads: { type: "string" },
  },
});
if (!["node", "rust"].includes(values.client)) throw new Error("--client is node or rust");
const CLIENTS = Number(values.clients);
const SECONDS = Number(values.seconds);
const ROUNDS = Number(values.rounds);

const SERVERS = {
  switchboard: () =>
    serveRelease(
      writeManifest(
        manifestToml({
          server: values.threads ? { threads: Number(values.threads) } : {},
          plugins: [relayPlugin()],
          // Each client sends as fast as its acks come back: far over the default event rate.
          namespaces: { "/": UNLIMITED_SOCKET },
        }),
      ),
    ),
  socketioxide: () => serveSocketioxide({ threads: values.threads }),
  node: () => startServer(process.execPath, [path.join(REPO, "tests/load/baseline-server.mjs")]),
};

// Every server acks `echo` with `{echo: payload}`.
const echoRequest = async (socket, n) => (await socket.emitWithAck("echo", { n }))?.echo?.n === n;

async function nodeClients(server) {
  const port = new URL(server.url).port;
  const sockets = await Promise.all(Array.from({ length: CLIENTS }, () => openRawSocket(port, "/")));
  const figures = await closedLoops(sockets, { seconds: SECONDS, pid: server.child.pid, request: echoRequest });
  for (const socket of sockets) socket.close();
  return figures;
}

async function rustClients(server) {
  const args = ["--url", server.url, "--clients", String(CLIENTS), "--seconds", String(SECONDS)];
  const meter = () => ({ cpu: cpuSeconds(server.child.pid) });
  const { result, used } = await runLoadClient(RUST_CLIENT, args, { start: "measuring", end: "done", meter });
  const elapsed = result.acks / result.perSecond;
  return {
    acks: result.acks,
    wrong: result.wrong,
    acksPerSecond: result.perSecond,
    acksPerCpuSecond: result.acks / used.cpu,
    cpuPerSecond: used.cpu / elapsed,
    p50: result.p50,
    p99: result.p99,
  };
}

const RUST_CLIENT = values.client === "rust" ? buildLoadTool("clients", "acks") : undefined;
const runClients = RUST_CLIENT ? rustClients : nodeClients;

async function measure(name) {
  const server = await SERVERS[name]();
  try {
    return { name, ...(await runClients(server)) };
  } finally {
    await server.stop();
  }
}

const median = (numbers) => {
  const sorted = [...numbers].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
};
const ratioTo = (result, baseline) => result.acksPerCpuSecond / baseline.acksPerCpuSecond;
/** A round's result for one server. */
const named = (results, name) => results.find((result) => result.name === name);

// Round after round, the servers in turn on fresh processes: what the
// machine does meanwhile weighs on each server alike.
const names = values.servers.split(",");
const rounds = [];
for (let round = 0; round < ROUNDS; round++) {
  const results = [];
  for (const name of names) results.push(await measure(name));
  rounds.push(results);
}
console.log(
  `${CLIENTS} ${values.client} clients, one echo in flight each, ${SECONDS} s per server` + (ROUNDS > 1 ? `, ${ROUNDS} rounds` : ""),
);
for (const results of rounds) {
  const baseline = named(results, "socketioxide");
  for (const result of results) {
    const ratio = baseline ? ` (${ratioTo(result, baseline).toFixed(2)}x socketioxide)` : "";
    console.log(
      `${result.name.padEnd(12)} ${Math.round(result.acksPerSecond).toLocaleString("en").padStart(8)} acks/s` +
        `  ${Math.round(result.acksPerCpuSecond).toLocaleString("en").padStart(8)} per CPU-second${ratio}` +
        `  server CPU ${result.cpuPerSecond.toFixed(2)} cores` +
        `  p50 ${result.p50.toFixed(2)} ms  p99 ${result.p99.toFixed(2)} ms` +
        (result.wrong ? `  WRONG ACKS ${result.wrong}` : ""),
    );
  }
}
/** The median over the rounds of each server's ratio to socketioxide's figure in the same round. */
const medianRatio = (name) =>
  median(rounds.map((results) => ratioTo(named(results, name), named(results, "socketioxide"))));
if (ROUNDS > 1 && names.includes("socketioxide")) {
  for (const name of names) {
    const ofServer = rounds.map((results) => named(results, name));
    console.log(
      `median ${name.padEnd(12)} ${Math.round(median(ofServer.map((result) => result.acksPerCpuSecond))).toLocaleString("en")} per CPU-second` +
        `  ${medianRatio(name).toFixed(2)}x socketioxide  p99 ${median(ofServer.map((result) => result.p99)).toFixed(2)} ms`,
    );
  }
}
if (rounds.flat().some((result) => result.wrong > 0)) process.exit(1);
if (values["min-ratio"] !== undefined) {
  const ratio = medianRatio("switchboard");
  if (ratio < Number(values["min-ratio"])) {
    console.error(`Switchboard's acks per CPU-second are ${ratio.toFixed(2)}x socketioxide's, under ${values["min-ratio"]}x`);
    process.exit(1);
  }
}
