// Hostile clients and a greedy plugin against the per-socket and per-plugin
// limits: a huge handshake `auth`, 10,000 rooms, state over its quotas, an
// event flood, and large events piling up behind a slow call. Each is refused
// with its error code while a well-behaved client beside it is served.

import assert from "node:assert/strict";
import { after, describe, test } from "node:test";

import WebSocket from "ws";

import {
  TIMEOUT_MS,
  chatPlugin,
  closeAllSockets,
  connect,
  disconnected,
  emitAck,
  emitAckError,
  emitAckOk,
  faultyPlugin,
  manifestToml,
  sleep,
  startHost,
  tempDir,
  unique,
  waitFor,
  wasm,
} from "./harness.mjs";
import { startRedis, startRedisCluster } from "./redis.mjs";

const hosts = [];

after(async () => {
  closeAllSockets();
  for (const host of hosts) {
    const { code } = await host.stop();
    assert.equal(code, 0, `host exit code; stderr:\n${host.stderr().slice(-2000)}`);
  }
});

async function start(options) {
  const host = await startHost(options);
  hosts.push(host);
  return host;
}

function greedyPlugin(limits = {}) {
  return {
    name: "greedy",
    path: wasm("greedy"),
    namespaces: ["/greedy"],
    events: ["join_rooms", "leave_room", "store", "push"],
    limits: { time_ms: 60000, ...limits },
  };
}

async function assertEchoWorks(socket, label) {
  const payload = { label, n: Math.random() };
  assert.deepEqual((await emitAckOk(socket, "echo", payload)).echo, payload, `echo on ${label}`);
}

describe("handshake auth", () => {
  test("an auth object over max_auth_bytes is refused before any plugin sees it; a normal client connects beside it", async () => {
    const host = await start({ plugins: [faultyPlugin()] });
    const faulty = (options) => connect(host.url, { namespace: "/faulty", ...options });

    // `deny` makes the plugin refuse: its message would show had the plugin seen the auth.
    const refused = await faulty({ auth: { deny: true, pad: "x".repeat(100_000) } }).then(
      () => assert.fail("a 100 KB auth connected"),
      (error) => error,
    );
    assert.match(refused.message, /^payload_too_large: the handshake `auth` is \d+ bytes; the limit is 8192/);

    // 2 MB: over the transport's own frame limit too, so the connection is closed.
    const [huge, normal] = await Promise.allSettled([
      faulty({ auth: { pad: "x".repeat(2_000_000) }, transports: ["websocket"], timeout: 3000 }),
      faulty({ auth: { pad: "y".repeat(4000) } }),
    ]);
    assert.equal(huge.status, "rejected", "the 2 MB handshake connected");
    assert.equal(normal.status, "fulfilled", `a normal client was refused: ${normal.reason}`);
    await assertEchoWorks(normal.value, "beside a 2 MB handshake");
    const denied = await faulty({ auth: { deny: true } }).then(
      () => assert.fail("the plugin did not see a small auth"),
      (error) => error,
    );
    assert.equal(denied.message, "denied by faulty plugin");
  });
});

describe("rooms per socket", () => {
  test("a socket put in 10,000 rooms gets too_many_rooms after max_rooms_per_socket and the node stays usable", async () => {
    const host = await start({ plugins: [greedyPlugin(), faultyPlugin()] });
    const greedy = await connect(host.url, { namespace: "/greedy" });
    const reply = await emitAckOk(greedy, "join_rooms", { prefix: "room-", count: 10_000 }, { timeout: 60_000 });
    assert.deepEqual(reply, { joined: 128, refused: { too_many_rooms: 10_000 - 128 }, rooms: 128 });

    // Joining a room it is in still works; leaving one makes room for another.
    assert.deepEqual(await emitAckOk(greedy, "join_rooms", { prefix: "room-", count: 1 }), {
      joined: 1,
      refused: {},
      rooms: 128,
    });
    const full = await emitAckOk(greedy, "join_rooms", { prefix: "other-", count: 1 });
    assert.deepEqual(full.refused, { too_many_rooms: 1 });
    await emitAck(greedy, "leave_room", { room: "room-0" });
    assert.deepEqual(await emitAckOk(greedy, "join_rooms", { prefix: "other-", count: 1 }), {
      joined: 1,
      refused: {},
      rooms: 128,
    });

    // The limit is per socket, and other namespaces are served.
    const second = await connect(host.url, { namespace: "/greedy" });
    assert.equal((await emitAckOk(second, "join_rooms", { prefix: "room-", count: 200 })).joined, 128);
    await assertEchoWorks(await connect(host.url, { namespace: "/faulty" }), "beside 10,000 rooms");
  });
});

describe("plugin state quotas", () => {
  const limits = { max_state_value_bytes: 1000, max_state_keys: 5, max_state_list_items: 3 };

  async function checkQuotas(host) {
    const socket = await connect(host.url, { namespace: "/greedy" });
    const store = (key, value) => emitAck(socket, "store", { key, value });

    const tooLarge = await emitAckError(socket, "store", { key: "big", value: "x".repeat(1001) });
    assert.equal(tooLarge.code, "quota_exceeded");
    assert.match(tooLarge.message, /1001 bytes; the limit is 1000 \(plugins\.limits\.max_state_value_bytes\)/);
    assert.equal((await emitAckError(socket, "push", { key: "list", values: ["x".repeat(1001)] })).code, "quota_exceeded");
    assert.equal(await store("big", "x".repeat(1000)), null);

    assert.equal(await emitAckOk(socket, "push", { key: "list", values: ["a", "b", "c"] }), 3);
    const longList = await emitAckError(socket, "push", { key: "list", values: ["d"] });
    assert.equal(longList.code, "quota_exceeded");
    assert.match(longList.message, /max_state_list_items/);

    for (const key of ["k1", "k2", "k3"]) assert.equal(await store(key, "v"), null);
    const tooMany = await emitAckError(socket, "store", { key: "k4", value: "v" });
    assert.equal(tooMany.code, "quota_exceeded");
    assert.match(tooMany.message, /holds 5 state keys, its limit \(plugins\.limits\.max_state_keys\)/);
    assert.equal((await emitAckError(socket, "push", { key: "list2", values: ["a"] })).code, "quota_exceeded");
    // Keys the plugin has can still be written.
    assert.equal(await store("k1", "changed"), null);
  }

  test("in memory: values over max_state_value_bytes and keys over max_state_keys get quota_exceeded", async () => {
    await checkQuotas(await start({ plugins: [greedyPlugin(limits)] }));
  });

  const onRedis = (url) =>
    manifestToml({ plugins: [greedyPlugin(limits)] }) + `\n[cluster]\nredis_url = "${url}"\nprefix = "quotas"\n`;

  test("in Redis: the same quotas, counted across the cluster", async () => {
    const redis = await startRedis();
    try {
      await checkQuotas(await start({ manifest: onRedis(redis.url) }));
    } finally {
      redis.stop();
    }
  });

  test("in a 3-shard Redis Cluster: a plugin's keys and their count share a slot", async () => {
    const cluster = await startRedisCluster({ shards: 3, dir: tempDir() });
    try {
      await checkQuotas(await start({ manifest: onRedis(cluster.url) }));
    } finally {
      await cluster.stop();
    }
  });
});

describe("event rate", () => {
  test("events over the rate get rate_limited; a flood is disconnected with a reason plugins see; a client beside it gets every ack once, in order", async () => {
    const host = await start({
      plugins: [faultyPlugin()],
      namespaces: { "/faulty": { events_per_second: 1, event_burst: 20 } },
    });
    const flood = await connect(host.url, { namespace: "/faulty", transports: ["websocket"] });
    const calm = await connect(host.url, { namespace: "/faulty" });
    const floodId = flood.id;

    // Over the burst: the rest are refused, and the socket stays connected.
    const burst = await Promise.all(Array.from({ length: 25 }, (_, n) => emitAck(flood, "echo", { n })));
    const limited = burst.filter((reply) => reply.error);
    assert.ok(limited.length >= 1, "no event over the burst was refused");
    for (const reply of limited) assert.equal(reply.error.code, "rate_limited");
    assert.ok(flood.connected, "disconnected for a few refusals");

    // Persistently over: disconnected. socketioxide closes the transport when
    // packets keep coming for a namespace socket it disconnected, so either
    // reason may reach the client first.
    const gone = disconnected(flood);
    for (let n = 0; n < 500; n++) flood.emit("echo", { n });
    const calmAcks = [];
    for (let n = 0; n < 15; n++) calm.emit("echo", { n }, (reply) => calmAcks.push(reply));
    assert.match(await gone, /^(io server disconnect|transport close)$/);

    await waitFor(() => calmAcks.length === 15, TIMEOUT_MS, () => `15 acks for the calm client, got ${calmAcks.length}`);
    assert.deepEqual(
      calmAcks.map((reply) => reply.echo),
      Array.from({ length: 15 }, (_, n) => ({ n })),
    );
    // Asked on a socket of its own each time, each with a full burst.
    const reason = async () => {
      const asker = await connect(host.url, { namespace: "/faulty" });
      try {
        return await emitAckOk(asker, "disconnect_reason", { socket_id: floodId });
      } finally {
        asker.close();
      }
    };
    assert.equal(await waitFor(reason), "rate limited");
  });

  test("a client that leaves a namespace and connects again keeps its connection's rate: connects count as events, and one that keeps connecting over it is cut off", async () => {
    const host = await start({
      plugins: [faultyPlugin()],
      namespaces: { "/faulty": { events_per_second: 1, event_burst: 5 } },
    });
    const flood = await reconnectingFlood(host.port, "/faulty", { rounds: 200, perRound: 5 });
    // Each socket had a full burst of its own: 1,000 echoes in well under a second.
    assert.ok(flood.served + flood.connects <= 5 + Math.ceil(flood.seconds), JSON.stringify(flood));
    assert.ok(flood.connectErrors.length >= 1, JSON.stringify(flood));
    for (const message of flood.connectErrors) assert.match(message, /^rate_limited: .*events_per_second/);
    assert.ok(flood.closed, `the connection stayed open: ${JSON.stringify(flood)}`);
    // Another connection has a rate of its own.
    await assertEchoWorks(await connect(host.url, { namespace: "/faulty" }), "another connection");
  });
});

/**
 * Opens a raw WebSocket to `port` and, round after round, connects it to
 * `namespace`, sends `perRound` echoes and leaves: a client bypassing its
 * namespace's rate by reconnecting, as it could while each socket had a rate
 * of its own. Stops when the connection ends or after `rounds`. Resolves to
 * the echoes served, the refusals, the connect errors' messages and the
 * seconds taken.
 */
async function reconnectingFlood(port, namespace, { rounds, perRound }) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/socket.io/?EIO=4&transport=websocket`);
  const outcome = { served: 0, limited: 0, connects: 0, connectErrors: [], closed: false };
  const closed = new Promise((resolve) => ws.on("close", resolve)).then(() => (outcome.closed = true));
  let answered = () => {};
  const answer = () => new Promise((resolve) => (answered = resolve));
  ws.on("message", (data) => {
    const text = String(data);
    if (text === "2") return ws.send("3");
    if (text.startsWith(`40${namespace},`)) outcome.connects += 1;
    else if (text.startsWith(`44${namespace},`)) outcome.connectErrors.push(JSON.parse(text.slice(namespace.length + 3)).message);
    else if (text.startsWith(`43${namespace},`)) text.includes("rate_limited") ? (outcome.limited += 1) : (outcome.served += 1);
    else return;
    answered();
  });
  await new Promise((resolve) => ws.once("open", resolve));
  const started = Date.now();
  for (let round = 0, id = 0; round < rounds && !outcome.closed; round++) {
    let reply = answer();
    ws.send(`40${namespace},`);
    await Promise.race([reply, closed]);
    if (outcome.connects === round + 1 - outcome.connectErrors.length) {
      for (let n = 0; n < perRound && !outcome.closed; n++) {
        reply = answer();
        ws.send(`42${namespace},${++id}["echo",{"n":${n}}]`);
        await Promise.race([reply, closed]);
      }
      ws.send(`41${namespace},`);
    }
  }
  const seconds = (Date.now() - started) / 1000;
  ws.close();
  return { ...outcome, seconds };
}

/** The value of `switchboard_budgets_exhausted_total` for `namespace` (0 before any). */
async function exhausted(host, namespace) {
  const body = await (await fetch(`${host.url}/metrics`)).text();
  const line = body.split("\n").find((text) => text.startsWith(`switchboard_budgets_exhausted_total{namespace="${namespace}"}`));
  return line ? Number(line.split(" ").pop()) : 0;
}

/**
 * Sends `echo` from `slowed` (over its budget) then from `beside`: resolves
 * to the order their acks came in, after checking each echoed its data.
 */
async function ackOrder(slowed, beside) {
  const order = [];
  const echoed = (socket, name, data) =>
    emitAckOk(socket, "echo", data, { timeout: 10_000 }).then((reply) => {
      assert.deepEqual(reply.echo, data);
      order.push(name);
    });
  await Promise.all([echoed(slowed, "slowed", { n: 1 }), echoed(beside, "beside", { n: 2 })]);
  return order;
}

describe("event cost", () => {
  test("a socket whose events sent more than output_bytes_per_second has its next event wait for the refill; others do not", async () => {
    const host = await start({
      plugins: [faultyPlugin()],
      namespaces: { "/faulty": { output_bytes_per_second: 1000, output_burst_bytes: 3000 } },
    });
    const [big, beside] = await Promise.all([1, 2].map(() => connect(host.url, { namespace: "/faulty" })));
    const large = "x".repeat(2000);
    // Each reply carries the 2 KB back: the first leaves ~950 bytes, the second goes ~1100 below zero.
    assert.equal((await emitAckOk(big, "echo", { large })).echo.large, large);
    assert.equal(await exhausted(host, "/faulty"), 0);
    assert.equal((await emitAckOk(big, "echo", { large })).echo.large, large);
    // Its next echo waits about a second; one sent after it from another socket is answered first.
    assert.deepEqual(await ackOrder(big, beside), ["beside", "slowed"]);
    assert.ok((await exhausted(host, "/faulty")) >= 1);
  });

  test("a socket whose events took more than plugin_ms_per_second of plugin time has its next event wait, its failures counted", async () => {
    const host = await start({
      plugins: [faultyPlugin({ limits: { time_ms: 300 } })],
      namespaces: { "/faulty": { plugin_ms_per_second: 100, plugin_burst_ms: 400 } },
    });
    const [spinner, beside] = await Promise.all([1, 2].map(() => connect(host.url, { namespace: "/faulty" })));
    assert.equal((await emitAckError(spinner, "spin", null)).code, "plugin_timeout");
    // ~100 ms left: the next event is not held.
    assert.deepEqual((await emitAckOk(spinner, "echo", { n: 0 })).echo, { n: 0 });
    assert.equal(await exhausted(host, "/faulty"), 0);
    // A second timeout puts it ~200 ms in debt: two seconds at 100 ms a second.
    assert.equal((await emitAckError(spinner, "spin", null)).code, "plugin_timeout");
    assert.deepEqual(await ackOrder(spinner, beside), ["beside", "slowed"]);
    assert.ok((await exhausted(host, "/faulty")) >= 1);
  });
});

describe("inbound queue", () => {
  test("large events behind a slow call are refused with overloaded once max_queued_bytes_per_socket is reached", async () => {
    const host = await start({
      plugins: [faultyPlugin({ limits: { time_ms: 3000 } })],
      server: { max_queued_bytes_per_socket: 3_000_000 },
    });
    const socket = await connect(host.url, { namespace: "/faulty", transports: ["websocket"] });
    const beside = await connect(host.url, { namespace: "/faulty" });
    const spun = emitAck(socket, "spin", null, { timeout: 10_000 });
    const large = "x".repeat(600_000);
    const replies = await Promise.all(
      Array.from({ length: 10 }, (_, n) => emitAck(socket, "echo", { n, large }, { timeout: 10_000 })),
    );
    await assertEchoWorks(beside, "beside a full queue");
    assert.equal((await spun).error.code, "plugin_timeout");

    const overloaded = replies.filter((reply) => reply.error);
    for (const reply of overloaded) {
      assert.equal(reply.error.code, "overloaded");
      assert.match(reply.error.message, /3000000 bytes \(server\.max_queued_bytes_per_socket\)/);
    }
    // The first events fit in the queue, in order; the rest were refused.
    const handled = replies.filter((reply) => !reply.error).map((reply) => reply.echo.n);
    assert.deepEqual(handled, Array.from({ length: handled.length }, (_, n) => n));
    assert.ok(handled.length >= 1 && handled.length <= 5, `handled ${handled.length} of 10`);
    assert.equal(overloaded.length, 10 - handled.length);
  });
});

describe("seed plugins", () => {
  test("chat remembers at most max_saved_rooms per user, and forgets them and a room's history after their TTLs", async () => {
    const ttlMs = 300;
    const host = await start({
      plugins: [chatPlugin({ config: { max_saved_rooms: 2, saved_rooms_ttl_ms: ttlMs, history_ttl_ms: ttlMs } })],
    });
    const user = unique("ada");
    const [first, second, third] = [unique("first"), unique("second"), unique("third")];
    const ada = await connect(host.url, { auth: { user } });
    await emitAckOk(ada, "join", { room: first });
    await emitAckOk(ada, "join", { room: second });
    const refused = await emitAckError(ada, "join", { room: third });
    assert.equal(refused.code, "too_many_rooms");
    await emitAckOk(ada, "send_message", { room: first, text: "kept for a while" });
    ada.close();

    // Past both TTLs with nobody active: a new member sees no history, and
    // the user reconnects to no room.
    await sleep(ttlMs * 2);
    const bob = await connect(host.url, { auth: { user: unique("bob") } });
    assert.deepEqual((await emitAckOk(bob, "join", { room: first })).history, []);
    const back = await connect(host.url, { auth: { user } });
    const notMember = await emitAckError(back, "send_message", { room: second, text: "still here?" });
    assert.equal(notMember.code, "not_in_room");
    // And it may join rooms again, up to the cap.
    await emitAckOk(back, "join", { room: third });
  });
});
