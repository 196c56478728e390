// A plugin that spins or allocates from many concurrent calls degrades only
// its own calls: past `limits.concurrency` or the node's
// `plugin_memory_mib` its calls fail with `overloaded`, the node's memory
// stays within the budget, its memory grows no faster than
// `memory_growth_mib_per_second`, and a well-behaved client of another plugin
// gets every ack, right, throughout.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, afterEach, describe, test } from "node:test";

import {
  closeAllSockets,
  connect,
  emitAck,
  emitAckError,
  faultyPlugin,
  quiet,
  startHost,
  waitFor,
} from "./harness.mjs";

const MIB = 1024 * 1024;

/** Warnings that count the faulty plugin's refused calls (at most one per 10 s). */
function refusalWarnings(stderr) {
  return stderr.split("\n").filter((line) => /call\(s\) refused since the last/.test(line) && line.includes("plugin `faulty`"))
    .length;
}

let host;

afterEach(async () => {
  closeAllSockets();
  if (host) {
    const { code } = await host.stop();
    assert.equal(code, 0, `host exit code; stderr:\n${host.stderr().slice(-2000)}`);
    host = undefined;
  }
});

after(closeAllSockets);

/** The faulty plugin under another name, serving only `echo`: the bystander. */
function steadyPlugin() {
  return faultyPlugin({ name: "steady", namespaces: ["/steady"], events: ["echo"], limits: { memory_mib: 32 } });
}

/** The steady client echoes as fast as acks return: over the default event rate, which is not what is measured. */
const STEADY_RATE = { "/steady": { events_per_second: 100_000, event_burst: 100_000 } };

/** A host with the faulty plugin under `limits` on `/faulty`, the steady plugin beside it, and `server` settings. */
function startBesideSteady(limits, server = {}) {
  return startHost({ namespaces: STEADY_RATE, server, plugins: [faultyPlugin({ limits }), steadyPlugin()] });
}

/**
 * Echoes numbered payloads on a `/steady` socket, one after another, until
 * `stop()`; resolves to how many came back. Any missing or wrong ack rejects.
 */
async function keepEchoing(url) {
  const socket = await connect(url, { namespace: "/steady" });
  let stopped = false;
  const done = (async () => {
    let count = 0;
    while (!stopped) {
      const payload = { n: count, text: `message ${count}` };
      const reply = await emitAck(socket, "echo", payload);
      assert.deepEqual(reply.echo, payload, `echo ${count} came back wrong: ${JSON.stringify(reply)}`);
      count += 1;
    }
    return count;
  })();
  done.catch(() => {}); // reported by `stop()`
  return {
    async stop() {
      stopped = true;
      return done;
    },
  };
}

/** The server process's memory from /proc, in bytes. */
function memory(pid) {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kib = (field) => Number(status.match(new RegExp(`^${field}:\\s+(\\d+) kB$`, "m"))[1]);
  return { rss: kib("VmRSS") * 1024, peak: kib("VmHWM") * 1024 };
}

describe("plugin isolation", () => {
  test("calls over limits.concurrency get `overloaded`; another plugin's client is served throughout", async () => {
    host = await startBesideSteady({ time_ms: 1500, concurrency: 2, queue_ms: 100 });
    const echoing = await keepEchoing(host.url);
    const spinners = await Promise.all([0, 1, 2].map(() => connect(host.url, { namespace: "/faulty" })));
    // Two calls spin and hold both places...
    const spinning = spinners.slice(0, 2).map((socket) => emitAckError(socket, "spin", {}, { timeout: 10000 }));
    await quiet(300);
    // ...so a third call of the same plugin waits its 100 ms, then is refused.
    const refused = await emitAckError(spinners[2], "echo", { n: 1 });
    assert.equal(refused.code, "overloaded", JSON.stringify(refused));
    assert.match(refused.message, /limits\.concurrency/);
    await waitFor(() => refusalWarnings(host.stderr()) === 1, 5000, "the refusal to be logged");
    for (const error of await Promise.all(spinning)) {
      assert.equal(error.code, "plugin_timeout", JSON.stringify(error));
    }
    // The places are free again once the spinning calls are stopped.
    assert.deepEqual((await emitAck(spinners[2], "echo", { n: 2 })).echo, { n: 2 });
    assert.ok((await echoing.stop()) > 0, "the steady client got no ack at all");
  });

  test("sockets calling a spinning handler leave another plugin's client served", async () => {
    host = await startBesideSteady({ time_ms: 500 });
    const echoing = await keepEchoing(host.url);
    const spinners = await Promise.all([0, 1, 2, 3].map(() => connect(host.url, { namespace: "/faulty" })));
    // Each spinner keeps one call spinning for 3 rounds of the time limit.
    const codes = await Promise.all(
      spinners.map(async (socket) => {
        const seen = [];
        for (let round = 0; round < 3; round += 1) {
          seen.push((await emitAckError(socket, "spin", {}, { timeout: 10000 })).code);
        }
        return seen;
      }),
    );
    assert.deepEqual(codes.flat(), Array(12).fill("plugin_timeout"));
    assert.ok((await echoing.stop()) > 0, "the steady client got no ack at all");
  });

  test("many concurrent `hog` calls stay within plugin_memory_mib; another plugin's client is served", async () => {
    const budgetMib = 256;
    host = await startBesideSteady({ time_ms: 5000, memory_mib: 64, queue_ms: 100 }, { plugin_memory_mib: budgetMib });
    const before = memory(host.child.pid);
    const started = Date.now();
    const echoing = await keepEchoing(host.url);
    // 48 sockets at once: 48 instances of up to 64 MiB each would be 3 GiB.
    const hogs = await Promise.all(Array.from({ length: 48 }, () => connect(host.url, { namespace: "/faulty" })));
    const errors = await Promise.all(hogs.map((socket) => emitAckError(socket, "hog", {}, { timeout: 20000 })));
    const codes = errors.map((error) => error.code);
    for (const code of codes) {
      assert.ok(["overloaded", "plugin_memory_limit"].includes(code), `unexpected ${code}: ${JSON.stringify(errors)}`);
    }
    assert.ok(codes.includes("overloaded"), `no call was refused for the budget: ${codes.join(", ")}`);
    const overloaded = errors.find((error) => error.code === "overloaded");
    assert.match(overloaded.message, /plugin_memory_mib/);
    // Refusals are logged with a count, not one line each.
    await waitFor(() => refusalWarnings(host.stderr()) >= 1, undefined, "the refusals to be logged");
    const logged = refusalWarnings(host.stderr());
    const overloadedCount = codes.filter((code) => code === "overloaded").length;
    assert.ok(logged <= 1 + Math.floor((Date.now() - started) / 10000), `${logged} refusal warnings for ${overloadedCount} refusals`);
    // The budget bounds the guests' memory; the margin is the host's own.
    const { peak } = memory(host.child.pid);
    const marginMib = 128;
    assert.ok(
      peak < before.rss + (budgetMib + marginMib) * MIB,
      `peak RSS ${Math.round(peak / MIB)} MiB, over ${Math.round(before.rss / MIB)} MiB at start + ${budgetMib} MiB budget + ${marginMib} MiB`,
    );
    // Memory is given back: the plugin works again afterwards.
    assert.deepEqual((await emitAck(hogs[0], "echo", { n: 3 })).echo, { n: 3 });
    assert.ok((await echoing.stop()) > 0, "the steady client got no ack at all");
  });

  test("a plugin growing its memory faster than `memory_growth_mib_per_second` is slowed to it, within its time limit", async () => {
    // 8 MiB a second: a `hog` call's 64 MiB would take 8 s, its time limit is 1 s.
    host = await startBesideSteady({ time_ms: 1000, memory_mib: 64, memory_growth_mib_per_second: 8 });
    const echoing = await keepEchoing(host.url);
    const hog = await connect(host.url, { namespace: "/faulty" });
    const started = Date.now();
    const error = await emitAckError(hog, "hog", {}, { timeout: 10000 });
    assert.equal(error.code, "plugin_timeout", `the hog reached its memory limit instead: ${JSON.stringify(error)}`);
    assert.ok(Date.now() - started >= 900, "the call ended before its time limit");
    // Calls that do not grow are not held back.
    assert.deepEqual((await emitAck(hog, "echo", { n: 1 })).echo, { n: 1 });
    assert.ok((await echoing.stop()) > 0, "the steady client got no ack at all");
  });
});
