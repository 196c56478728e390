// Several real switchboard nodes sharing one real redis-server: fanout, room
// membership and the HTTP API work whichever node a client or caller is on.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { after, before, describe, test } from "node:test";

import {
  chatPlugin,
  closeAllSockets,
  collect,
  connect,
  disconnected,
  emitAck,
  emitAckOk,
  faultyPlugin,
  logged,
  manifestToml,
  quiet,
  runSwitchboard,
  sleep,
  spawnServe,
  startHost,
  tempDir,
  unique,
  waitFor,
  writeManifest,
} from "./harness.mjs";
import { SHORT_RECOVERY } from "./apps.mjs";
import { freePort, makeCertificates, startRedis, startRedisCluster } from "./redis.mjs";

const TOKEN = "cluster-test-token";

function clusterManifest(redisUrl, { prefix = "e2e", fallback = "wait", caFile, server = {} } = {}) {
  return (
    manifestToml({ server, plugins: [chatPlugin(), faultyPlugin()] }) +
    `\n[cluster]\nredis_url = "${redisUrl}"\nprefix = "${prefix}"\nrequest_timeout_ms = 500\nfallback = "${fallback}"\n` +
    (caFile ? `ca_file = "${caFile}"\n` : "") +
    `\n[api]\ntoken = "${TOKEN}"\n`
  );
}

/**
 * Two nodes on `manifest`: a room message from node A reaches node B, 200
 * increments from both total 200, and a timer fires once.
 */
async function checkTwoNodes(manifest) {
  const [nodeA, nodeB] = await Promise.all([startHost({ manifest }), startHost({ manifest })]);
  try {
    const ada = await connect(nodeA.url, { auth: { user: "ada" } });
    const bob = await connect(nodeB.url, { auth: { user: "bob" } });
    await emitAckOk(ada, "join", { room: "shared" });
    assert.equal((await emitAckOk(bob, "join", { room: "shared" })).members, 2);
    const atBob = collect(bob, "message");
    await emitAckOk(ada, "send_message", { room: "shared", text: "across" });
    await waitFor(() => atBob.length === 1, 5000, "the message on node B");
    const counters = await Promise.all(
      [nodeA, nodeB].map((node) => connect(node.url, { namespace: "/faulty" })),
    );
    const values = await Promise.all(
      counters.flatMap((socket) => Array.from({ length: 100 }, () => emitAckOk(socket, "count", null))),
    );
    assert.equal(Math.max(...values), 200);
    assert.equal(new Set(values).size, 200);
    // A timer scheduled on node A is kept in this Redis and fires once, on either node.
    const fired = collect(counters[0], "timer");
    await emitAckOk(counters[0], "schedule", { key: "two-nodes", delay_ms: 50, payload: "due" });
    await waitFor(() => fired.length === 1, 5000, "the timer");
    await quiet(200);
    assert.deepEqual(fired, [{ key: "two-nodes", payload: "due" }]);
  } finally {
    closeAllSockets();
    await Promise.all([nodeA.stop(), nodeB.stop()]);
  }
}

/** The URL a node spawned with `spawnServe` prints once it is ready. */
async function readyUrl(node) {
  const ready = await waitFor(() => node.stdout().match(/listening on (http:\/\/[\d.:]+)/), 20000, "the ready line");
  return ready[1];
}

async function api(node, method, path, body, token = TOKEN) {
  const response = await fetch(`${node.url}${path}`, {
    method,
    headers: {
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      ...(body !== undefined ? { "content-type": "application/json" } : {}),
    },
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : undefined };
}

describe("two nodes sharing Redis", () => {
  let redis;
  let nodeA;
  let nodeB;

  before(async () => {
    redis = await startRedis();
    const manifest = clusterManifest(redis.url);
    [nodeA, nodeB] = await Promise.all([startHost({ manifest }), startHost({ manifest })]);
  });

  after(async () => {
    closeAllSockets();
    await Promise.all([nodeA?.stop(), nodeB?.stop()]);
    await redis?.stop();
  });

  test("GET /api/v1/nodes on either node lists both, with their sockets and plugin versions", async () => {
    const plugins = (await api(nodeA, "GET", "/api/v1/plugins")).body.plugins;
    const versions = Object.fromEntries(plugins.map((plugin) => [plugin.name, plugin.version]));
    const socket = await connect(nodeB.url, { auth: { user: unique("counted") } });
    try {
      // Reports go out with each heartbeat (every second).
      const listed = await waitFor(async () => {
        const { status, body } = await api(nodeA, "GET", "/api/v1/nodes");
        assert.equal(status, 200);
        return body.nodes.length === 2 && body.nodes.some((node) => node.sockets >= 1) && body.nodes;
      }, 5000, "both nodes, one with a socket, in /api/v1/nodes");
      for (const node of listed) {
        assert.deepEqual(node.plugins, versions, "every node runs the same plugin versions");
        assert.equal(typeof node.id, "string");
        assert.ok(node.beat_at_ms >= node.started_at_ms);
      }
      assert.deepEqual((await api(nodeB, "GET", "/api/v1/nodes")).body.nodes.map((node) => node.id).sort(),
        listed.map((node) => node.id).sort());
      assert.equal((await api(nodeA, "GET", "/api/v1/nodes", undefined, null)).status, 401);
    } finally {
      socket.close();
    }
  });

  test("a room broadcast reaches members on both nodes exactly once, in order", async () => {
    const ada = await connect(nodeA.url, { auth: { user: "ada" } });
    const bob = await connect(nodeB.url, { auth: { user: "bob" } });
    const outsider = await connect(nodeB.url, { auth: { user: "eve" } });
    await emitAckOk(ada, "join", { room: "across" });
    const joined = await emitAckOk(bob, "join", { room: "across" });
    assert.equal(joined.members, 2, "the join ack counts the member on the other node");

    const atAda = collect(ada, "message");
    const atBob = collect(bob, "message");
    const atOutsider = collect(outsider, "message");
    const texts = Array.from({ length: 20 }, (_, index) => `from ada ${index}`);
    for (const text of texts) await emitAckOk(ada, "send_message", { room: "across", text });
    await emitAckOk(bob, "send_message", { room: "across", text: "from bob" });

    const expected = [...texts, "from bob"];
    await waitFor(() => atAda.length >= expected.length && atBob.length >= expected.length, 5000, () =>
      `21 messages on both nodes (ada ${atAda.length}, bob ${atBob.length})`,
    );
    await quiet();
    assert.deepEqual(atAda.map((message) => message.text), expected);
    assert.deepEqual(atBob.map((message) => message.text), expected);
    assert.equal(atOutsider.length, 0);
  });

  test("room size and members count sockets on every node", async () => {
    const sockets = await Promise.all([
      connect(nodeA.url, { auth: { user: "r1" } }),
      connect(nodeA.url, { auth: { user: "r2" } }),
      connect(nodeB.url, { auth: { user: "r3" } }),
    ]);
    for (const socket of sockets) await emitAckOk(socket, "join", { room: "counted" });
    for (const node of [nodeA, nodeB]) {
      const { status, body } = await api(node, "GET", "/api/v1/namespaces/%2F/rooms/counted");
      assert.equal(status, 200);
      assert.equal(body.size, 3);
      assert.deepEqual([...body.members].sort(), sockets.map((socket) => socket.id).sort());
    }
    sockets[2].close();
    await waitFor(async () => (await api(nodeA, "GET", "/api/v1/namespaces/%2F/rooms/counted")).body.size === 2, 5000,
      "the departed socket on node B to leave the count on node A");
  });

  test("rooms one user joins and leaves concurrently on both nodes are all remembered on reconnect", async () => {
    const user = unique("carl");
    const rooms = Array.from({ length: 20 }, (_, n) => unique(`remembered-${n}`));
    const sockets = [
      await connect(nodeA.url, { auth: { user } }),
      await connect(nodeB.url, { auth: { user } }),
    ];
    // The two sockets' joins race each other, then their leaves do.
    await Promise.all(rooms.map((room, n) => emitAckOk(sockets[n % 2], "join", { room })));
    const left = rooms.filter((_, n) => n % 5 === 0);
    await Promise.all(left.map((room, n) => emitAckOk(sockets[n % 2], "leave", { room })));
    for (const socket of sockets) socket.close();

    const again = await connect(nodeA.url, { auth: { user } });
    const replies = await Promise.all(rooms.map((room) => emitAck(again, "send_message", { room, text: "back" })));
    const rejoined = rooms.filter((_, n) => replies[n]?.error?.code !== "not_in_room");
    assert.deepEqual(rejoined, rooms.filter((room) => !left.includes(room)), JSON.stringify(replies));
  });

  test("an HTTP emit on node B reaches a client on node A", async () => {
    const listener = await connect(nodeA.url, { auth: { user: "listener" } });
    await emitAckOk(listener, "join", { room: "news" });
    const received = collect(listener, "headline");
    const { status } = await api(nodeB, "POST", "/api/v1/emit", {
      namespace: "/",
      to: { room: "news" },
      event: "headline",
      data: { title: "cluster works", n: 1 },
    });
    assert.equal(status, 202);
    await waitFor(() => received.length === 1, 5000, "the headline on node A");
    const direct = collect(listener, "direct");
    await api(nodeB, "POST", "/api/v1/emit", { namespace: "/", to: { socket: listener.id }, event: "direct", data: 7 });
    await waitFor(() => direct.length === 1, 5000, "the emit to one socket id");
    await quiet();
    assert.deepEqual(received, [{ title: "cluster works", n: 1 }]);
    assert.deepEqual(direct, [7]);
  });

  test("the HTTP API answers bad requests with clear JSON errors", async () => {
    const emit = { namespace: "/", to: { room: "x" }, event: "e", data: null };
    const wrongToken = await api(nodeA, "POST", "/api/v1/emit", emit, "nope");
    assert.equal(wrongToken.status, 401);
    assert.equal(wrongToken.body.error.code, "bad_token");
    const noToken = await api(nodeA, "POST", "/api/v1/emit", emit, null);
    assert.equal(noToken.status, 401);
    assert.equal(noToken.body.error.code, "missing_token");
    const badBody = await api(nodeA, "POST", "/api/v1/emit", "{not json");
    assert.equal(badBody.status, 400);
    assert.equal(badBody.body.error.code, "bad_request");
    const missingField = await api(nodeA, "POST", "/api/v1/emit", { namespace: "/", event: "e", data: 1 });
    assert.equal(missingField.status, 422);
    assert.match(missingField.body.error.message, /missing field `to`/);
    const unknownNamespace = await api(nodeA, "POST", "/api/v1/emit", { ...emit, namespace: "/nowhere" });
    assert.equal(unknownNamespace.status, 404);
    assert.equal(unknownNamespace.body.error.code, "unknown_namespace");
    const reserved = await api(nodeA, "POST", "/api/v1/emit", { ...emit, event: "connect" });
    assert.equal(reserved.status, 400);
  });

  test("1,000 increments from each node total 2,000, each value handed out once", async () => {
    const socketsPerNode = 10;
    const perSocket = 100;
    const sockets = await Promise.all(
      [nodeA, nodeB].flatMap((node) =>
        Array.from({ length: socketsPerNode }, () => connect(node.url, { namespace: "/faulty" })),
      ),
    );
    const values = (
      await Promise.all(
        sockets.flatMap((socket) =>
          Array.from({ length: perSocket }, () => emitAckOk(socket, "count", null, { timeout: 20000 })),
        ),
      )
    ).sort((a, b) => a - b);
    assert.equal(values.length, 2000);
    assert.deepEqual(values, Array.from({ length: 2000 }, (_, index) => index + 1));
  });

  test("a compare-and-swap race across nodes has exactly one winner", async () => {
    const sockets = await Promise.all(
      [nodeA, nodeB].flatMap((node) => Array.from({ length: 10 }, () => connect(node.url, { namespace: "/faulty" }))),
    );
    for (const key of ["prize-1", "prize-2", "prize-3"]) {
      const replies = await Promise.all(sockets.map((socket) => emitAckOk(socket, "claim", { key })));
      assert.equal(replies.filter((reply) => reply.won).length, 1, `one winner for ${key}`);
    }
  });

  test("both nodes are ready", async () => {
    for (const node of [nodeA, nodeB]) {
      const response = await fetch(`${node.url}/readyz`);
      assert.equal(response.status, 200);
    }
  });
});

test("a journal read that finds nothing new is not a failure, so an idle node does not back off its delivery", async (t) => {
  const redis = await startRedis();
  const node = await startHost({
    manifest: clusterManifest(redis.url),
    env: { RUST_LOG: "info,switchboard::recovery::stream=debug" },
  });
  t.after(async () => {
    closeAllSockets();
    await node.stop();
    await redis.stop();
  });
  const ada = await connect(node.url, { auth: { user: "ada" } });
  await emitAckOk(ada, "join", { room: "idle" });
  const received = collect(ada, "message");
  // Several blocking reads of the journal time out with nothing to read.
  await sleep(1200);
  await emitAckOk(ada, "send_message", { room: "idle", text: "after a quiet second" });
  await waitFor(() => received.length === 1, 10000, "the message");
  assert.equal(received[0].text, "after a quiet second");
  assert.doesNotMatch(node.stderr(), /cannot read the cluster's journal/);
});

test("two clusters sharing one Redis stay apart by prefix; SWITCHBOARD_REDIS_URL overrides the manifest", async (t) => {
  const redis = await startRedis();
  const unused = `redis://127.0.0.1:${await freePort()}`;
  const [blue, green] = await Promise.all([
    startHost({ manifest: clusterManifest(unused, { prefix: "blue" }), env: { SWITCHBOARD_REDIS_URL: redis.url } }),
    startHost({ manifest: clusterManifest(redis.url, { prefix: "green" }) }),
  ]);
  t.after(async () => {
    closeAllSockets();
    await Promise.all([blue.stop(), green.stop()]);
    await redis.stop();
  });
  const onBlue = await connect(blue.url, { auth: { user: "bea" } });
  const onGreen = await connect(green.url, { auth: { user: "gus" } });
  const [atBlue, atGreen] = [collect(onBlue, "message"), collect(onGreen, "message")];
  await emitAckOk(onBlue, "join", { room: "same-name" });
  assert.equal((await emitAckOk(onBlue, "send_message", { room: "same-name", text: "blue" })).id, 1);
  // Same room name, same Redis: green sees neither blue's member, nor its history, nor its counter.
  assert.deepEqual(await emitAckOk(onGreen, "join", { room: "same-name" }), { room: "same-name", history: [], members: 1 });
  assert.equal((await emitAckOk(onGreen, "send_message", { room: "same-name", text: "green" })).id, 1);
  await quiet(300);
  assert.deepEqual(atBlue.map((message) => message.text), ["blue"]);
  assert.deepEqual(atGreen.map((message) => message.text), ["green"]);
  const room = await api(blue, "GET", "/api/v1/namespaces/%2F/rooms/same-name");
  assert.deepEqual(room.body.members, [onBlue.id]);
});

test("SWITCHBOARD_REDIS_URL alone, with no [cluster] table, joins the nodes into a cluster", async (t) => {
  const redis = await startRedis();
  const env = { SWITCHBOARD_REDIS_URL: redis.url };
  const [nodeA, nodeB] = await Promise.all([startHost({ env }), startHost({ env })]);
  t.after(async () => {
    closeAllSockets();
    await Promise.all([nodeA.stop(), nodeB.stop()]);
    await redis.stop();
  });
  const onA = await connect(nodeA.url, { auth: { user: "ana" } });
  const onB = await connect(nodeB.url, { auth: { user: "ben" } });
  const atB = collect(onB, "message");
  await emitAckOk(onA, "join", { room: "env-only" });
  assert.equal((await emitAckOk(onB, "join", { room: "env-only" })).members, 2);
  await emitAckOk(onA, "send_message", { room: "env-only", text: "across" });
  await waitFor(() => atB.length === 1, 5000, "the message on the other node");
  assert.equal(atB[0].text, "across");
});

describe("presence across nodes", () => {
  test("a user is online while any of its sockets is, and a killed node's users go offline", async () => {
    const redis = await startRedis();
    const manifest = clusterManifest(redis.url, { server: SHORT_RECOVERY });
    const [nodeA, nodeB, nodeC] = await Promise.all([startHost({ manifest }), startHost({ manifest }), startHost({ manifest })]);
    try {
      const bob = await connect(nodeB.url, { auth: { user: "bob" } });
      await emitAckOk(bob, "join", { room: "pair" });
      const online = collect(bob, "user_online");
      const offline = collect(bob, "user_offline");

      const adaOnA = await connect(nodeA.url, { auth: { user: "ada" } });
      await emitAckOk(adaOnA, "join", { room: "pair" });
      // Ada's second socket, on another node, is put back in her rooms and announces nothing.
      const adaOnC = await connect(nodeC.url, { auth: { user: "ada" } });
      await waitFor(async () => (await api(nodeB, "GET", "/api/v1/namespaces/%2F/rooms/pair")).body.size === 3, 5000,
        "ada's second socket to rejoin the room");
      adaOnC.close();
      await waitFor(async () => (await api(nodeB, "GET", "/api/v1/namespaces/%2F/rooms/pair")).body.size === 2, 5000,
        "ada's second socket to leave");
      await quiet();
      assert.deepEqual(offline, [], "ada still has a socket, on node A");

      nodeA.child.kill("SIGKILL");
      await waitFor(() => offline.length === 1, 15000, "user_offline for ada after node A was killed");
      assert.deepEqual(offline, [{ user: "ada" }]);
      assert.deepEqual(online, [], "ada's first socket joined the room after bob; nothing came online while bob watched");
      await quiet(500);
      assert.equal(offline.length, 1, "the dead node's sockets are cleaned up once");
    } finally {
      closeAllSockets();
      await Promise.all([nodeA.stop(), nodeB.stop(), nodeC.stop()]);
      await redis.stop();
    }
  });

  test("a node stopped with SIGTERM leaves its users' sessions for them to recover; not back in time, they go offline, once", async () => {
    const redis = await startRedis();
    const manifest = clusterManifest(redis.url, { server: SHORT_RECOVERY });
    const [nodeA, nodeB] = await Promise.all([startHost({ manifest }), startHost({ manifest })]);
    try {
      const bob = await connect(nodeB.url, { auth: { user: "bob" } });
      await emitAckOk(bob, "join", { room: "redeploy" });
      const offline = collect(bob, "user_offline");
      const ada = await connect(nodeA.url, { auth: { user: "ada" } });
      await emitAckOk(ada, "join", { room: "redeploy" });
      const adaGone = disconnected(ada);
      const { code } = await nodeA.stop();
      assert.equal(code, 0, nodeA.stderr());
      assert.equal(await adaGone, "transport close", "the transport is closed, so a client reconnects");
      await waitFor(() => offline.length >= 1, 5000, "user_offline for ada, once her session's window is over");
      // Node A handed its sockets' sessions over itself: node B finds it gone with nothing left to clean up.
      await waitFor(() => /node left the cluster/.test(nodeB.stderr()), 5000, "node B to see node A leave");
      assert.doesNotMatch(nodeB.stderr(), /node stopped beating/);
      // Ada was counted down once: back (on node B) and gone again, she goes offline once more.
      const adaAgain = await connect(nodeB.url, { auth: { user: "ada" } });
      adaAgain.close();
      await waitFor(() => offline.length >= 2, 5000, "user_offline after ada's second visit");
      await quiet(300);
      assert.deepEqual(offline, [{ user: "ada" }, { user: "ada" }]);
    } finally {
      closeAllSockets();
      await Promise.all([nodeA.stop(), nodeB.stop()]);
      await redis.stop();
    }
  });
});

test("the last node stopped with SIGTERM ends its sockets' sessions itself: no node is left to recover them", async () => {
  const redis = await startRedis();
  const manifest = clusterManifest(redis.url, { prefix: unique("last") });
  const only = await startHost({ manifest });
  let next;
  try {
    const socket = await connect(only.url, { namespace: "/faulty" });
    const id = socket.id;
    assert.equal((await only.stop()).code, 0, only.stderr());
    next = await startHost({ manifest });
    const asker = await connect(next.url, { namespace: "/faulty" });
    assert.equal(await emitAckOk(asker, "disconnect_reason", { socket_id: id }), "server shutting down");
  } finally {
    closeAllSockets();
    await Promise.all([only.stop(), next?.stop()]);
    await redis.stop();
  }
});

describe("Redis restarting mid-traffic", () => {
  test("emits during the outage wait in the outbox and reach every node once, in order, when Redis is back", async () => {
    const redis = await startRedis();
    const manifest = clusterManifest(redis.url);
    const [nodeA, nodeB] = await Promise.all([startHost({ manifest }), startHost({ manifest })]);
    let restarted;
    try {
      const atA = await connect(nodeA.url, { auth: { user: "outage-a" } });
      const atB = await connect(nodeB.url, { auth: { user: "outage-b" } });
      await emitAckOk(atA, "join", { room: "outage" });
      await emitAckOk(atB, "join", { room: "outage" });
      const receivedA = collect(atA, "notice");
      const receivedB = collect(atB, "notice");
      const notice = (node, n) =>
        api(node, "POST", "/api/v1/emit", { namespace: "/", to: { room: "outage" }, event: "notice", data: { n } });

      await redis.stop();
      await waitFor(async () => (await fetch(`${nodeA.url}/readyz`)).status === 503, 10000, "node A to report not ready");
      for (const n of [1, 2, 3]) {
        assert.equal((await notice(nodeA, n)).status, 202, "an emit during the outage is accepted");
      }
      await quiet(300);
      assert.deepEqual(receivedA, [], "kept in the outbox, not delivered out of the journal's order");
      assert.ok(atA.connected && atB.connected, "no client was disconnected by the outage");
      // A plugin call that needs state is answered with why, and leaves nothing.
      const refused = await emitAck(atA, "send_message", { room: "outage", text: "during" });
      assert.equal(refused?.error?.code, "state_unavailable", JSON.stringify(refused));

      restarted = await startRedis({ port: redis.port });
      await waitFor(
        async () => (await fetch(`${nodeA.url}/readyz`)).status === 200 && (await fetch(`${nodeB.url}/readyz`)).status === 200,
        20000,
        "both nodes to reconnect to Redis",
      );
      const outage = (received) => received.filter((entry) => entry.n < 100).map((entry) => entry.n);
      await waitFor(() => outage(receivedA).length === 3 && outage(receivedB).length === 3, 10000,
        "the emits kept during the outage on both nodes");
      // Resubscription completes shortly after the reconnection: probe until
      // an emit from B reaches A, then check one more arrives exactly once.
      let probe = 100;
      await waitFor(async () => {
        await notice(nodeB, ++probe);
        await new Promise((resolve) => setTimeout(resolve, 200));
        return receivedA.some((entry) => entry.n > 100);
      }, 20000, "an emit on node B to reach node A after the restart");
      await notice(nodeB, 1000);
      await waitFor(() => receivedA.some((entry) => entry.n === 1000) && receivedB.some((entry) => entry.n === 1000), 5000,
        "the final notice on both nodes");
      await quiet();
      assert.equal(receivedA.filter((entry) => entry.n === 1000).length, 1);
      assert.equal(receivedB.filter((entry) => entry.n === 1000).length, 1);
      assert.deepEqual(outage(receivedA), [1, 2, 3], "node A: the outage's emits once, in order");
      assert.deepEqual(outage(receivedB), [1, 2, 3], "node B: the outage's emits once, in order");
    } finally {
      closeAllSockets();
      await Promise.all([nodeA.stop(), nodeB.stop()]);
      await restarted?.stop();
    }
  });
});

describe("a journal reset under the nodes", () => {
  test("entries appended after Redis came back empty with ids below what the nodes read are still delivered", async () => {
    const redis = await startRedis();
    const prefix = unique("reset");
    const manifest = clusterManifest(redis.url, { prefix });
    const [nodeA, nodeB] = await Promise.all([startHost({ manifest }), startHost({ manifest })]);
    let restarted;
    try {
      const atA = await connect(nodeA.url, { auth: { user: "reset-a" } });
      const atB = await connect(nodeB.url, { auth: { user: "reset-b" } });
      await emitAckOk(atA, "join", { room: "reset" });
      await emitAckOk(atB, "join", { room: "reset" });
      const receivedA = collect(atA, "notice");
      const receivedB = collect(atB, "notice");
      // An entry far in the future: both nodes read (and skip) it, so their
      // position is ahead of any id a restarted Redis gives next, as after a
      // restart on a clock behind the old one.
      const future = spawnSync("redis-cli", ["-p", String(redis.port), "XADD", `${prefix}:journal`, "99999999999999-0", "x", "y"], { encoding: "utf8" });
      assert.equal(future.status, 0, future.stderr);
      await quiet(500);
      await redis.stop();
      restarted = await startRedis({ port: redis.port });
      await waitFor(
        async () => (await fetch(`${nodeA.url}/readyz`)).status === 200 && (await fetch(`${nodeB.url}/readyz`)).status === 200,
        20000,
        "both nodes to reconnect to Redis",
      );
      const notice = await api(nodeA, "POST", "/api/v1/emit", { namespace: "/", to: { room: "reset" }, event: "notice", data: { n: 1 } });
      assert.equal(notice.status, 202);
      await waitFor(() => receivedA.length === 1 && receivedB.length === 1, 10000, "the notice on both nodes");
      await quiet();
      assert.deepEqual([receivedA, receivedB], [[{ n: 1 }], [{ n: 1 }]]);
      await logged(nodeA, /journal was reset/);
    } finally {
      closeAllSockets();
      await Promise.all([nodeA.stop(), nodeB.stop()]);
      await restarted?.stop();
    }
  });
});

describe("other Redis deployments", () => {
  test("rediss:// to a TLS redis-server with the CA from ca_file", async () => {
    const dir = tempDir();
    const { ca, cert, key } = makeCertificates(dir);
    const tlsPort = await freePort();
    const redis = await startRedis({
      args: ["--tls-port", String(tlsPort), "--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", ca, "--tls-auth-clients", "no"],
    });
    try {
      await checkTwoNodes(clusterManifest(`rediss://127.0.0.1:${tlsPort}`, { caFile: ca }));
    } finally {
      await redis.stop();
    }
  });

  test("Valkey, addressed as valkey://", async () => {
    const valkey = await startRedis({ binary: "valkey-server" });
    try {
      await checkTwoNodes(clusterManifest(`valkey://127.0.0.1:${valkey.port}`));
    } finally {
      await valkey.stop();
    }
  });

  test("a 3-shard Redis Cluster, with sharded pub/sub", async () => {
    const cluster = await startRedisCluster({ shards: 3, dir: tempDir() });
    try {
      await checkTwoNodes(clusterManifest(cluster.url));
    } finally {
      await cluster.stop();
    }
  });
});

describe("Redis problems", () => {
  test("check shows the cluster's Redis URL without its password", async () => {
    const manifest = writeManifest(clusterManifest("redis://app:hunter2@127.0.0.1:6379"));
    const result = await runSwitchboard(["check", manifest]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /cluster redis:\/\/app:\*\*\*\*@127\.0\.0\.1:6379 \(prefix e2e\)/);
    assert.doesNotMatch(result.stdout + result.stderr, /hunter2/);
  });

  test("a wrong password stops the node with a clear error that hides the password", async () => {
    const redis = await startRedis({ args: ["--requirepass", "right-password"] });
    try {
      const manifest = writeManifest(clusterManifest(`redis://:wrong-password@127.0.0.1:${redis.port}`));
      const result = await runSwitchboard(["serve", "--manifest", manifest, "--listen", "127.0.0.1:0"], { timeout: 15000 });
      assert.notEqual(result.code, 0);
      assert.match(result.stderr, /refused the credentials/);
      assert.match(result.stderr, /redis:\/\/:\*\*\*\*@127\.0\.0\.1/);
      assert.doesNotMatch(result.stderr + result.stdout, /wrong-password/);
    } finally {
      await redis.stop();
    }
  });

  test('with fallback = "local", an unreachable Redis leaves the node running alone in memory', async () => {
    const port = await freePort();
    const host = await startHost({ manifest: clusterManifest(`redis://:secret-pw@127.0.0.1:${port}`, { fallback: "local" }) });
    try {
      await logged(host, /running this node alone, in memory/);
      assert.doesNotMatch(host.stderr(), /secret-pw/);
      const client = await connect(host.url, { auth: { user: "alone" } });
      const ack = await emitAckOk(client, "join", { room: "solo" });
      assert.equal(ack.members, 1);
      assert.equal((await fetch(`${host.url}/readyz`)).status, 200);
      client.close();
    } finally {
      await host.stop();
    }
  });

  test("while it waits for Redis, the node answers /healthz 200 and /readyz 503", async () => {
    const [port, redisPort] = [await freePort(), await freePort()];
    const manifest = writeManifest(clusterManifest(`redis://127.0.0.1:${redisPort}`));
    const { child } = spawnServe(manifest, { listen: `127.0.0.1:${port}` });
    try {
      const url = `http://127.0.0.1:${port}`;
      const status = async (path) => {
        try {
          return (await fetch(`${url}${path}`)).status;
        } catch {
          return 0; // not listening yet
        }
      };
      await waitFor(async () => (await status("/healthz")) === 200, 10000, "the node to answer /healthz while starting");
      assert.equal(await status("/readyz"), 503);
      const redis = await startRedis({ port: redisPort });
      try {
        await waitFor(async () => (await status("/readyz")) === 200, 15000, "the node to become ready once Redis is up");
      } finally {
        child.kill("SIGTERM");
        await redis.stop();
      }
    } finally {
      child.kill("SIGKILL");
    }
  });

  test("an unreachable Redis is retried, logged without the password, and used once it is up", async () => {
    const port = await freePort();
    const node = spawnServe(writeManifest(clusterManifest(`redis://:secret-pw@127.0.0.1:${port}`)));
    let redis;
    try {
      // Bring Redis up only once the node has said why it waits.
      await waitFor(() => /cannot reach Redis/.test(node.stderr()), 15000, "the node to log that Redis is unreachable");
      assert.match(node.stderr(), /redis:\/\/:\*\*\*\*@127\.0\.0\.1/);
      assert.equal(node.stdout(), "", "not ready while Redis is unreachable");
      redis = await startRedis({ port, args: ["--requirepass", "secret-pw"] });
      const url = await readyUrl(node);
      assert.doesNotMatch(node.stderr(), /secret-pw/);
      const client = await connect(url, { auth: { user: "late" } });
      const ack = await emitAckOk(client, "join", { room: "late" });
      assert.equal(ack.members, 1);
      client.close();
    } finally {
      node.child.kill("SIGKILL");
      await redis?.stop();
    }
  });

  test("a subscription Redis refuses at start is retried until it is allowed, then the node serves", async () => {
    const redis = await startRedis();
    const acl = (...rules) => {
      const result = spawnSync("redis-cli", ["-p", String(redis.port), "ACL", "SETUSER", "app", ...rules], { encoding: "utf8" });
      assert.equal(result.stdout.trim(), "OK", result.stderr);
    };
    acl("on", ">app-pw", "~*", "&*", "+@all", "-ssubscribe");
    const node = spawnServe(writeManifest(clusterManifest(`redis://app:app-pw@127.0.0.1:${redis.port}`)));
    try {
      await waitFor(() => /cannot subscribe to the namespace's Redis channels/.test(node.stderr()), 15000, "the node to log the refused subscription");
      assert.equal(node.stdout(), "", "not ready without its subscriptions");
      acl("+ssubscribe");
      const client = await connect(await readyUrl(node), { auth: { user: "allowed" } });
      assert.equal((await emitAckOk(client, "join", { room: "allowed" })).members, 1);
      client.close();
      assert.doesNotMatch(node.stderr(), /app-pw/);
    } finally {
      node.child.kill("SIGKILL");
      await redis.stop();
    }
  });
});
