// Test harness for the end-to-end suite: starts the real `switchboard` binary
// with a manifest written for the test, and drives it with the official
// socket.io-client.
//
// - `startHost({ plugins, server })` writes a manifest, runs `serve` on a free
//   loopback port and resolves once the ready line is printed.
// - `connect`, `emitAck`, `collect`, `collectAll`, `waitFor`, `quiet`: client
//   helpers; every wait has a timeout and says what it waited for.
// - `runCheck`, `runSwitchboard`: the CLI for manifest tests.
//
// Binary: $SWITCHBOARD_BIN or <repo>/target/debug/switchboard.
// Plugins: $SWITCHBOARD_WASM_DIR or <repo>/target/wasm32-wasip2/release.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { after } from "node:test";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { io } from "socket.io-client";

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const BIN = process.env.SWITCHBOARD_BIN
  ? path.resolve(process.env.SWITCHBOARD_BIN)
  : path.join(REPO, "target/debug/switchboard");
export const WASM_DIR = process.env.SWITCHBOARD_WASM_DIR
  ? path.resolve(process.env.SWITCHBOARD_WASM_DIR)
  : path.join(REPO, "target/wasm32-wasip2/release");

/** Default wait for anything the server should do promptly. */
export const TIMEOUT_MS = 5000;
/** How long the server gets to print its ready line. */
const STARTUP_TIMEOUT_MS = 20000;
/** How long after a test file's last test its leftover children may live. */
export const LEFTOVER_GRACE_MS = 15000;
/** How much of a child's stderr is kept for failure messages. */
const STDERR_KEEP = 64 * 1024;

export const CHAT_EVENTS = ["join", "leave", "send_message", "typing"];
export const FAULTY_EVENTS = ["echo", "relay", "trap", "spin", "hog", "fail", "count", "claim", "whoami", "disconnect_reason", "recoveries", "schedule", "cancel"];

// ---------------------------------------------------------------- artifacts

/**
 * Absolute path of a built plugin, e.g. `wasm("chat")`. Cargo names a bin
 * target's output after the bin and a cdylib's after the crate with `_`, so
 * `not_a_plugin` also finds `not-a-plugin.wasm`.
 */
export function wasm(name) {
  const file = path.join(WASM_DIR, `${name}.wasm`);
  const hyphenated = path.join(WASM_DIR, `${name.replaceAll("_", "-")}.wasm`);
  return !existsSync(file) && existsSync(hyphenated) ? hyphenated : file;
}

function requireFile(file, how) {
  if (!existsSync(file)) {
    throw new Error(`${file} does not exist; ${how}`);
  }
}

function requireBinary() {
  requireFile(BIN, "build the host with `cargo build` (or set SWITCHBOARD_BIN)");
}

/** The chat plugin's manifest entry; `overrides` replace top-level keys. */
export function chatPlugin(overrides = {}) {
  return {
    name: "chat",
    path: wasm("chat"),
    namespaces: ["/"],
    events: CHAT_EVENTS,
    ...overrides,
    config: { history_size: 50, max_message_length: 500, ...(overrides.config ?? {}) },
  };
}

/**
 * The test-only relay plugin (plugins/testing/relay): the load tools'
 * contract as plain socketioxide serves it, in namespace `/`.
 */
export function relayPlugin(overrides = {}) {
  return {
    name: "relay",
    path: wasm("relay"),
    namespaces: ["/"],
    events: ["join", "leave", "send_message", "echo"],
    ...overrides,
  };
}

/** The test-only faulty plugin's manifest entry. */
export function faultyPlugin(overrides = {}) {
  return {
    name: "faulty",
    path: wasm("faulty"),
    namespaces: ["/faulty"],
    events: FAULTY_EVENTS,
    ...overrides,
  };
}

// ---------------------------------------------------------------- manifests

function tomlValue(value) {
  if (typeof value === "string") return JSON.stringify(value); // a valid TOML basic string
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  if (Array.isArray(value)) return `[${value.map(tomlValue).join(", ")}]`;
  if (value && typeof value === "object") {
    const entries = Object.entries(value).map(([k, v]) => `${JSON.stringify(k)} = ${tomlValue(v)}`);
    return `{ ${entries.join(", ")} }`;
  }
  throw new Error(`cannot write ${value} as TOML`);
}

function tomlTable(header, table) {
  const lines = [header];
  for (const [key, value] of Object.entries(table)) {
    if (value !== undefined) lines.push(`${key} = ${tomlValue(value)}`);
  }
  return lines.join("\n");
}

/**
 * Manifest text for `{ server, plugins, namespaces }`. `server` keys are
 * written as given (`listen` defaults to 127.0.0.1:0); each plugin's `limits`
 * and `config` become their own tables; `namespaces` maps a path to its
 * `[namespaces."/path"]` table.
 */
export function manifestToml({ server = {}, plugins = [], namespaces = {} } = {}) {
  const parts = ["version = 1", tomlTable("[server]", { listen: "127.0.0.1:0", ...server })];
  for (const [namespace, table] of Object.entries(namespaces)) {
    parts.push(tomlTable(`[namespaces.${JSON.stringify(namespace)}]`, table));
  }
  for (const plugin of plugins) {
    const { limits, config, ...entry } = plugin;
    parts.push(tomlTable("[[plugins]]", entry));
    if (limits) parts.push(tomlTable("[plugins.limits]", limits));
    if (config) parts.push(tomlTable("[plugins.config]", config));
  }
  return `${parts.join("\n\n")}\n`;
}

const tempDirs = new Set();

/** A fresh temporary directory, removed when the process exits. */
export function tempDir(prefix = "switchboard-e2e-") {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  tempDirs.add(dir);
  return dir;
}

/** Writes manifest text to `<dir>/switchboard.toml` (a new temp dir by default). */
export function writeManifest(text, dir = tempDir()) {
  const file = path.join(dir, "switchboard.toml");
  writeFileSync(file, text);
  return file;
}

/** 1-based line of the first line containing `needle` (after line `from`). */
export function lineOf(text, needle, from = 0) {
  const lines = text.split("\n");
  for (let i = from; i < lines.length; i++) {
    if (lines[i].includes(needle)) return i + 1;
  }
  throw new Error(`${JSON.stringify(needle)} is not in the manifest:\n${text}`);
}

// ---------------------------------------------------------------- processes

const children = new Set();

/** Kills every child the harness started that is still running. */
export function killChildren() {
  for (const child of children) {
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
  }
}

// A test that failed before stopping what it started would leave live
// children holding the file's process open forever. This hook runs before the
// file's own (it is registered first), so it gives them time to stop theirs
// and only then kills what is left; the timer does not keep the process alive.
after(() => {
  setTimeout(killChildren, LEFTOVER_GRACE_MS).unref();
});

process.on("exit", () => {
  killChildren();
  for (const dir of tempDirs) {
    try {
      rmSync(dir, { recursive: true, force: true });
    } catch {
      // best effort
    }
  }
});

function spawnTracked(args, env, shell) {
  requireBinary();
  // `shell`: commands run first, e.g. `ulimit -n 256`, by a shell that then
  // becomes the binary (so signals and the pid are the binary's).
  const [command, argv] = shell ? ["sh", ["-c", `${shell}; exec "$0" "$@"`, BIN, ...args]] : [BIN, args];
  const child = spawn(command, argv, {
    stdio: ["ignore", "pipe", "pipe"],
    env: { RUST_LOG: "info", ...process.env, ...env },
  });
  children.add(child);
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8");
  child.stderr.setEncoding("utf8");
  child.stdout.on("data", (chunk) => {
    stdout += chunk;
  });
  child.stderr.on("data", (chunk) => {
    stderr += chunk;
    if (stderr.length > 2 * STDERR_KEEP) stderr = stderr.slice(-STDERR_KEEP);
  });
  const exited = new Promise((resolve) => {
    child.on("exit", (code, signal) => {
      children.delete(child);
      resolve({ code, signal });
    });
    child.on("error", (error) => {
      children.delete(child);
      stderr += `\n[harness] cannot run ${BIN}: ${error.message}`;
      resolve({ code: null, signal: null, error });
    });
  });
  // Exit codes are known only once the pipes are drained too.
  const closed = new Promise((resolve) => child.on("close", resolve));
  return {
    child,
    exited,
    closed,
    stdout: () => stdout,
    stderr: () => stderr,
  };
}

/**
 * Runs `switchboard serve` on `manifestPath` without waiting for anything.
 * Resolves to `{ child, exited, closed, stdout(), stderr() }`; the child is
 * killed with the test file's other leftovers.
 */
export function spawnServe(manifestPath, { listen = "127.0.0.1:0", env, shell } = {}) {
  return spawnTracked(["serve", "--manifest", manifestPath, "--listen", listen], env, shell);
}

function tail(text, max = 4000) {
  return text.length > max ? `...${text.slice(-max)}` : text;
}

/**
 * Starts `switchboard serve` with a manifest built from `{ plugins, server }`
 * on 127.0.0.1:0. Resolves to `{ url, port, manifestPath, stderr(), stop() }`
 * once the ready line appears; rejects with the child's stderr if it exits
 * first or STARTUP_TIMEOUT_MS pass. `manifest` (text) replaces the generated
 * one; `manifestPath` serves an existing file as it is (its relative paths
 * resolved against its own directory). `startupTimeout` replaces
 * STARTUP_TIMEOUT_MS for plugins that take long to compile.
 */
export async function startHost({
  plugins = [chatPlugin()],
  server = {},
  namespaces,
  manifest,
  manifestPath,
  env,
  shell,
  startupTimeout = STARTUP_TIMEOUT_MS,
} = {}) {
  const text = manifestPath ? readFileSync(manifestPath, "utf8") : manifest ?? manifestToml({ server, plugins, namespaces });
  if (!manifestPath) {
    for (const plugin of plugins) {
      requireFile(plugin.path, "build the plugins with `cd plugins && cargo build --release`");
    }
    manifestPath = writeManifest(text);
  }
  const proc = spawnServe(manifestPath, { env, shell });

  const ready = /^switchboard listening on (http:\/\/127\.0\.0\.1:(\d+))$/m;
  let timer;
  const url = await new Promise((resolve, reject) => {
    const check = () => {
      const match = proc.stdout().match(ready);
      if (match) resolve(match[1]);
    };
    proc.child.stdout.on("data", check);
    check();
    proc.exited.then(async ({ code, signal }) => {
      await proc.closed;
      reject(
        new Error(
          `switchboard serve exited (code ${code}, signal ${signal}) before printing its ready line\n` +
            `manifest ${manifestPath}:\n${text}\nstdout:\n${proc.stdout()}\nstderr:\n${tail(proc.stderr())}`,
        ),
      );
    });
    timer = setTimeout(() => {
      proc.child.kill("SIGKILL");
      reject(
        new Error(
          `switchboard serve printed no ready line within ${startupTimeout} ms\n` +
            `stdout:\n${proc.stdout()}\nstderr:\n${tail(proc.stderr())}`,
        ),
      );
    }, startupTimeout);
  }).finally(() => clearTimeout(timer));

  const readyLines = proc.stdout().split("\n").filter((line) => ready.test(line));
  let stopping;
  return {
    url,
    port: Number(new URL(url).port),
    manifestPath,
    manifest: text,
    child: proc.child,
    stdout: proc.stdout,
    stderr: proc.stderr,
    readyLineCount: () => proc.stdout().split("\n").filter((line) => ready.test(line)).length,
    initialReadyLines: readyLines.length,
    exited: proc.exited,
    /** True while the child runs. */
    alive: () => proc.child.exitCode === null && proc.child.signalCode === null,
    /**
     * Sends `signal` and waits up to `timeout` ms for the exit, then kills.
     * Resolves to `{ code, signal, ms, killed }`.
     */
    stop(signal = "SIGTERM", timeout = 10000) {
      stopping ??= (async () => {
        const started = Date.now();
        if (proc.child.exitCode !== null || proc.child.signalCode !== null) {
          const { code, signal: sig } = await proc.exited;
          return { code, signal: sig, ms: 0, killed: false };
        }
        proc.child.kill(signal);
        let killed = false;
        const timer = setTimeout(() => {
          killed = true;
          proc.child.kill("SIGKILL");
        }, timeout);
        const { code, signal: sig } = await proc.exited;
        clearTimeout(timer);
        return { code, signal: sig, ms: Date.now() - started, killed };
      })();
      return stopping;
    },
  };
}

/** Stops a `startHost` host with SIGTERM and asserts it exited 0 by itself. */
export async function stopCleanly(host) {
  const { code, killed } = await host.stop();
  assert.equal(killed, false, "the host did not stop on SIGTERM");
  assert.equal(code, 0, `the host exited with ${code}; stderr:\n${host.stderr().slice(-2000)}`);
}

/**
 * Runs the binary with `args` to completion (killed after `timeout` ms).
 * Resolves to `{ code, signal, stdout, stderr, timedOut }`.
 */
export async function runSwitchboard(args, { timeout = 30000, env } = {}) {
  const proc = spawnTracked(args, env);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    proc.child.kill("SIGKILL");
  }, timeout);
  const { code, signal } = await proc.exited;
  await proc.closed;
  clearTimeout(timer);
  return { code, signal, stdout: proc.stdout(), stderr: proc.stderr(), timedOut };
}

/** `switchboard check` on manifest text written to a temp file. */
export async function runCheck(manifestText, { dir } = {}) {
  const manifestPath = writeManifest(manifestText, dir);
  const result = await runSwitchboard(["check", manifestPath]);
  return { ...result, manifestPath };
}

// ---------------------------------------------------------------- clients

const openSockets = new Set();

/**
 * Connects a socket.io client to `url` + `namespace` and resolves on `connect`.
 * Rejects with the `connect_error` (its `message` is the server's) or after
 * `timeout` ms. Reconnection is off so a test sees every disconnect.
 */
export function connect(url, { auth, transports, namespace = "/", timeout = TIMEOUT_MS, ...options } = {}) {
  const socket = openSocket(url, { auth, transports, namespace, ...options });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.off("connect", onConnect);
      socket.off("connect_error", onError);
      socket.close();
      reject(new Error(`no connect to ${url}${namespace} within ${timeout} ms (auth ${JSON.stringify(auth)})`));
    }, timeout);
    const onConnect = () => {
      clearTimeout(timer);
      socket.off("connect_error", onError);
      resolve(socket);
    };
    const onError = (error) => {
      clearTimeout(timer);
      socket.off("connect", onConnect);
      socket.close();
      // A transport's error says what failed (an HTTP status, a socket error) only here.
      if (error.description !== undefined) {
        error.message += ` (${error.description?.message ?? JSON.stringify(error.description)})`;
      }
      reject(error);
    };
    socket.once("connect", onConnect);
    socket.once("connect_error", onError);
  });
}

/** A client socket, not yet connected (for emitting before `connect`). */
export function openSocket(url, { auth, transports, namespace = "/", ...options } = {}) {
  const socket = io(`${url}${namespace === "/" ? "" : namespace}`, {
    forceNew: true,
    reconnection: false,
    timeout: TIMEOUT_MS,
    ...(auth !== undefined ? { auth } : {}),
    ...(transports ? { transports } : {}),
    ...options,
  });
  openSockets.add(socket);
  socket.on("disconnect", () => {
    if (!socket.active) openSockets.delete(socket);
  });
  return socket;
}

/** Closes every socket `connect`/`openSocket` opened that is still open. */
export function closeAllSockets() {
  for (const socket of openSockets) socket.close();
  openSockets.clear();
}

/**
 * Emits `event` with one argument `data` and resolves to the ack's single
 * argument; rejects if no ack comes within `timeout` ms.
 */
export async function emitAck(socket, event, data, { timeout = TIMEOUT_MS } = {}) {
  try {
    return await socket.timeout(timeout).emitWithAck(event, data);
  } catch (error) {
    throw new Error(
      `no ack for ${JSON.stringify(event)} ${preview(data)} within ${timeout} ms ` +
        `(socket ${socket.id ?? "not connected"}, connected=${socket.connected}): ${error.message}`,
    );
  }
}

/** Like `emitAck`, but the ack must be `{ error: { code, message } }`; resolves to the error. */
export async function emitAckError(socket, event, data, options) {
  const reply = await emitAck(socket, event, data, options);
  if (!reply || typeof reply !== "object" || !reply.error) {
    throw new Error(`expected an error ack for ${JSON.stringify(event)} ${preview(data)}, got ${JSON.stringify(reply)}`);
  }
  return reply.error;
}

/** Asserts an ack is not an error and returns it. */
export async function emitAckOk(socket, event, data, options) {
  const reply = await emitAck(socket, event, data, options);
  if (reply && typeof reply === "object" && "error" in reply) {
    throw new Error(`${JSON.stringify(event)} ${preview(data)} failed: ${JSON.stringify(reply.error)}`);
  }
  return reply;
}

function preview(data) {
  const text = JSON.stringify(data) ?? String(data);
  return text.length > 120 ? `${text.slice(0, 120)}...(${text.length} chars)` : text;
}

/**
 * An event's payload: the host sends one argument, followed (with
 * connection-state recovery on, the default) by the event's offset, which
 * socket.io-client records and which listeners receive as a last argument.
 */
function payloadOf(args) {
  return args[0];
}

/**
 * Records every `event` the socket receives, in order: an array of payloads,
 * with `offsets` (each event's offset, or undefined) and `stop()` to
 * unsubscribe.
 */
export function collect(socket, event) {
  const received = [];
  const offsets = [];
  const listener = (...args) => {
    received.push(payloadOf(args));
    offsets.push(args[1]);
  };
  socket.on(event, listener);
  // Not enumerable, so `assert.deepEqual(received, [...])` compares only the events.
  Object.defineProperty(received, "stop", { value: () => socket.off(event, listener) });
  Object.defineProperty(received, "offsets", { value: offsets });
  return received;
}

/** Records every event of any name as `{ event, data }`, in order. */
export function collectAll(socket) {
  const received = [];
  const listener = (event, ...args) => received.push({ event, data: payloadOf(args) });
  socket.onAny(listener);
  Object.defineProperty(received, "stop", { value: () => socket.offAny(listener) });
  Object.defineProperty(received, "named", {
    value: (name) => received.filter((entry) => entry.event === name).map((entry) => entry.data),
  });
  return received;
}

/**
 * Resolves to the match once `proc`'s stderr matches `pattern`: log lines
 * reach stderr from the node's log thread, not always before what a test saw
 * the node do.
 */
export function logged(proc, pattern, timeout = TIMEOUT_MS) {
  return waitFor(() => proc.stderr().match(pattern), timeout, () => `${pattern} in the log:\n${tail(proc.stderr())}`);
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Polls `predicate` (may be async) every 10 ms until it returns truthy, and
 * resolves to that value; rejects after `timeout` ms with `message` (a string
 * or a function giving one, evaluated on failure).
 */
export async function waitFor(predicate, timeout = TIMEOUT_MS, message = "condition") {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() > deadline) {
      const text = typeof message === "function" ? message() : message;
      throw new Error(`timed out after ${timeout} ms waiting for: ${text}`);
    }
    await sleep(10);
  }
}

/** Waits `ms` so anything wrongly sent has time to arrive before asserting absence. */
export const quiet = (ms = 300) => sleep(ms);

/** Resolves once `socket` is disconnected, to the reason; rejects after `timeout`. */
export function disconnected(socket, timeout = TIMEOUT_MS) {
  if (!socket.connected) return Promise.resolve("already disconnected");
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`socket ${socket.id} still connected after ${timeout} ms`)), timeout);
    socket.once("disconnect", (reason) => {
      clearTimeout(timer);
      resolve(reason);
    });
  });
}

/** A name unique within this test run, for rooms and users. */
let counter = 0;
export function unique(prefix) {
  counter += 1;
  return `${prefix}-${process.pid}-${counter}`;
}

/**
 * The sum of a counter or gauge on a Switchboard node's `/metrics` over the
 * series whose labels include every `labels` pair, e.g.
 * `metric(url, "switchboard_disconnects_total", { reason: "slow_client" })`.
 */
export async function metric(url, name, labels = {}) {
  const text = await (await fetch(`${url}/metrics`)).text();
  const wanted = Object.entries(labels).map(([key, value]) => `${key}="${value}"`);
  return text
    .split("\n")
    .filter((line) => line.startsWith(`${name}{`) || line.startsWith(`${name} `))
    .filter((line) => wanted.every((pair) => line.includes(pair)))
    .reduce((sum, line) => sum + Number(line.slice(line.lastIndexOf(" ") + 1)), 0);
}
