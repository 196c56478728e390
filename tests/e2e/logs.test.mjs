// Log lines an operator's tools can read: plain text without colour codes
// when stderr is not a terminal, or one JSON object per line.

import assert from "node:assert/strict";
import { afterEach, test } from "node:test";

import { closeAllSockets, connect, emitAck, emitAckOk, faultyPlugin, logged, metric, startHost, waitFor } from "./harness.mjs";

let host;

afterEach(async () => {
  closeAllSockets();
  if (host) {
    const { code } = await host.stop();
    assert.equal(code, 0, `host exit code; stderr:\n${host.stderr().slice(-2000)}`);
    host = undefined;
  }
});

/** Starts a host, has its plugin log a line, stops it; resolves to its stderr lines. */
async function logLinesOf(env) {
  host = await startHost({ plugins: [faultyPlugin({ events: ["log"] })], env });
  const socket = await connect(host.url, { namespace: "/faulty" });
  await emitAckOk(socket, "log", "a line from the plugin");
  socket.close();
  const { code } = await host.stop();
  assert.equal(code, 0);
  const lines = host.stderr().split("\n").filter((line) => line.length > 0);
  host = undefined;
  return lines;
}

test("text logs to a pipe carry no colour codes, even without NO_COLOR", async () => {
  const lines = await logLinesOf({ NO_COLOR: undefined, SWITCHBOARD_LOG_FORMAT: undefined });
  assert.ok(lines.some((line) => line.includes("a line from the plugin")), lines.join("\n"));
  assert.deepEqual(
    lines.filter((line) => line.includes("\u001b")),
    [],
    "lines with ANSI escape codes",
  );
});

test("SWITCHBOARD_LOG_FORMAT=json writes one JSON object per line", async () => {
  const lines = await logLinesOf({ SWITCHBOARD_LOG_FORMAT: "json" });
  const records = lines.map((line) => {
    try {
      return JSON.parse(line);
    } catch {
      assert.fail(`not a JSON line: ${line}`);
    }
  });
  assert.ok(records.every((record) => typeof record.level === "string" && typeof record.timestamp === "string"));
  const fromPlugin = records.find((record) => record.fields?.message === "a line from the plugin");
  assert.ok(fromPlugin, `no record of the plugin's line in:\n${lines.join("\n")}`);
  assert.equal(fromPlugin.fields.plugin, "faulty");
  assert.equal(fromPlugin.level, "INFO");
});

test("a trapping plugin's log lines name the socket, namespace, event and plugin, and its panic message", async () => {
  host = await startHost({ plugins: [faultyPlugin({ events: ["trap"] })], env: { SWITCHBOARD_LOG_FORMAT: "json" } });
  const socket = await connect(host.url, { namespace: "/faulty" });
  const reply = await emitAck(socket, "trap", null);
  assert.equal(reply.error.code, "plugin_trapped");
  assert.match(reply.error.message, /after logging: panicked at .*asked to trap/, "the client is told the panic's message");
  const records = () => host.stderr().split("\n").filter((line) => line.startsWith("{")).map((line) => JSON.parse(line));
  const context = { namespace: "/faulty", socket: socket.id, event: "trap", plugin: "faulty" };
  const inContext = (record) =>
    Object.entries(context).every(([field, value]) => record.spans?.some((span) => span[field] === value));
  const panic = await waitFor(() => records().find((record) => /asked to trap/.test(record.fields?.message ?? "")), undefined,
    "the panic's message in the log");
  assert.match(panic.fields.message, /panicked at .*lib\.rs:\d+:\d+/, "with its location");
  assert.equal(panic.level, "ERROR");
  assert.ok(inContext(panic), JSON.stringify(panic));
  // Lines reach stderr from the log's own thread, not always before the reply.
  const trap = await waitFor(() => records().find((record) => /crashed/.test(record.fields?.message ?? "")), undefined,
    "the trap's line");
  assert.ok(inContext(trap), `the trap's line with its context: ${JSON.stringify(trap)}`);
});

test("a plugin logging while stderr is not read holds up no one: lines past the queue are dropped, counted and reported", async () => {
  host = await startHost({
    // Over its own rate, its lines would be dropped before they reach the queue.
    plugins: [faultyPlugin({ events: ["echo", "log"], limits: { log_lines_per_second: 1_000_000 } })],
    namespaces: { "/faulty": { events_per_second: 100_000, event_burst: 100_000 } },
  });
  const loggers = await Promise.all(Array.from({ length: 5 }, () => connect(host.url, { namespace: "/faulty" })));
  const other = await connect(host.url, { namespace: "/faulty" });
  // The reader of the node's stderr stops, as a stalled log pipe does: its buffers fill.
  host.child.stderr.pause();
  try {
    // 6,000 lines of 1 KB: more than stderr's buffers and the 4,096 queued lines together.
    const logged = await Promise.all(
      loggers.map(async (socket) => {
        for (let n = 0; n < 1200; n += 1) await emitAckOk(socket, "log", "x".repeat(1000));
      }),
    );
    assert.equal(logged.length, 5);
    assert.deepEqual(await emitAckOk(other, "echo", "still here"), { echo: "still here", marker: "faulty" });
    assert.equal((await fetch(`${host.url}/healthz`)).status, 200);
  } finally {
    host.child.stderr.resume();
  }
  const dropped = await metric(host.url, "switchboard_log_lines_dropped_total");
  assert.ok(dropped > 0, "lines were dropped and counted");
  await logged(host, /log lines were dropped: stderr took them slower than they came/);
});

test("a plugin logging past limits.log_lines_per_second has the rest dropped, counted and warned of", async () => {
  host = await startHost({ plugins: [faultyPlugin({ events: ["log"], limits: { log_lines_per_second: 5 } })] });
  const socket = await connect(host.url, { namespace: "/faulty" });
  for (let n = 0; n < 50; n += 1) await emitAckOk(socket, "log", `rated line ${n}`);
  await logged(host, /plugin `faulty` logged faster than limits\.log_lines_per_second: 1 line\(s\) dropped/);
  const dropped = await metric(host.url, "switchboard_plugin_log_lines_dropped_total", { plugin: "faulty" });
  assert.ok(dropped >= 30, `${dropped} dropped`);
  const lines = () => host.stderr().split("\n").filter((line) => /rated line \d+/.test(line)).length;
  await waitFor(() => lines() + dropped === 50, undefined, () => `every line logged or counted: ${lines()} logged, ${dropped} dropped`);
});
