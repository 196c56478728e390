// `switchboard call`: a plugin author runs events through a plugin with no
// server, on fresh in-memory state, and reads what it did as JSON lines.

import assert from "node:assert/strict";
import { test } from "node:test";

import { chatPlugin, faultyPlugin, manifestToml, runSwitchboard, wasm, writeManifest } from "./harness.mjs";

/** Runs `switchboard call` with `args` on `plugins`; resolves to its exit code and parsed lines. */
async function call(plugins, args) {
  const manifestPath = writeManifest(manifestToml({ plugins }));
  const result = await runSwitchboard(["call", manifestPath, ...args]);
  assert.equal(result.timedOut, false);
  const lines = result.stdout.split("\n").filter((line) => line.length > 0).map((line) => JSON.parse(line));
  return { code: result.code, lines, stderr: result.stderr };
}

test("events run in order from one socket: joins, emits and replies, as the plugin made them", async () => {
  const { code, lines } = await call([chatPlugin()], [
    "--plugin", "chat", "--auth", '{"user":"ada"}',
    "--event", "join", "--data", '{"room":"lobby"}',
    "--event", "send_message", "--data", '{"room":"lobby","text":"hi"}',
  ]);
  assert.equal(code, 0);
  assert.deepEqual(lines.slice(0, 2), [
    { join: { room: "lobby" } },
    { reply: { room: "lobby", history: [], members: 1 } },
  ]);
  const [emit, reply] = lines.slice(2);
  assert.equal(emit.emit.event, "message");
  assert.equal(emit.emit.room, "lobby");
  assert.deepEqual([emit.emit.data.from, emit.emit.data.text], ["ada", "hi"]);
  assert.deepEqual(reply, { reply: { id: 1 } });
  assert.equal(lines.length, 4);
});

test("a refused connection, a plugin error and a trap are error lines and exit 1", async () => {
  const refused = await call([faultyPlugin()], ["--plugin", "faulty", "--auth", '{"deny":true}', "--event", "echo"]);
  assert.equal(refused.code, 1);
  assert.deepEqual(refused.lines.map((line) => line.error?.code), ["connection_refused"]);

  const failed = await call([chatPlugin()], ["--plugin", "chat", "--event", "send_message", "--data", '{"room":"x","text":"y"}']);
  assert.equal(failed.code, 1);
  assert.equal(failed.lines.at(-1).error.code, "not_in_room");

  const trapped = await call([faultyPlugin()], ["--plugin", "faulty", "--event", "trap"]);
  assert.equal(trapped.code, 1);
  assert.equal(trapped.lines.at(-1).error.code, "plugin_trapped");
  assert.match(trapped.lines.at(-1).error.message, /asked to trap/);

  const unknown = await call([chatPlugin()], ["--plugin", "nope", "--event", "join"]);
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /no plugin `nope`/);
});

test("--fire-timers fires what the events scheduled, soonest first, as if the clock had reached it", async () => {
  const { code, lines } = await call([faultyPlugin({ events: ["schedule", "cancel"] })], [
    "--plugin", "faulty", "--now-ms", "1000000",
    "--event", "schedule", "--data", '{"key":"later","delay_ms":3600000,"payload":"b"}',
    "--event", "schedule", "--data", '{"key":"sooner","delay_ms":1000,"payload":"a"}',
    "--event", "schedule", "--data", '{"key":"dropped","delay_ms":10,"payload":"c"}',
    "--event", "cancel", "--data", '{"key":"dropped"}',
    "--fire-timers",
  ]);
  assert.equal(code, 0);
  const fired = lines.slice(4);
  assert.deepEqual(fired.map((line) => line.timer?.key ?? line.emit?.data), ["sooner", { key: "sooner", payload: "a" }, "later", { key: "later", payload: "b" }]);
  assert.deepEqual(fired.filter((line) => line.timer).map((line) => line.timer.at_ms), [1001000, 4600000]);
});

test("--now-ms is the time the plugin reads", async () => {
  const { lines } = await call([chatPlugin()], [
    "--plugin", "chat", "--auth", '{"user":"ada"}', "--now-ms", "1234",
    "--event", "join", "--data", '{"room":"lobby"}',
    "--event", "send_message", "--data", '{"room":"lobby","text":"hi"}',
  ]);
  assert.equal(lines[2].emit.data.ts, 1234);
});

test("--disconnect runs on-disconnect last, with what it emits", async () => {
  const { code, lines } = await call([chatPlugin()], [
    "--plugin", "chat", "--auth", '{"user":"ada"}',
    "--event", "join", "--data", '{"room":"lobby"}',
    "--disconnect", "transport close",
  ]);
  assert.equal(code, 0);
  assert.deepEqual(lines.slice(2), [
    { disconnect: { reason: "transport close" } },
    { emit: { namespace: "/", room: "lobby", except: null, event: "user_offline", data: { user: "ada" } } },
  ]);
});

test("an event asking for an ack is shown with its timeout; no answer comes", async () => {
  const conformance = { name: "conformance", path: wasm("conformance"), namespaces: ["/"], events: ["ask"] };
  const { code, lines } = await call([conformance], [
    "--plugin", "conformance",
    "--event", "ask", "--data", '{"to":"s1","event":"question","timeout_ms":500,"tag":"t"}',
  ]);
  assert.equal(code, 0);
  assert.deepEqual(lines, [
    { emit: { namespace: "/", room: "socket:s1", except: null, event: "question", args: [], ack_timeout_ms: 500 } },
    { reply: true },
  ]);
});
