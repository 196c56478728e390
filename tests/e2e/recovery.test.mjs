// Connection-state recovery with the official client: a client whose
// connection drops comes back to the same socket, its rooms and every event
// it missed, once and in order; plugins never see the gap. Outside the
// window, or after leaving on purpose, it is a new socket.

import assert from "node:assert/strict";
import { after, describe, test } from "node:test";

import {
  chatPlugin,
  closeAllSockets,
  collect,
  connect,
  disconnected,
  emitAckOk,
  faultyPlugin,
  manifestToml,
  quiet,
  sleep,
  startHost,
  unique,
  waitFor,
} from "./harness.mjs";
import { startRedis } from "./redis.mjs";
import { HS256_AUTH, tokenFor } from "./tokens.mjs";

const FAULTY_EVENTS = ["recoveries", "disconnect_reason"];
/** The client comes back quickly, as it does after a network blip. */
const RECONNECTING = { reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 200 };

const hosts = [];

const API_TOKEN = "recovery-test-token";

async function host({ server = {}, auth = "" } = {}) {
  const started = await startHost({
    manifest:
      manifestToml({
        server,
        plugins: [chatPlugin(), faultyPlugin({ namespaces: ["/"], events: FAULTY_EVENTS })],
      }) +
      auth +
      `\n[api]\ntoken = "${API_TOKEN}"\n`,
  });
  hosts.push(started);
  return started;
}

after(async () => {
  closeAllSockets();
  await Promise.all(hosts.map((started) => started.stop()));
});

/**
 * Keeps `socket` from reconnecting after its next disconnect until
 * `comeBack()`, so a test knows that messages were sent while it was away
 * instead of racing its reconnection.
 */
function holdAwayOnDisconnect(socket) {
  const away = new Promise((resolve) =>
    socket.once("disconnect", () => {
      socket.io.reconnection(false);
      resolve();
    }),
  );
  return {
    away,
    comeBack: async () => {
      await away;
      socket.io.reconnection(true);
      socket.connect();
    },
  };
}

/** Messages sent while a dropped reader is held away. */
const HELD_AWAY = 5;

/**
 * A reader and a sender in one room; the sender sends `count` messages one
 * after another while `drop(reader)` runs after the tenth. With `holdAway`,
 * the reader reconnects only after `HELD_AWAY` more messages (otherwise at
 * its own pace). Resolves to what the reader received and how many messages
 * were sent while it was away.
 */
async function streamAcrossADrop(started, { count, drop, holdAway = true, reader: readerOptions = {} }) {
  const room = unique("stream");
  const reader = await connect(started.url, { auth: { user: unique("reader") }, ...RECONNECTING, ...readerOptions });
  const sender = await connect(started.url, { auth: { user: unique("sender") } });
  await emitAckOk(reader, "join", { room });
  await emitAckOk(sender, "join", { room });
  const received = collect(reader, "message");
  const offline = collect(sender, "user_offline");
  let sentWhileAway = 0;
  let held;
  for (let n = 0; n < count; n += 1) {
    await emitAckOk(sender, "send_message", { room, text: `m${n}` });
    if (!reader.connected) sentWhileAway += 1;
    if (n === 10) {
      await waitFor(() => received.length >= 5, undefined, "the reader to receive the first messages");
      held = holdAway ? holdAwayOnDisconnect(reader) : undefined;
      drop(reader);
      await held?.away;
    }
    if (n === 10 + HELD_AWAY) await held?.comeBack();
    await sleep(5);
  }
  return { reader, sender, room, received, offline, sentWhileAway };
}

/** Emits `bulk` {n, 20 KB of filler} to `room` through the HTTP API: its status. */
function emitBulk(started, room, n) {
  return fetch(`${started.url}/api/v1/emit`, {
    method: "POST",
    headers: { authorization: `Bearer ${API_TOKEN}`, "content-type": "application/json" },
    body: JSON.stringify({ namespace: "/", to: { room }, event: "bulk", data: { n, filler: "x".repeat(20000) } }),
  }).then((response) => response.status);
}

/**
 * Everything the server sends an Engine.IO long-polling session `sid` until
 * it closes it: its packets, in order.
 */
async function pollUntilClosed(started, sid) {
  const packets = [];
  const deadline = Date.now() + 15000;
  while (Date.now() < deadline) {
    const response = await fetch(`${started.url}/socket.io/?EIO=4&transport=polling&sid=${sid}`);
    if (response.status !== 200) return packets;
    const polled = (await response.text()).split("\x1e");
    packets.push(...polled);
    if (polled.includes("1")) return packets;
  }
  throw new Error(`the session stayed open; received ${packets.length} packets`);
}

const texts = (count) => Array.from({ length: count }, (_, n) => `m${n}`);

describe("connection-state recovery", () => {
  test("a dropped connection recovers: same socket id, its rooms, every missed message once and in order", async () => {
    const started = await host();
    const COUNT = 60;
    let id;
    const { reader, sender, room, received, offline, sentWhileAway } = await streamAcrossADrop(started, {
      count: COUNT,
      drop: (reader) => {
        id = reader.id;
        reader.io.engine.close();
      },
    });
    await waitFor(() => received.length >= COUNT, undefined, () => `all ${COUNT} messages (got ${received.length})`);
    await quiet();
    assert.ok(sentWhileAway > 0, "some messages were sent while the reader was away");
    assert.deepEqual(received.map((message) => message.text), texts(COUNT), "every message once, in order");
    assert.equal(reader.recovered, true);
    assert.equal(reader.id, id);
    const offsets = received.offsets.map(Number);
    assert.ok(offsets.every((offset, n) => n === 0 || offset > offsets[n - 1]), `offsets increase: ${offsets}`);

    // Back in its room: what is sent now reaches it.
    await emitAckOk(sender, "send_message", { room, text: "after" });
    await waitFor(() => received.at(-1)?.text === "after", undefined, "a message sent after the recovery");
    // To the plugins it never left: no on-disconnect, one on-recovered, no presence change.
    assert.equal(await emitAckOk(sender, "disconnect_reason", { socket_id: id }), null);
    assert.equal(await emitAckOk(sender, "recoveries", { socket_id: id }), 1);
    assert.deepEqual(offline, []);
  });

  test("a backlog many times max_outbound_bytes is sent at the client's pace: recovered, nothing missing", async () => {
    const started = await host({ server: { max_payload_bytes: 100000, max_outbound_bytes: 262144 } });
    const room = unique("backlog");
    const reader = await connect(started.url, {
      auth: { user: unique("reader") },
      transports: ["websocket"],
      reconnection: true,
      reconnectionDelay: 1500,
      reconnectionDelayMax: 1500,
    });
    await emitAckOk(reader, "join", { room });
    const received = collect(reader, "bulk");
    const bulk = (n) => emitBulk(started, room, n);
    assert.equal(await bulk(0), 202);
    await waitFor(() => received.length === 1, undefined, "the first event, for an offset");
    const id = reader.id;
    reader.io.engine.close();
    // 2 MB while it is away: eight times what may wait for it.
    const COUNT = 100;
    for (let n = 1; n < COUNT; n += 1) assert.equal(await bulk(n), 202);
    await waitFor(() => received.length === COUNT, 15000, () => `all ${COUNT} events (got ${received.length})`);
    await quiet();
    assert.deepEqual(received.map((event) => event.n), [...Array(COUNT).keys()]);
    assert.equal(reader.recovered, true);
    assert.equal(reader.id, id);
  });

  test("a session whose missed events leave the journal while it catches up has its connection closed, not a DISCONNECT: its client comes back", async () => {
    const started = await host({
      server: { max_payload_bytes: 100000, max_outbound_bytes: 262144, "recovery.max_events": 40 },
    });
    const room = unique("trimmed");
    const user = unique("reader");
    const reader = await connect(started.url, { auth: { user }, transports: ["websocket"] });
    const sender = await connect(started.url, { auth: { user: unique("sender") } });
    await emitAckOk(reader, "join", { room });
    const received = collect(reader, "bulk");
    assert.equal(await emitBulk(started, room, 0), 202);
    await waitFor(() => received.length === 1, undefined, "the first event, for an offset");
    const { id, _pid: pid, _lastOffset: offset } = reader;
    reader.io.engine.close();
    await disconnected(reader);
    // 400 KB missed: the backlog stops once 128 KiB wait for the client.
    for (let n = 1; n <= 20; n += 1) assert.equal(await emitBulk(started, room, n), 202);

    // It resumes on long-polling and does not poll yet, so the backlog
    // waits for it while 100 more events push what it missed out of the
    // journal (40 kept).
    const opened = await (await fetch(`${started.url}/socket.io/?EIO=4&transport=polling`)).text();
    const { sid } = JSON.parse(opened.slice(1));
    const connectPacket = `40${JSON.stringify({ user, pid, offset })}`;
    const posted = await fetch(`${started.url}/socket.io/?EIO=4&transport=polling&sid=${sid}`, {
      method: "POST",
      body: connectPacket,
    });
    assert.equal(await posted.text(), "ok");
    await sleep(300);
    for (let n = 21; n <= 120; n += 1) assert.equal(await emitBulk(started, room, n), 202);

    const packets = await pollUntilClosed(started, sid);
    assert.match(packets[0], /^40\{"sid":/, "resumed");
    assert.equal(JSON.parse(packets[0].slice(2)).sid, id);
    assert.ok(!packets.some((packet) => packet.startsWith("41")), "no DISCONNECT, after which socket.io-client would not come back");
    const caughtUp = packets.filter((packet) => packet.startsWith("42")).map((packet) => JSON.parse(packet.slice(2))[1].n);
    assert.deepEqual(caughtUp, caughtUp.map((_, index) => index + 1), "what it was sent is in order, from the first it missed");
    assert.ok(caughtUp.length < 120, "not caught up");

    // Its client comes back to a new socket; its session is then over at
    // once, not when its window closes: the plugins see the old socket go.
    const again = await connect(started.url, { auth: { user, pid, offset } });
    assert.equal(again.recovered, false);
    assert.notEqual(again.id, id);
    assert.equal(
      await waitFor(async () => await emitAckOk(sender, "disconnect_reason", { socket_id: id }), undefined, "on-disconnect"),
      "client gracefully closed the connection",
    );
  });

  test("a client that had received no event when it dropped recovers what was sent since it connected", async () => {
    const started = await host();
    const room = unique("quiet");
    const reader = await connect(started.url, {
      auth: { user: unique("reader") },
      reconnection: true,
      reconnectionDelay: 500,
      reconnectionDelayMax: 500,
    });
    const sender = await connect(started.url, { auth: { user: unique("sender") } });
    await emitAckOk(reader, "join", { room });
    await emitAckOk(sender, "join", { room });
    const received = collect(reader, "message");
    const id = reader.id;
    reader.io.engine.close();
    for (const text of ["one", "two", "three"]) await emitAckOk(sender, "send_message", { room, text });
    await waitFor(() => reader.connected, 5000, "the reader to reconnect");
    await waitFor(() => received.length === 3, undefined, "the three messages");
    assert.equal(reader.recovered, true);
    assert.equal(reader.id, id);
    assert.deepEqual(received.map((message) => message.text), ["one", "two", "three"]);
  });

  test("past max_disconnection_ms the client gets a new socket, and plugins see the old one go", async () => {
    const started = await host({ server: { "recovery.max_disconnection_ms": 300 } });
    let id;
    const { reader, sender, received, offline } = await streamAcrossADrop(started, {
      count: 20,
      // Comes back only after the window is over.
      holdAway: false,
      reader: { reconnectionDelay: 1500, reconnectionDelayMax: 1500 },
      drop: (reader) => {
        id = reader.id;
        reader.io.engine.close();
      },
    });
    await waitFor(() => reader.connected, 5000, "the reader to reconnect");
    assert.equal(reader.recovered, false);
    assert.notEqual(reader.id, id);
    assert.equal(await emitAckOk(sender, "disconnect_reason", { socket_id: id }), "client gracefully closed the connection");
    assert.equal(offline.length, 1, "the chat plugin saw the reader go offline once");
    assert.ok(received.length < 20, "messages sent while it was away are not replayed to a new socket");
  });

  test("past max_waiting_sessions a lost connection's session is not kept: its plugins see it go at once, its client gets a new socket", async () => {
    const started = await host({ server: { "recovery.max_waiting_sessions": 1 } });
    const sockets = [
      await connect(started.url, { auth: { user: unique("first") }, ...RECONNECTING }),
      await connect(started.url, { auth: { user: unique("second") }, ...RECONNECTING }),
    ];
    const watcher = await connect(started.url, { auth: { user: unique("watcher") } });
    const ids = sockets.map((socket) => socket.id);
    const held = sockets.map(holdAwayOnDisconnect);
    for (const socket of sockets) socket.io.engine.close();
    await Promise.all(held.map(({ away }) => away));
    // The node sees the two connections go in either order: one session is
    // kept, the other's plugins see it go at once.
    const reasonOf = (socket_id) => emitAckOk(watcher, "disconnect_reason", { socket_id });
    const reasons = await waitFor(
      async () => {
        const seen = await Promise.all(ids.map(reasonOf));
        return seen.filter(Boolean).length === 1 && seen;
      },
      undefined,
      "on-disconnect of the one session not kept",
    );
    const notKept = reasons.findIndex(Boolean);
    const kept = 1 - notKept;
    assert.equal(reasons[notKept], "client gracefully closed the connection");
    const metrics = await fetch(`${started.url}/metrics`, { headers: { authorization: `Bearer ${API_TOKEN}` } });
    assert.match(await metrics.text(), /^switchboard_sessions_total\{namespace="\/",outcome="not_kept"\} 1$/m);
    assert.equal(await reasonOf(ids[kept]), null, "the session kept is not over");

    for (const { comeBack } of held) await comeBack();
    await waitFor(() => sockets.every((socket) => socket.connected), undefined, "both to reconnect");
    assert.deepEqual([sockets[kept].recovered, sockets[kept].id], [true, ids[kept]]);
    assert.equal(sockets[notKept].recovered, false);
    assert.notEqual(sockets[notKept].id, ids[notKept]);
  });

  test("a client that disconnects on purpose does not recover; its plugins see it go at once", async () => {
    const started = await host();
    const reader = await connect(started.url, { auth: { user: unique("leaver") } });
    const sender = await connect(started.url, { auth: { user: unique("sender") } });
    await emitAckOk(reader, "join", { room: unique("room") });
    const id = reader.id;
    reader.disconnect();
    assert.equal(
      await waitFor(async () => await emitAckOk(sender, "disconnect_reason", { socket_id: id }), undefined, "on-disconnect"),
      "client has manually disconnected the socket from the namespace",
    );
    reader.connect();
    await waitFor(() => reader.connected, undefined, "the reader to connect again");
    assert.equal(reader.recovered, false);
    assert.notEqual(reader.id, id);
  });

  test("a session resumes only for its own user: another token with its pid is refused", async () => {
    const started = await host({ auth: HS256_AUTH });
    const owner = await connect(started.url, { auth: { token: tokenFor(unique("owner")) } });
    const sender = await connect(started.url, { auth: { token: tokenFor(unique("sender")) } });
    const room = unique("private");
    await emitAckOk(owner, "join", { room });
    await emitAckOk(sender, "join", { room });
    const received = collect(owner, "message");
    await emitAckOk(sender, "send_message", { room, text: "hello" });
    await waitFor(() => received.length === 1, undefined, "a message with an offset");
    // What the client keeps to resume with (socket.io-client's own fields).
    const { _pid: pid, _lastOffset: offset } = owner;
    assert.equal(typeof pid, "string");
    assert.equal(offset, received.offsets[0]);
    owner.io.engine.close();
    await sleep(100);

    const mallory = unique("mallory");
    await assert.rejects(
      connect(started.url, { auth: { token: tokenFor(mallory), pid, offset } }),
      (error) => /another user/.test(error.message),
    );
  });

  test("with recovery off, events carry no offset and a dropped client gets a new socket", async () => {
    const started = await host({ server: { "recovery.enabled": false } });
    const room = unique("plain");
    const reader = await connect(started.url, { auth: { user: unique("reader") }, ...RECONNECTING });
    const sender = await connect(started.url, { auth: { user: unique("sender") } });
    await emitAckOk(reader, "join", { room });
    await emitAckOk(sender, "join", { room });
    const received = collect(reader, "message");
    await emitAckOk(sender, "send_message", { room, text: "one" });
    await waitFor(() => received.length === 1, undefined, "the message");
    assert.deepEqual(received.offsets, [undefined]);
    const id = reader.id;
    reader.io.engine.close();
    await waitFor(() => reader.connected && reader.id !== id, 5000, "a new socket");
    assert.ok(!reader.recovered);
  });
});

describe("connection-state recovery across nodes", () => {
  /**
   * Two nodes on one Redis; a reader on node A that reconnects to node B
   * (as a client behind a balancer does when its node is gone), a sender on
   * node B. `stopA` ends node A after the tenth message.
   */
  async function recoverOnTheOtherNode(stopA) {
    const redis = await startRedis();
    const manifest =
      manifestToml({ plugins: [chatPlugin(), faultyPlugin({ namespaces: ["/"], events: FAULTY_EVENTS })] }) +
      `\n[cluster]\nredis_url = "${redis.url}"\nprefix = "${unique("recovery")}"\n`;
    const [nodeA, nodeB] = await Promise.all([startHost({ manifest }), startHost({ manifest })]);
    hosts.push(nodeA, nodeB);
    try {
      const room = unique("across");
      const reader = await connect(nodeA.url, { auth: { user: unique("reader") }, ...RECONNECTING });
      reader.on("disconnect", () => {
        reader.io.uri = nodeB.url;
      });
      const sender = await connect(nodeB.url, { auth: { user: unique("sender") } });
      await emitAckOk(reader, "join", { room });
      await emitAckOk(sender, "join", { room });
      const received = collect(reader, "message");
      const offline = collect(sender, "user_offline");
      const id = reader.id;
      const COUNT = 60;
      let sentWhileAway = 0;
      let held;
      for (let n = 0; n < COUNT; n += 1) {
        await emitAckOk(sender, "send_message", { room, text: `m${n}` });
        if (!reader.connected) sentWhileAway += 1;
        if (n === 10) {
          await waitFor(() => received.length >= 5, undefined, "the reader to receive the first messages");
          held = holdAwayOnDisconnect(reader);
          await stopA(nodeA);
          await held.away;
        }
        if (n === 10 + HELD_AWAY) await held.comeBack();
        await sleep(10);
      }
      await waitFor(() => received.length >= COUNT, 10000, () => `all ${COUNT} messages (got ${received.length})`);
      await quiet();
      assert.ok(sentWhileAway > 0, "some messages were sent while the reader was away");
      assert.deepEqual(received.map((message) => message.text), texts(COUNT), "every message once, in order");
      assert.equal(reader.recovered, true);
      assert.equal(reader.id, id);
      assert.equal(reader.io.uri, nodeB.url, "the reader is on node B now");
      await emitAckOk(sender, "send_message", { room, text: "after" });
      await waitFor(() => received.at(-1)?.text === "after", undefined, "a message sent after the recovery");
      assert.equal(await emitAckOk(sender, "disconnect_reason", { socket_id: id }), null);
      assert.equal(await emitAckOk(sender, "recoveries", { socket_id: id }), 1);
      assert.deepEqual(offline, [], "the reader's user never went offline");
    } finally {
      closeAllSockets();
      await Promise.all([nodeA.stop(), nodeB.stop()]);
      await redis.stop();
    }
  }

  test("a client whose node is SIGKILLed mid-stream recovers on another node with nothing missing", async () => {
    await recoverOnTheOtherNode((nodeA) => nodeA.stop("SIGKILL"));
  });

  test("a client whose node is drained (SIGTERM) mid-stream recovers on another node with nothing missing", async () => {
    await recoverOnTheOtherNode(async (nodeA) => {
      const { code } = await nodeA.stop();
      assert.equal(code, 0, nodeA.stderr());
    });
  });
});
