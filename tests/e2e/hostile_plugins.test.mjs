// A plugin that floods emits or returns a huge value is contained and
// reported, and a well-behaved client beside it keeps being served.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import {
  closeAllSockets,
  collect,
  connect,
  emitAckError,
  emitAckOk,
  faultyPlugin,
  logged,
  startHost,
  unique,
  waitFor,
  wasm,
} from "./harness.mjs";

const MAX_PAYLOAD = 64 * 1024;

let host;

before(async () => {
  host = await startHost({
    server: { max_payload_bytes: MAX_PAYLOAD },
    plugins: [
      {
        name: "greedy",
        path: wasm("greedy"),
        namespaces: ["/greedy"],
        events: ["join_rooms", "flood", "huge"],
        limits: { time_ms: 60000 },
      },
      faultyPlugin({ events: ["echo"] }),
    ],
    // The bystander echoes as fast as acks return, over the default event rate.
    namespaces: {
      "/greedy": { events_per_second: 1000, event_burst: 1000 },
      "/faulty": { events_per_second: 100_000, event_burst: 100_000 },
    },
  });
});

after(async () => {
  closeAllSockets();
  if (host) {
    const { code } = await host.stop();
    assert.equal(code, 0, `host exit code; stderr:\n${host.stderr().slice(-2000)}`);
  }
});

/** Echo round trips on the faulty plugin while `work` runs; all must come back, in order. */
async function servedThroughout(work) {
  const bystander = await connect(host.url, { namespace: "/faulty" });
  let running = true;
  const echoes = (async () => {
    let n = 0;
    while (running) {
      const reply = await emitAckOk(bystander, "echo", { n });
      assert.deepEqual(reply.echo, { n }, "the bystander's echo");
      n += 1;
    }
    return n;
  })();
  try {
    return await work();
  } finally {
    running = false;
    assert.ok((await echoes) > 0, "the bystander got no echo at all");
  }
}

test("a plugin flooding a room with emits: every member that reads gets each once, in order", async () => {
  const room = unique("flooded");
  const member = await connect(host.url, { namespace: "/greedy" });
  await emitAckOk(member, "join_rooms", { prefix: room, count: 1 });
  const flood = collect(member, "flood");
  const count = 2000;
  const reply = await servedThroughout(() =>
    emitAckOk(member, "flood", { room: `${room}0`, count, size: 1000 }, { timeout: 60000 }),
  );
  assert.deepEqual(reply, { sent: count, refused: {} });
  await waitFor(() => flood.length === count, 30000, () => `${count} flood events (got ${flood.length})`);
  assert.deepEqual(flood.map((event) => event.n), [...Array(count).keys()]);
  assert.equal(member.connected, true);
});

test("an emit over max_payload_bytes is refused to the plugin, and nobody gets it", async () => {
  const room = unique("oversize");
  const member = await connect(host.url, { namespace: "/greedy" });
  await emitAckOk(member, "join_rooms", { prefix: room, count: 1 });
  const flood = collect(member, "flood");
  const reply = await emitAckOk(member, "flood", { room: `${room}0`, count: 3, size: MAX_PAYLOAD });
  assert.deepEqual(reply, { sent: 0, refused: { payload_too_large: 3 } });
  await emitAckOk(member, "flood", { room: `${room}0`, count: 1, size: 10 });
  await waitFor(() => flood.length === 1, undefined, "the small emit");
  assert.equal(flood[0].filler.length, 10);
  await logged(host, /payload_too_large|max_payload_bytes/);
});

test("a reply over max_payload_bytes reaches the client as an error, not as a packet", async () => {
  const client = await connect(host.url, { namespace: "/greedy" });
  const error = await servedThroughout(() => emitAckError(client, "huge", { size: 4 * MAX_PAYLOAD }));
  assert.equal(error.code, "payload_too_large");
  assert.match(error.message, /reply to `huge`/);
  // The same client, still connected, gets a reply that fits.
  assert.equal((await emitAckOk(client, "huge", { size: 100 })).length, 100);
  await logged(host, /reply over server\.max_payload_bytes not sent/);
});

test("a call's emits hold at most the plugin's memory_mib until it returns: past it they are refused, the rest delivered", async (t) => {
  const MEMORY_MIB = 8;
  const small = await startHost({
    // The burst of up to 8 MB reaches the member at once: room for it, so it is not cut off as slow.
    server: { max_outbound_bytes: 4 * (MEMORY_MIB << 20) },
    plugins: [
      { name: "greedy", path: wasm("greedy"), namespaces: ["/greedy"], events: ["join_rooms", "flood"], limits: { memory_mib: MEMORY_MIB } },
    ],
  });
  t.after(() => small.stop());
  const room = unique("held");
  const member = await connect(small.url, { namespace: "/greedy" });
  await emitAckOk(member, "join_rooms", { prefix: room, count: 1 });
  const flood = collect(member, "flood");
  // 100 emits of 200 KB would hold 20 MB until the call returns.
  const reply = await emitAckOk(member, "flood", { room: `${room}0`, count: 100, size: 200_000 });
  const fitting = Math.floor((MEMORY_MIB << 20) / 200_000);
  assert.ok(reply.sent >= fitting - 1 && reply.sent <= fitting, JSON.stringify(reply));
  assert.deepEqual(reply.refused, { quota_exceeded: 100 - reply.sent });
  await waitFor(() => flood.length === reply.sent, 10000, () => `${reply.sent} flood events (got ${flood.length})`);
  assert.deepEqual(flood.map((event) => event.n), [...Array(reply.sent).keys()]);
});

test("a call's state holds at most the plugin's memory_mib until it returns: past it writes and reads are refused, the rest committed", async (t) => {
  const MEMORY_MIB = 8;
  const SIZE = 200_000;
  const small = await startHost({
    plugins: [
      {
        name: "greedy",
        path: wasm("greedy"),
        namespaces: ["/greedy"],
        events: ["fill", "gather"],
        limits: { memory_mib: MEMORY_MIB, max_state_value_bytes: SIZE },
      },
    ],
  });
  t.after(() => small.stop());
  const client = await connect(small.url, { namespace: "/greedy" });
  // 100 keys of 200 KB would hold 20 MB until the call returns.
  const first = await emitAckOk(client, "fill", { prefix: "big", count: 100, size: SIZE });
  const fitting = Math.floor((MEMORY_MIB << 20) / SIZE);
  assert.ok(first.written >= fitting - 1 && first.written <= fitting, JSON.stringify(first));
  assert.deepEqual(first.refused, { quota_exceeded: 100 - first.written });
  // What fitted was committed, and one call can read it back.
  assert.equal(await emitAckOk(client, "gather", { prefix: "big", count: 100 }), first.written);
  // Twice as much, written over two calls, is more than one call may read.
  const second = await emitAckOk(client, "fill", { prefix: "big", from: first.written, count: first.written, size: SIZE });
  assert.deepEqual(second, { written: first.written, refused: {} });
  const error = await emitAckError(client, "gather", { prefix: "big", count: 2 * first.written });
  assert.equal(error.code, "quota_exceeded");
  assert.match(error.message, /more than 8 MiB of state .*memory_mib/);
  assert.equal(await emitAckOk(client, "gather", { prefix: "big", count: first.written }), first.written);
});
