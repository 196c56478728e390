// /metrics counts what happened to sockets and events: connections per
// namespace, events by plugin and outcome, events refused before any plugin
// saw them, and disconnects by reason.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { after, before, test } from "node:test";

import {
  chatPlugin,
  closeAllSockets,
  connect,
  emitAckError,
  emitAckOk,
  faultyPlugin,
  manifestToml,
  REPO,
  startHost,
  unique,
  waitFor,
} from "./harness.mjs";

const API_TOKEN = "metrics-test-token";
const MAX_PAYLOAD = 10000;

let host;

before(async () => {
  host = await startHost({
    manifest:
      manifestToml({
        server: { max_payload_bytes: MAX_PAYLOAD },
        plugins: [chatPlugin(), faultyPlugin({ events: ["trap"], limits: { time_ms: 500 } })],
      }) +
      `\n[api]\ntoken = "${API_TOKEN}"\n`,
  });
});

after(async () => {
  closeAllSockets();
  if (host) {
    const { code } = await host.stop();
    assert.equal(code, 0, `host exit code; stderr:\n${host.stderr().slice(-2000)}`);
  }
});

/** The samples of the Prometheus text format, as `{ name, labels, value }`. */
function samples(text) {
  return text
    .split("\n")
    .filter((line) => line && !line.startsWith("#"))
    .map((line) => {
      const match = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/);
      assert.ok(match, `not a sample line: ${line}`);
      const labels = Object.fromEntries([...(match[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], m[2]]));
      return { name: match[1], labels, value: Number(match[3]) };
    });
}

async function metric(name, labels) {
  const response = await fetch(`${host.url}/metrics`, { headers: { authorization: `Bearer ${API_TOKEN}` } });
  assert.equal(response.status, 200);
  const found = samples(await response.text()).filter(
    (sample) => sample.name === name && Object.entries(labels).every(([key, value]) => sample.labels[key] === value),
  );
  return found.reduce((sum, sample) => sum + sample.value, 0);
}

test("connections, events, refusals and disconnects are counted", async () => {
  const staying = await connect(host.url, { auth: { user: unique("staying") } });
  const leaving = await connect(host.url, { auth: { user: unique("leaving") } });
  assert.equal(await metric("switchboard_connections", { namespace: "/" }), 2);

  const room = unique("counted");
  await emitAckOk(staying, "join", { room });
  await emitAckOk(leaving, "join", { room });
  assert.equal((await emitAckError(staying, "join", { room: "" })).code, "invalid_payload");
  assert.equal((await emitAckError(staying, "no_such_event", {})).code, "unknown_event");
  const tooLarge = { room, text: "x".repeat(MAX_PAYLOAD) };
  assert.equal((await emitAckError(staying, "send_message", tooLarge)).code, "payload_too_large");

  const handled = { namespace: "/", plugin: "chat", event: "join" };
  assert.equal(await metric("switchboard_events_total", { ...handled, outcome: "ok" }), 2);
  assert.equal(await metric("switchboard_events_total", { ...handled, outcome: "invalid_payload" }), 1);
  assert.equal(await metric("switchboard_events_refused_total", { namespace: "/", code: "unknown_event" }), 1);
  assert.equal(await metric("switchboard_events_refused_total", { namespace: "/", code: "payload_too_large" }), 1);
  // A client-chosen event name never becomes a label.
  assert.equal(await metric("switchboard_events_total", { event: "no_such_event" }), 0);

  leaving.close();
  await waitFor(async () => (await metric("switchboard_connections", { namespace: "/" })) === 1, undefined, "one connection left");
  assert.equal(await metric("switchboard_disconnects_total", { namespace: "/", reason: "client_disconnect" }), 1);
});

test("plugin calls are timed, their failures counted by code, their emits counted", async () => {
  const [ada, bob] = await Promise.all(["ada", "bob"].map((name) => connect(host.url, { auth: { user: unique(name) } })));
  const room = unique("timed");
  await emitAckOk(ada, "join", { room });
  await emitAckOk(bob, "join", { room });
  const emitsBefore = await metric("switchboard_emits_total", { plugin: "chat" });
  await emitAckOk(ada, "send_message", { room, text: "counted" });
  assert.equal(await metric("switchboard_emits_total", { plugin: "chat" }), emitsBefore + 1, "one message, one emit");
  assert.ok((await metric("switchboard_plugin_call_seconds_count", { plugin: "chat" })) >= 3);
  assert.ok((await metric("switchboard_plugin_call_seconds_bucket", { plugin: "chat", le: "+Inf" })) >= 3);

  const faulty = await connect(host.url, { namespace: "/faulty" });
  assert.equal((await emitAckError(faulty, "trap", null)).code, "plugin_trapped");
  assert.equal(await metric("switchboard_plugin_failures_total", { plugin: "faulty", code: "plugin_trapped" }), 1);
  assert.equal(await metric("switchboard_plugin_failures_total", { plugin: "chat" }), 0);
});

test("every series the Grafana dashboard queries is one the README documents", () => {
  const dashboard = JSON.parse(readFileSync(path.join(REPO, "examples/grafana/dashboard.json"), "utf8"));
  const queried = new Set(
    dashboard.panels
      .flatMap((panel) => panel.targets.map((target) => target.expr))
      .flatMap((expr) => [...expr.matchAll(/switchboard_[a-z_]+/g)].map((match) => match[0].replace(/_(bucket|count|sum)$/, ""))),
  );
  const readme = readFileSync(path.join(REPO, "README.md"), "utf8");
  const documented = new Set([...readme.matchAll(/switchboard_[a-z_]+/g)].map((match) => match[0]));
  assert.ok(queried.size >= 15, `the dashboard queries ${queried.size} series`);
  assert.deepEqual([...queried].filter((name) => !documented.has(name)), [], "queried but not documented");
});

test("the allocator's figures are exported: bytes allocated, and the memory held covering them", async () => {
  const allocated = await metric("switchboard_memory_allocated_bytes", {});
  const resident = await metric("switchboard_memory_resident_bytes", {});
  // A node with plugins loaded holds megabytes; zero would mean the figures come from no allocator in use.
  assert.ok(allocated > 1_000_000, `allocated ${allocated}`);
  assert.ok(resident >= allocated, `resident ${resident} < allocated ${allocated}`);
});
