// Starting servers for the load tools: a command that prints the ready line
// `... listening on http://ADDR`, or the release switchboard on a manifest.
import { spawn, spawnSync } from "node:child_process";
import path from "node:path";
import readline from "node:readline";

import { REPO, killChildren } from "../e2e/harness.mjs";

/** How long a server may take to stop on SIGTERM before it is killed. */
const STOP_GRACE_MS = 10000;

// A tool that fails midway would leave its servers running (and holding its output open).
// An error nothing caught ends a tool without the `exit` event (the test runner the
// e2e harness loads rethrows it from its handler), so the monitor, which runs before
// any handler, stops them too: the harness's children (Redis) with them.
const started = new Set();
function killStarted() {
  for (const child of started) child.kill("SIGKILL");
  killChildren();
}
process.on("exit", killStarted);
process.on("uncaughtExceptionMonitor", killStarted);

/**
 * Runs `command` (with `env` added to the environment) and resolves to
 * `{ child, url, stop() }` once it prints its ready line; `stop()` sends
 * SIGTERM and resolves once the process is gone.
 */
export function startServer(command, args, { env = {} } = {}) {
  const child = spawn(command, args, {
    stdio: ["ignore", "pipe", "inherit"],
    // Each server's own default log filter unless RUST_LOG is set: what
    // operators run is what is measured.
    env: { ...process.env, ...env },
  });
  started.add(child);
  const exited = new Promise((resolve) => child.on("exit", resolve));
  exited.then(() => started.delete(child));
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill("SIGTERM");
    const kill = setTimeout(() => child.kill("SIGKILL"), STOP_GRACE_MS);
    await exited;
    clearTimeout(kill);
  };
  return new Promise((resolve, reject) => {
    let output = "";
    child.stdout.on("data", (chunk) => {
      output += chunk;
      const match = output.match(/listening on (http:\/\/[\d.:]+)/);
      if (match) resolve({ child, url: match[1], stop });
    });
    child.on("exit", (code) => reject(new Error(`${command} exited with ${code} before it was ready`)));
  });
}

/** The switchboard binary the load tools run: target/release's, or $SWITCHBOARD_BIN. */
/**
 * `[namespaces]` settings that let one socket send as fast as its acks come
 * back: every per-socket limit (events, plugin time, bytes sent) far above
 * what the load tools' clients reach, so they measure the server, not its
 * limits. Hostile clients keep the defaults.
 */
export const UNLIMITED_SOCKET = {
  events_per_second: 1_000_000,
  event_burst: 1_000_000,
  plugin_ms_per_second: 1_000_000,
  plugin_burst_ms: 1_000_000,
  output_bytes_per_second: 1_000_000_000_000,
  output_burst_bytes: 1_000_000_000_000,
};

export const RELEASE_BIN = process.env.SWITCHBOARD_BIN ?? path.join(REPO, "target/release/switchboard");

/** `switchboard serve` from target/release (or $SWITCHBOARD_BIN) on a free port. */
export function serveRelease(manifestPath) {
  return startServer(RELEASE_BIN, ["serve", "--manifest", manifestPath, "--listen", "127.0.0.1:0"]);
}

const LOAD_DIR = path.join(REPO, "tests/load");
const LOAD_TARGET = path.join(REPO, "target/load-baseline");

/**
 * The socketioxide baseline (tests/load/socketioxide-baseline), built in
 * release on first use, on a free port; `env.REDIS_URL` makes it a node of a
 * cluster over socketioxide-redis. `threads`: its runtime's worker threads
 * (tokio's TOKIO_WORKER_THREADS), as `server.threads` sizes Switchboard;
 * unset, one per core.
 */
export function serveSocketioxide({ env = {}, threads } = {}) {
  const workers = threads ? { TOKIO_WORKER_THREADS: String(threads) } : {};
  return startServer(buildLoadTool("socketioxide-baseline"), ["--listen", "127.0.0.1:0"], { env: { ...env, ...workers } });
}

/**
 * Builds the crate `tests/load/<crate>` in release (its own workspace, into
 * target/load-baseline, shared by the load tools' crates) and returns its
 * binary `bin`.
 */
export function buildLoadTool(crate, bin = crate) {
  const built = spawnSync(
    "cargo",
    ["build", "--release", "--quiet", "--manifest-path", path.join(LOAD_DIR, crate, "Cargo.toml"), "--target-dir", LOAD_TARGET],
    { stdio: "inherit" },
  );
  if (built.status !== 0) throw new Error(`building tests/load/${crate} failed`);
  return path.join(LOAD_TARGET, "release", bin);
}

/** What each counter of `after` rose by since `before` (objects of the same keys). */
export function risenBy(before, after) {
  return Object.fromEntries(Object.entries(after).map(([key, value]) => [key, value - before[key]]));
}

/**
 * Runs a load client of tests/load/clients: `binary` with `args`, which
 * prints the line `start` when its measured phase begins, `end` when it
 * ends, then its figures as one JSON line. Resolves to those figures
 * (`result`) and what each reading of `meter()` (an object of counters, such
 * as CPU seconds) rose by over the phase (`used`).
 */
export async function runLoadClient(binary, args, { start, end, meter }) {
  const child = spawn(binary, args, { stdio: ["ignore", "pipe", "inherit"] });
  const exited = new Promise((resolve) => child.once("exit", resolve));
  let before, used, result;
  for await (const line of readline.createInterface({ input: child.stdout })) {
    if (line === start) {
      before = meter();
    } else if (line === end) {
      used = risenBy(before, meter());
    } else {
      result = JSON.parse(line);
    }
  }
  const status = await exited;
  if (status !== 0 || !result || !used) throw new Error(`${path.basename(binary)} exited with ${status}`);
  return { result, used };
}
