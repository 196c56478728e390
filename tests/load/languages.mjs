// Plugins in other languages against their Rust twin: the echo contract built
// with componentize-js (echo_js) and componentize-py (echo_py) beside the
// Rust plugin (echo), each measured the same way in one run:
//
// - size: the component file.
// - load: `switchboard check` wall time with an empty code cache (the host
//   compiles the component) and again with the cache it filled.
// - memory: the least `limits.memory_mib` under which `switchboard call` runs
//   init, join, say and echo (the linear memory one instance needs), and the
//   serving process's RSS when ready and after the load below (compiled code
//   and the warm instances the load left, up to 16).
// - per event: closed-loop acks over `--clients` raw WebSocket clients for
//   `--seconds`, of `echo` (the bare call) and of `say` (a state increment and
//   an emit to the sender's own room), as acks per second and per server
//   CPU-second, with round-trip p50 / p99.
//
// Each figure is also given as a ratio to the first plugin's (echo, Rust).
//
//   node tests/load/languages.mjs [--clients 20] [--seconds 5] [--plugins echo,echo_js,echo_py]
//
// Uses target/release/switchboard (or $SWITCHBOARD_BIN) and the components
// that scripts/setup.sh builds (or those in $SWITCHBOARD_WASM_DIR).
import { spawnSync } from "node:child_process";
import { statSync } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";

import { manifestToml, tempDir, unique, wasm, writeManifest } from "../e2e/harness.mjs";
import { openRawSocket } from "../e2e/raw_socket.mjs";
import { closedLoops } from "./closed_loop.mjs";
import { memoryKib } from "./proc.mjs";
import { RELEASE_BIN, UNLIMITED_SOCKET, serveRelease } from "./servers.mjs";

const { values } = parseArgs({
  options: {
    clients: { type: "string", default: "20" },
    seconds: { type: "string", default: "5" },
    plugins: { type: "string", default: "echo,echo_js,echo_py" },
  },
});
const CLIENTS = Number(values.clients);
const SECONDS = Number(values.seconds);
const EVENTS = ["join", "say", "echo"];
/** The most `memory_mib` searched; the manifest default is 64. */
const MAX_MEMORY_MIB = 256;

/** A manifest serving `plugin` on `/`, its code cached in `cacheDir`, with `limits`. */
function manifestFor(plugin, cacheDir, limits) {
  return writeManifest(
    manifestToml({
      server: { cache_dir: cacheDir },
      plugins: [{ name: plugin, path: wasm(plugin), namespaces: ["/"], events: EVENTS, limits }],
      // Each client sends as fast as its acks come back: far over the default event rate.
      namespaces: { "/": UNLIMITED_SOCKET },
    }),
  );
}

/** Runs the binary with `args`; its wall time in ms, and whether it exited 0. */
function timed(args) {
  const started = performance.now();
  const result = spawnSync(RELEASE_BIN, args, { encoding: "utf8", env: { ...process.env, RUST_LOG: "error" } });
  return { ms: performance.now() - started, ok: result.status === 0, stderr: result.stderr };
}

/** `cacheDir` must be empty: the first check compiles into it. */
function loadTimes(plugin, cacheDir) {
  const manifest = manifestFor(plugin, cacheDir);
  const cold = timed(["check", manifest]);
  const warm = timed(["check", manifest]);
  if (!cold.ok || !warm.ok) throw new Error(`switchboard check failed for ${plugin}:\n${cold.stderr}${warm.stderr}`);
  return { coldMs: cold.ms, warmMs: warm.ms };
}

/** The least memory_mib (1 MiB steps) under which every event of the contract runs. */
function memoryNeededMib(plugin, cacheDir) {
  const runs = (mib) =>
    timed([
      "call",
      manifestFor(plugin, cacheDir, { memory_mib: mib }),
      "--plugin",
      plugin,
      ...["--event", "join", "--data", '{"room":"r"}'],
      ...["--event", "say", "--data", '{"room":"r","text":"hello"}'],
      ...["--event", "echo", "--data", '{"n":1}'],
    ]).ok;
  if (!runs(MAX_MEMORY_MIB)) throw new Error(`${plugin} does not run with memory_mib = ${MAX_MEMORY_MIB}`);
  let [fails, works] = [0, MAX_MEMORY_MIB];
  while (works - fails > 1) {
    const middle = Math.floor((fails + works) / 2);
    if (runs(middle)) works = middle;
    else fails = middle;
  }
  return works;
}

// Each client says in a room of its own, so every `say` is one emit to one
// socket, and the room's count is the number of its own says.
const REQUESTS = {
  echo: async (socket, n) => (await socket.emitWithAck("echo", { n }))?.n === n,
  say: async (socket) => {
    socket.said += 1;
    return (await socket.emitWithAck("say", { room: socket.room, text: "hello" }))?.count === socket.said;
  },
};

async function serving(plugin, cacheDir) {
  const server = await serveRelease(manifestFor(plugin, cacheDir));
  try {
    const ready = memoryKib(server.child.pid).rss;
    const port = new URL(server.url).port;
    const sockets = await Promise.all(Array.from({ length: CLIENTS }, () => openRawSocket(port, "/")));
    for (const socket of sockets) {
      socket.room = unique("room");
      socket.said = 0;
      await socket.emitWithAck("join", { room: socket.room });
    }
    const echo = await closedLoops(sockets, { seconds: SECONDS, pid: server.child.pid, request: REQUESTS.echo });
    const say = await closedLoops(sockets, { seconds: SECONDS, pid: server.child.pid, request: REQUESTS.say });
    const loaded = memoryKib(server.child.pid).rss;
    for (const socket of sockets) socket.close();
    return { echo, say, readyRssKib: ready, loadedRssKib: loaded };
  } finally {
    await server.stop();
  }
}

const results = [];
for (const plugin of values.plugins.split(",")) {
  const { size } = statSync(wasm(plugin));
  // Only the first load compiles: the RSS figures are those of a server that
  // loaded the code from the cache, as after any restart.
  const cacheDir = tempDir("switchboard-code-cache-");
  const load = loadTimes(plugin, cacheDir);
  results.push({ plugin, size, ...load, memoryMib: memoryNeededMib(plugin, cacheDir), ...(await serving(plugin, cacheDir)) });
}

const baseline = results[0];
const ratio = (value, base) => `${(value / base).toFixed(2)}x`;
const rows = [
  ["component", (r) => `${(r.size / 1024 / 1024).toFixed(2)} MiB`, (r) => r.size],
  ["load, cold code cache", (r) => `${Math.round(r.coldMs)} ms`, (r) => r.coldMs],
  ["load, warm code cache", (r) => `${Math.round(r.warmMs)} ms`, (r) => r.warmMs],
  ["memory_mib an instance needs", (r) => `${r.memoryMib} MiB`, (r) => r.memoryMib],
  ["server RSS when ready", (r) => `${(r.readyRssKib / 1024).toFixed(1)} MiB`, (r) => r.readyRssKib],
  ["server RSS after the load", (r) => `${(r.loadedRssKib / 1024).toFixed(1)} MiB`, (r) => r.loadedRssKib],
  ["echo acks/s", (r) => Math.round(r.echo.acksPerSecond).toLocaleString("en"), (r) => r.echo.acksPerSecond],
  ["echo acks per CPU-second", (r) => Math.round(r.echo.acksPerCpuSecond).toLocaleString("en"), (r) => r.echo.acksPerCpuSecond],
  ["echo p50 / p99", (r) => `${r.echo.p50.toFixed(2)} / ${r.echo.p99.toFixed(2)} ms`, (r) => r.echo.p50],
  ["say acks/s", (r) => Math.round(r.say.acksPerSecond).toLocaleString("en"), (r) => r.say.acksPerSecond],
  ["say acks per CPU-second", (r) => Math.round(r.say.acksPerCpuSecond).toLocaleString("en"), (r) => r.say.acksPerCpuSecond],
  ["say p50 / p99", (r) => `${r.say.p50.toFixed(2)} / ${r.say.p99.toFixed(2)} ms`, (r) => r.say.p50],
];
console.log(`${CLIENTS} clients, one event in flight each, ${SECONDS} s per event and plugin; ${path.basename(RELEASE_BIN)} at ${RELEASE_BIN}`);
console.log(`| | ${results.map((r) => r.plugin).join(" | ")} |`);
console.log(`|---|${results.map(() => "---").join("|")}|`);
for (const [label, show, value] of rows) {
  const cells = results.map((r) => (r === baseline ? show(r) : `${show(r)} (${ratio(value(r), value(baseline))})`));
  console.log(`| ${label} | ${cells.join(" | ")} |`);
}
const wrong = results.flatMap((r) => [r.echo.wrong, r.say.wrong]).reduce((a, b) => a + b, 0);
if (wrong > 0) {
  console.error(`${wrong} acks were wrong`);
  process.exit(1);
}
