// The chat plugin through the real host: rooms, fan-out, history, typing,
// presence, cleanup, both transports, and events sent before `connect`.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import {
  chatPlugin,
  closeAllSockets,
  collect,
  connect,
  disconnected,
  emitAck,
  emitAckOk,
  openSocket,
  quiet,
  startHost,
  stopCleanly,
  unique,
  waitFor,
} from "./harness.mjs";

const HISTORY_SIZE = 10;

let host;

before(async () => {
  host = await startHost({ plugins: [chatPlugin({ config: { history_size: HISTORY_SIZE } })] });
});

after(async () => {
  closeAllSockets();
  if (host) await stopCleanly(host);
});

/** Connects as `user` (the chat identity comes from `auth.user`). */
function user(name, options = {}) {
  return connect(host.url, { auth: { user: name }, ...options });
}

function assertMessage(message, { room, from, text }) {
  assert.equal(typeof message, "object", `message is not an object: ${JSON.stringify(message)}`);
  assert.deepEqual(Object.keys(message).sort(), ["from", "id", "room", "text", "ts"]);
  assert.equal(message.room, room);
  assert.equal(message.from, from);
  assert.equal(message.text, text);
  assert.ok(["string", "number"].includes(typeof message.id), `id ${JSON.stringify(message.id)}`);
  assert.equal(typeof message.ts, "number", `ts ${JSON.stringify(message.ts)}`);
}

describe("chat", () => {
  test("join acks the room, empty history and the member count", async () => {
    const room = unique("lobby");
    const a = await user(unique("ada"));
    const b = await user(unique("bob"));
    try {
      assert.deepEqual(await emitAck(a, "join", { room }), { room, history: [], members: 1 });
      assert.deepEqual(await emitAck(b, "join", { room }), { room, history: [], members: 2 });
      // Joining again is idempotent: still two sockets in the room.
      assert.deepEqual(await emitAck(b, "join", { room }), { room, history: [], members: 2 });
    } finally {
      a.close();
      b.close();
    }
  });

  test("send_message acks {id} and the sender gets the broadcast with that id", async () => {
    const room = unique("ack");
    const name = unique("ada");
    const a = await user(name);
    try {
      await emitAckOk(a, "join", { room });
      const messages = collect(a, "message");
      const before = Date.now();
      const ack = await emitAck(a, "send_message", { room, text: "hello" });
      const afterAck = Date.now();
      assert.deepEqual(Object.keys(ack), ["id"], `ack ${JSON.stringify(ack)}`);
      await waitFor(() => messages.length >= 1, undefined, "the sender's own broadcast");
      await quiet(200);
      assert.equal(messages.length, 1, `received ${JSON.stringify(messages)}`);
      assertMessage(messages[0], { room, from: name, text: "hello" });
      assert.equal(messages[0].id, ack.id);
      assert.ok(
        messages[0].ts >= before - 5000 && messages[0].ts <= afterAck + 5000,
        `ts ${messages[0].ts} is not the send time (${before}..${afterAck})`,
      );

      const second = await emitAck(a, "send_message", { room, text: "again" });
      assert.notEqual(second.id, ack.id, "message ids must be unique");
    } finally {
      a.close();
    }
  });

  test("fan-out: every member gets every message exactly once, per-sender order kept, non-members get nothing", async () => {
    const N = 15;
    const room1 = unique("room1");
    const room2 = unique("room2");
    const names = { A: unique("A"), B: unique("B"), C: unique("C") };
    const [a, b, c] = await Promise.all([user(names.A), user(names.B), user(names.C)]);
    const clients = { A: a, B: b, C: c };
    try {
      await emitAckOk(a, "join", { room: room1 });
      await emitAckOk(b, "join", { room: room1 });
      await emitAckOk(b, "join", { room: room2 });
      await emitAckOk(c, "join", { room: room2 });
      const received = { A: collect(a, "message"), B: collect(b, "message"), C: collect(c, "message") };

      // Each client pipelines its messages (no waiting between them): A to
      // room1, C to room2, B alternating between both. All three at once.
      const plan = { A: [], B: [], C: [] };
      for (let i = 0; i < N; i++) {
        plan.A.push({ room: room1, text: `A:${room1}:${i}` });
        plan.C.push({ room: room2, text: `C:${room2}:${i}` });
        plan.B.push({ room: room1, text: `B:${room1}:${i}` });
        plan.B.push({ room: room2, text: `B:${room2}:${i}` });
      }
      const acks = await Promise.all(
        Object.entries(plan).flatMap(([who, messages]) =>
          messages.map(async (message) => ({ room: message.room, text: message.text, ...(await emitAckOk(clients[who], "send_message", message)) })),
        ),
      );
      // Ids are unique within a room (the chat plugin numbers each room's messages).
      const roomIds = acks.map((ack) => `${ack.room}/${ack.id}`);
      assert.equal(new Set(roomIds).size, roomIds.length, "every message gets its own id within its room");

      const sent = Object.entries(plan).flatMap(([who, messages]) =>
        messages.map((message) => ({ ...message, from: names[who] })),
      );
      const expected = {
        A: sent.filter((m) => m.room === room1),
        B: sent,
        C: sent.filter((m) => m.room === room2),
      };
      for (const who of ["A", "B", "C"]) {
        await waitFor(
          () => received[who].length >= expected[who].length,
          10000,
          () => `${who} to receive ${expected[who].length} messages (has ${received[who].length})`,
        );
      }
      await quiet(300);

      for (const who of ["A", "B", "C"]) {
        const got = received[who];
        assert.equal(got.length, expected[who].length, `${who} received ${got.length}, expected ${expected[who].length}`);
        for (const message of got) {
          const origin = sent.find((m) => m.text === message.text);
          assert.ok(origin, `${who} received an unknown message ${JSON.stringify(message)}`);
          assertMessage(message, origin);
        }
        // Exactly once: no text and no id twice.
        assert.equal(new Set(got.map((m) => m.text)).size, got.length, `${who} received a duplicate`);
        assert.equal(new Set(got.map((m) => `${m.room}/${m.id}`)).size, got.length, `${who} received a duplicate id`);
        assert.deepEqual(
          new Set(got.map((m) => m.text)),
          new Set(expected[who].map((m) => m.text)),
          `${who} did not receive exactly its rooms' messages`,
        );
        // Per sender and room, in the order sent.
        for (const sender of ["A", "B", "C"]) {
          for (const room of [room1, room2]) {
            const texts = got.filter((m) => m.from === names[sender] && m.room === room).map((m) => m.text);
            const sentTexts = plan[sender].filter((m) => m.room === room).map((m) => m.text);
            if (texts.length > 0) assert.deepEqual(texts, sentTexts, `${who}: order of ${sender}'s messages in ${room}`);
          }
        }
        // B sent to both rooms alternately; its own sequence must stay interleaved in order.
        if (who === "B") {
          const fromB = got.filter((m) => m.from === names.B).map((m) => m.text);
          assert.deepEqual(fromB, plan.B.map((m) => m.text), "B's own messages out of order");
        }
      }
      // Non-members: A is not in room2, C is not in room1.
      assert.equal(received.A.filter((m) => m.room === room2).length, 0, "A received room2 traffic");
      assert.equal(received.C.filter((m) => m.room === room1).length, 0, "C received room1 traffic");
      // Each broadcast carries the id its sender's ack gave.
      const ackedId = new Map(acks.map((ack) => [ack.text, ack.id]));
      for (const message of received.B) assert.equal(message.id, ackedId.get(message.text), `id of ${message.text}`);
    } finally {
      a.close();
      b.close();
      c.close();
    }
  });

  test("history: a later joiner gets the last history_size messages, oldest first", async () => {
    const room = unique("history");
    const name = unique("writer");
    const writer = await user(name);
    const reader = await user(unique("reader"));
    try {
      await emitAckOk(writer, "join", { room });
      const total = HISTORY_SIZE + 3;
      const acks = [];
      for (let i = 0; i < total; i++) {
        acks.push(await emitAckOk(writer, "send_message", { room, text: `m${i}` }));
      }
      const joined = await emitAckOk(reader, "join", { room });
      assert.equal(joined.room, room);
      assert.equal(joined.members, 2);
      assert.equal(joined.history.length, HISTORY_SIZE, `history has ${joined.history.length} messages`);
      assert.deepEqual(
        joined.history.map((m) => m.text),
        Array.from({ length: HISTORY_SIZE }, (_, i) => `m${i + 3}`),
      );
      joined.history.forEach((message, i) => {
        assertMessage(message, { room, from: name, text: `m${i + 3}` });
        assert.equal(message.id, acks[i + 3].id, "history keeps each message's id");
      });
      // Another room's history is separate.
      const other = await emitAckOk(reader, "join", { room: unique("history-other") });
      assert.deepEqual(other.history, []);
    } finally {
      writer.close();
      reader.close();
    }
  });

  test("typing goes to the other members only, once", async () => {
    const room = unique("typing");
    const names = [unique("t1"), unique("t2"), unique("t3"), unique("outsider")];
    const [t1, t2, t3, outsider] = await Promise.all(names.map((name) => user(name)));
    try {
      for (const socket of [t1, t2, t3]) await emitAckOk(socket, "join", { room });
      await emitAckOk(outsider, "join", { room: unique("elsewhere") });
      const seen = [t1, t2, t3, outsider].map((socket) => collect(socket, "typing"));
      assert.deepEqual(await emitAck(t1, "typing", { room }), {});
      await waitFor(() => seen[1].length >= 1 && seen[2].length >= 1, undefined, "t2 and t3 to see typing");
      await quiet(300);
      assert.deepEqual(seen[0], [], "the typist saw its own typing event");
      assert.deepEqual(seen[1], [{ room, from: names[0] }]);
      assert.deepEqual(seen[2], [{ room, from: names[0] }]);
      assert.deepEqual(seen[3], [], "a non-member saw typing");
    } finally {
      for (const socket of [t1, t2, t3, outsider]) socket.close();
    }
  });

  test("presence: user_online / user_offline per user, across sockets, with rooms re-joined on connect", async () => {
    const room = unique("presence");
    const alice = unique("alice");
    const bob = unique("bob");
    const a = await user(alice);
    let b1 = await user(bob);
    let b2;
    let b3;
    try {
      await emitAckOk(a, "join", { room });
      await emitAckOk(b1, "join", { room });
      const online = collect(a, "user_online");
      const offline = collect(a, "user_offline");

      // Bob's only socket goes: alice hears bob went offline, once.
      b1.close();
      await waitFor(() => offline.length >= 1, undefined, () => `user_offline for bob (got ${JSON.stringify(offline)})`);
      await quiet(200);
      assert.deepEqual(offline, [{ user: bob }]);
      assert.deepEqual(online, []);

      // Bob comes back: alice hears user_online once; bob's new socket is back in the room without joining.
      const b2Online = [];
      b2 = openSocket(host.url, { auth: { user: bob } });
      b2.on("user_online", (data) => b2Online.push(data));
      const b2Messages = collect(b2, "message");
      await new Promise((resolve, reject) => {
        b2.once("connect", resolve);
        b2.once("connect_error", reject);
      });
      await waitFor(() => online.length >= 1, undefined, () => `user_online for bob (got ${JSON.stringify(online)})`);
      await emitAckOk(a, "send_message", { room, text: "welcome back" });
      await waitFor(() => b2Messages.length >= 1, undefined, "bob's new socket, re-joined to the room, to get alice's message");
      assert.equal(b2Messages[0].text, "welcome back");

      // A second socket of bob's is not a new user online; closing one of two is not offline.
      b3 = await user(bob);
      await quiet(200);
      b3.close();
      await quiet(300);
      assert.deepEqual(online, [{ user: bob }], "a second socket of an online user announced them again");
      assert.deepEqual(offline, [{ user: bob }], "closing one of two sockets announced the user offline");
      assert.deepEqual(b2Online, [], "user_online went to the connecting socket itself");

      // The last socket goes: offline again.
      b2.close();
      await waitFor(() => offline.length >= 2, undefined, "user_offline after bob's last socket");
      await quiet(200);
      assert.deepEqual(offline, [{ user: bob }, { user: bob }]);
      assert.deepEqual(online, [{ user: bob }]);
    } finally {
      a.close();
      b1.close();
      b2?.close();
      b3?.close();
    }
  });

  test("leave acks {room}, and a disconnected or departed socket no longer counts as a member", async () => {
    const room = unique("cleanup");
    const x = await user(unique("x"));
    const y = await user(unique("y"));
    const z = await user(unique("z"));
    const probe = await user(unique("probe"));
    try {
      assert.equal((await emitAckOk(x, "join", { room })).members, 1);
      assert.equal((await emitAckOk(y, "join", { room })).members, 2);
      assert.equal((await emitAckOk(z, "join", { room })).members, 3);

      // z leaves explicitly.
      assert.deepEqual(await emitAck(z, "leave", { room }), { room });
      const afterLeave = await emitAckOk(probe, "join", { room });
      assert.equal(afterLeave.members, 3, "x, y and the probe (z left)");
      assert.deepEqual(await emitAck(probe, "leave", { room }), { room });
      const notIn = await emitAck(z, "send_message", { room, text: "still here?" });
      assert.equal(notIn?.error?.code, "not_in_room", `after leave: ${JSON.stringify(notIn)}`);

      // y disconnects: the probe's join count drops to x + probe.
      y.close();
      const members = await waitFor(
        async () => {
          const joined = await emitAckOk(probe, "join", { room });
          if (joined.members === 2) return joined.members;
          await emitAckOk(probe, "leave", { room });
          return undefined;
        },
        5000,
        "the room's member count to drop after y disconnected",
      );
      assert.equal(members, 2);
    } finally {
      for (const socket of [x, y, z, probe]) socket.close();
    }
  });

  for (const transport of ["polling", "websocket"]) {
    test(`${transport}-only clients join, send and receive`, async () => {
      const room = unique(`transport-${transport}`);
      const names = [unique("p"), unique("q")];
      const p = await user(names[0], { transports: [transport] });
      const q = await user(names[1], { transports: [transport] });
      try {
        assert.equal(p.io.engine.transport.name, transport);
        assert.equal(q.io.engine.transport.name, transport);
        assert.deepEqual(await emitAck(p, "join", { room }), { room, history: [], members: 1 });
        assert.equal((await emitAckOk(q, "join", { room })).members, 2);
        const atP = collect(p, "message");
        const atQ = collect(q, "message");
        for (let i = 0; i < 5; i++) {
          await emitAckOk(p, "send_message", { room, text: `p${i}` });
          await emitAckOk(q, "send_message", { room, text: `q${i}` });
        }
        const texts = ["p0", "q0", "p1", "q1", "p2", "q2", "p3", "q3", "p4", "q4"];
        await waitFor(() => atP.length >= 10 && atQ.length >= 10, undefined, () => `10 messages each (p ${atP.length}, q ${atQ.length})`);
        await quiet(200);
        // Sends were sequential (each acked before the next), so both see one global order.
        assert.deepEqual(atP.map((m) => m.text), texts);
        assert.deepEqual(atQ.map((m) => m.text), texts);
        assert.equal(p.io.engine.transport.name, transport, "the transport changed");
      } finally {
        p.close();
        q.close();
      }
    });
  }

  test("a polling client and a websocket client talk to each other", async () => {
    const room = unique("mixed");
    const p = await user(unique("poll"), { transports: ["polling"] });
    const w = await user(unique("ws"), { transports: ["websocket"] });
    try {
      await emitAckOk(p, "join", { room });
      await emitAckOk(w, "join", { room });
      const atP = collect(p, "message");
      const atW = collect(w, "message");
      await emitAckOk(w, "send_message", { room, text: "from ws" });
      await emitAckOk(p, "send_message", { room, text: "from polling" });
      await waitFor(() => atP.length >= 2 && atW.length >= 2, undefined, "both messages at both clients");
      assert.deepEqual(atP.map((m) => m.text), ["from ws", "from polling"]);
      assert.deepEqual(atW.map((m) => m.text), ["from ws", "from polling"]);
    } finally {
      p.close();
      w.close();
    }
  });

  test("200 clients connecting at once, each joining as soon as it can, all get the room's next message", async () => {
    // Each `join` leaves the client right after the CONNECT reply, racing
    // the server's connect handler: none may be lost.
    const room = unique("crowd");
    const sockets = Array.from({ length: 200 }, (_, n) =>
      openSocket(host.url, { auth: { user: unique(`crowd${n}`) }, transports: ["websocket"] }),
    );
    try {
      const joins = await Promise.all(sockets.map((socket) => emitAck(socket, "join", { room }, { timeout: 20000 })));
      const refused = joins.filter((joined) => joined.room !== room);
      assert.deepEqual(refused, [], "every join acked with its room");
      const received = sockets.map((socket) => collect(socket, "message"));
      await emitAckOk(sockets[0], "send_message", { room, text: "all here?" });
      await waitFor(() => received.every((messages) => messages.length === 1), 10000,
        () => `the message at all 200 (${received.filter((messages) => messages.length === 1).length})`);
    } finally {
      for (const socket of sockets) socket.close();
    }
  });

  test("events emitted synchronously right after io(), before connect, are handled in order", async () => {
    const room = unique("early");
    const name = unique("early");
    const socket = openSocket(host.url, { auth: { user: name } });
    try {
      assert.equal(socket.connected, false);
      const join = emitAck(socket, "join", { room });
      const send = emitAck(socket, "send_message", { room, text: "first words" });
      const [joined, sent] = await Promise.all([join, send]);
      assert.deepEqual(joined, { room, history: [], members: 1 });
      assert.deepEqual(Object.keys(sent ?? {}), ["id"], `send_message right after join: ${JSON.stringify(sent)}`);
    } finally {
      socket.close();
    }
  });

  test("a disconnecting client does not disturb the others", async () => {
    const room = unique("churn");
    const stay = await user(unique("stay"));
    const other = await user(unique("other"));
    try {
      await emitAckOk(stay, "join", { room });
      await emitAckOk(other, "join", { room });
      const atStay = collect(stay, "message");
      for (let i = 0; i < 5; i++) {
        const leaver = await user(unique("leaver"));
        await emitAckOk(leaver, "join", { room });
        leaver.emit("send_message", { room, text: `bye${i}` });
        leaver.close();
        await disconnected(leaver);
      }
      await emitAckOk(other, "send_message", { room, text: "still on" });
      await waitFor(() => atStay.some((m) => m.text === "still on"), undefined, "the last message");
      assert.equal(atStay.filter((m) => m.text === "still on").length, 1);
    } finally {
      stay.close();
      other.close();
    }
  });
});
