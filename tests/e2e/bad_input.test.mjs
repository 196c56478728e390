// Bad input gets a clear error, to the sender only, and nobody else notices:
// wrong payload shapes, unknown events, oversize events, frames beyond the
// transport limit, and a malformed Socket.IO packet on a raw WebSocket.

import assert from "node:assert/strict";
import { after, afterEach, before, beforeEach, describe, test } from "node:test";
import WebSocket from "ws";

import {
  TIMEOUT_MS,
  chatPlugin,
  closeAllSockets,
  collect,
  collectAll,
  connect,
  disconnected,
  emitAck,
  emitAckError,
  emitAckOk,
  quiet,
  startHost,
  unique,
  waitFor,
} from "./harness.mjs";

const MAX_PAYLOAD = 10000;
const MAX_MESSAGE_LENGTH = 500;

let host;

before(async () => {
  host = await startHost({
    server: { max_payload_bytes: MAX_PAYLOAD },
    plugins: [chatPlugin({ config: { max_message_length: MAX_MESSAGE_LENGTH } })],
  });
});

after(async () => {
  closeAllSockets();
  if (host) {
    const { code } = await host.stop();
    assert.equal(code, 0, `host exit code; stderr:\n${host.stderr().slice(-2000)}`);
  }
});

/**
 * Every test gets a room with a bad client, an observer that only listens and
 * a talker. `assertOthersUnaffected()` checks the observer still gets the
 * talker's messages and never saw an error.
 */
let room;
let bad;
let observer;
let talker;
let observed;
let badEvents;

beforeEach(async () => {
  room = unique("bad");
  [bad, observer, talker] = await Promise.all([
    connect(host.url, { auth: { user: unique("mallory") } }),
    connect(host.url, { auth: { user: unique("olive") } }),
    connect(host.url, { auth: { user: unique("trent") } }),
  ]);
  for (const socket of [bad, observer, talker]) await emitAckOk(socket, "join", { room });
  observed = collectAll(observer);
  badEvents = collectAll(bad);
});

afterEach(() => {
  for (const socket of [bad, observer, talker]) socket?.close();
});

async function assertOthersUnaffected() {
  const text = unique("still-fine");
  await emitAckOk(talker, "send_message", { room, text });
  await waitFor(
    () => observed.some((e) => e.event === "message" && e.data.text === text),
    TIMEOUT_MS,
    "the observer to keep receiving messages",
  );
  const unexpected = observed.filter((e) => e.event !== "message");
  assert.deepEqual(unexpected, [], "the observer received something other than messages");
  assert.equal(
    observed.filter((e) => e.event === "message" && e.data.text === text).length,
    1,
    "the observer got the message more than once",
  );
}

function assertError(error, code, mentions = []) {
  assert.equal(error.code, code, `error ${JSON.stringify(error)}`);
  assert.deepEqual(Object.keys(error).sort(), ["code", "message"]);
  assert.equal(typeof error.message, "string");
  assert.ok(error.message.length > 0, "empty error message");
  for (const word of mentions) {
    assert.ok(error.message.includes(word), `message ${JSON.stringify(error.message)} does not name \`${word}\``);
  }
}

describe("bad input with an ack", () => {
  const cases = [
    ["send_message with a string payload", "send_message", "hello", "invalid_payload"],
    ["send_message with a number payload", "send_message", 42, "invalid_payload"],
    ["send_message with an array payload", "send_message", ["room", "text"], "invalid_payload"],
    ["send_message with null", "send_message", null, "invalid_payload"],
    ["join with a string payload", "join", "lobby", "invalid_payload"],
    ["join with a number payload", "join", 7, "invalid_payload"],
    ["typing with a string payload", "typing", "x", "invalid_payload"],
    ["leave with a number payload", "leave", 3, "invalid_payload"],
    ["text of the wrong type", "send_message", () => ({ room, text: 42 }), "invalid_payload", ["text"]],
    ["room of the wrong type", "send_message", () => ({ room: 7, text: "hi" }), "invalid_payload", ["room"]],
    ["missing text", "send_message", () => ({ room }), "invalid_payload", ["text"]],
    ["missing room", "send_message", { text: "hi" }, "invalid_payload", ["room"]],
    ["join without room", "join", {}, "invalid_payload", ["room"]],
    ["join with a room of the wrong type", "join", { room: ["a"] }, "invalid_payload", ["room"]],
    ["empty text", "send_message", () => ({ room, text: "" }), "empty_message"],
    ["text one over max_message_length", "send_message", () => ({ room, text: "x".repeat(MAX_MESSAGE_LENGTH + 1) }), "message_too_long"],
    ["a room the sender is not in", "send_message", () => ({ room: unique("elsewhere"), text: "hi" }), "not_in_room"],
    ["an unknown event", "dance", { room: "x" }, "unknown_event", ["dance"]],
    ["an unknown event without payload", "frobnicate", undefined, "unknown_event", ["frobnicate"]],
  ];
  for (const [name, event, data, code, mentions] of cases) {
    test(`${name} → ${code}`, async () => {
      const payload = typeof data === "function" ? data() : data;
      const error = await emitAckError(bad, event, payload);
      assertError(error, code, mentions);
      await assertOthersUnaffected();
      // The bad client is still connected and served.
      assert.equal(bad.connected, true);
      await emitAckOk(bad, "send_message", { room, text: "recovered" });
      // Errors went as the ack, not also as an `error` event.
      assert.deepEqual(badEvents.named("error"), []);
    });
  }

  test("text of exactly max_message_length is accepted", async () => {
    const ack = await emitAckOk(bad, "send_message", { room, text: "y".repeat(MAX_MESSAGE_LENGTH) });
    assert.ok("id" in ack, JSON.stringify(ack));
  });

  test("an event over max_payload_bytes (under 2x) → payload_too_large, connection kept", async () => {
    const error = await emitAckError(bad, "send_message", { room, text: "z".repeat(MAX_PAYLOAD + 500) });
    assertError(error, "payload_too_large");
    assert.equal(bad.connected, true);
    await emitAckOk(bad, "send_message", { room, text: "small again" });
    await assertOthersUnaffected();
    // The oversize message was never broadcast.
    assert.equal(observed.filter((e) => e.event === "message" && e.data.text.startsWith("zzz")).length, 0);
  });

  test("an event of many tiny arguments counts what they hold: payload_too_large, connection kept", async () => {
    // 1,000 arguments of one byte: 2 KB of text, 33 KB held as arguments.
    // Counting their text alone, twenty such events of 400,000 arguments
    // made a node hold 442 MiB while they waited for their plugin.
    const reply = await bad.timeout(TIMEOUT_MS).emitWithAck("send_message", ...Array(1000).fill(0));
    assertError(reply.error, "payload_too_large");
    assert.match(reply.error.message, /counting 32 for each argument/);
    assert.equal(bad.connected, true);
    await emitAckOk(bad, "send_message", { room, text: "small again" });
    await assertOthersUnaffected();
  });

  test("an event over max_payload_bytes to an unknown event → unknown_event or payload_too_large", async () => {
    // Either check may come first; both are errors to this client only.
    const error = await emitAckError(bad, "nope", "z".repeat(MAX_PAYLOAD + 500));
    assert.ok(["unknown_event", "payload_too_large"].includes(error.code), JSON.stringify(error));
    await assertOthersUnaffected();
  });
});

describe("bad input without an ack: an `error` event to the sender only", () => {
  const cases = [
    ["a string payload", "send_message", "hello", "invalid_payload"],
    ["a number payload", "join", 12, "invalid_payload"],
    ["missing text", "send_message", () => ({ room }), "invalid_payload"],
    ["empty text", "send_message", () => ({ room, text: "" }), "empty_message"],
    ["too long", "send_message", () => ({ room, text: "x".repeat(MAX_MESSAGE_LENGTH + 1) }), "message_too_long"],
    ["not in room", "send_message", () => ({ room: unique("elsewhere"), text: "hi" }), "not_in_room"],
    ["an unknown event", "dance", { step: 1 }, "unknown_event"],
    ["an oversize event", "send_message", () => ({ room, text: "z".repeat(MAX_PAYLOAD + 500) }), "payload_too_large"],
  ];
  for (const [name, event, data, code] of cases) {
    test(`${name} → error event ${code}`, async () => {
      const errors = collect(bad, "error");
      bad.emit(event, typeof data === "function" ? data() : data);
      await waitFor(() => errors.length >= 1, TIMEOUT_MS, `an error event for ${event}`);
      await assertOthersUnaffected();
      assert.equal(errors.length, 1, `error events: ${JSON.stringify(errors)}`);
      assert.deepEqual(Object.keys(errors[0]).sort(), ["code", "event", "message"]);
      assert.equal(errors[0].event, event);
      assert.equal(errors[0].code, code, JSON.stringify(errors[0]));
      assert.ok(errors[0].message.length > 0);
      assert.equal(bad.connected, true);
      // The talker sent a message and only the bad client got an error.
      const talkerErrors = collect(talker, "error");
      await quiet(100);
      assert.deepEqual(talkerErrors, []);
    });
  }

  test("errors arrive in order, one per bad event, interleaved with good acks", async () => {
    const errors = collect(bad, "error");
    bad.emit("send_message", "one");
    bad.emit("dance", {});
    const ok = emitAckOk(bad, "send_message", { room, text: "between" });
    bad.emit("send_message", { room, text: "" });
    await ok;
    await waitFor(() => errors.length >= 3, TIMEOUT_MS, () => `3 error events (got ${JSON.stringify(errors)})`);
    await quiet(200);
    assert.deepEqual(
      errors.map((e) => [e.event, e.code]),
      [
        ["send_message", "invalid_payload"],
        ["dance", "unknown_event"],
        ["send_message", "empty_message"],
      ],
    );
    await assertOthersUnaffected();
  });
});

describe("transport limits", () => {
  for (const transport of ["websocket", "polling"]) {
    test(`${transport}: a frame over 2x max_payload_bytes closes that connection only`, async () => {
      const huge = await connect(host.url, { auth: { user: unique("huge") }, transports: [transport] });
      try {
        // Its own room: the observer would otherwise see this user go offline.
        const hugeRoom = unique("huge-room");
        await emitAckOk(huge, "join", { room: hugeRoom });
        const hugeEvents = collectAll(huge);
        const gone = disconnected(huge).catch((error) => {
          throw new Error(`${error.message}; it received ${JSON.stringify(hugeEvents).slice(0, 300)}`);
        });
        huge.emit("send_message", { room: hugeRoom, text: "h".repeat(3 * MAX_PAYLOAD) });
        const reason = await gone;
        assert.match(reason, /transport close|transport error|parse error/, `disconnect reason ${reason}`);
        await assertOthersUnaffected();
        // The server still accepts new connections.
        const fresh = await connect(host.url, { auth: { user: unique("fresh") }, transports: [transport] });
        await emitAckOk(fresh, "join", { room: hugeRoom });
        fresh.close();
      } finally {
        huge.close();
      }
    });
  }
});

describe("binary attachments", () => {
  // An event's attachments wait, held by the node, until the last one comes:
  // a client declaring one more than it sent had the node hold 10 MB per
  // connection (socketioxide's bound) for as long as it stayed.
  for (const [what, send] of [
    [
      "more bytes than 2x max_payload_bytes",
      (ws) => {
        ws.send(`453-["send_message",{"_placeholder":true,"num":0}]`);
        ws.send(Buffer.alloc(1.5 * MAX_PAYLOAD, 1));
        ws.send(Buffer.alloc(1.5 * MAX_PAYLOAD, 2));
      },
    ],
    ["more than 1,000 of them", (ws) => ws.send(`451001-["send_message",{"_placeholder":true,"num":0}]`)],
  ]) {
    test(`an event declaring ${what} closes its connection; others are unaffected`, async () => {
      const raw = await rawSocket();
      try {
        send(raw.ws);
        await waitFor(() => raw.state.closed, TIMEOUT_MS, "the connection closed");
        await assertOthersUnaffected();
      } finally {
        raw.ws.close();
      }
    });
  }
});

/**
 * A raw Engine.IO v4 WebSocket client. Collects text frames; answers pings.
 */
async function rawSocket(timeout = TIMEOUT_MS) {
  const url = `${host.url.replace(/^http/, "ws")}/socket.io/?EIO=4&transport=websocket`;
  const ws = new WebSocket(url);
  const frames = [];
  const state = { closed: false, closeCode: undefined, closeReason: undefined, errors: [] };
  ws.on("message", (data, isBinary) => {
    const text = isBinary ? `<binary ${data.length}>` : data.toString();
    if (text === "2") ws.send("3");
    frames.push(text);
  });
  ws.on("close", (code, reason) => {
    state.closed = true;
    state.closeCode = code;
    state.closeReason = reason.toString();
  });
  ws.on("error", (error) => state.errors.push(error.message));
  await waitFor(() => frames.some((f) => f.startsWith("0")) || state.closed, timeout, "the Engine.IO open packet");
  assert.ok(!state.closed, `raw socket closed before open: ${state.closeCode}`);
  const open = JSON.parse(frames.find((f) => f.startsWith("0")).slice(1));
  assert.equal(typeof open.sid, "string", `open packet ${JSON.stringify(open)}`);
  ws.send("40");
  await waitFor(() => frames.some((f) => f.startsWith("40")), timeout, () => `the Socket.IO connect packet (frames ${JSON.stringify(frames)})`);
  return { ws, frames, state };
}

describe("raw WebSocket", () => {
  test("handshake, then a valid event with an ack, by hand", async () => {
    const raw = await rawSocket();
    try {
      const rawRoom = unique("raw");
      raw.ws.send(`421["join",${JSON.stringify({ room: rawRoom })}]`);
      await waitFor(() => raw.frames.some((f) => f.startsWith("431")), TIMEOUT_MS, () => `the join ack (frames ${JSON.stringify(raw.frames)})`);
      const ack = JSON.parse(raw.frames.find((f) => f.startsWith("431")).slice(3));
      assert.deepEqual(ack, [{ room: rawRoom, history: [], members: 1 }]);
    } finally {
      raw.ws.close();
    }
  });

  test("a malformed event packet: the server stays up, the raw client is dropped, others are unaffected", async () => {
    const raw = await rawSocket();
    try {
      const framesBefore = raw.frames.length;
      raw.ws.send('42["send_message",{bad');
      // Observed behaviour: socketioxide's parser rejects the packet, the
      // server sends the Engine.IO close packet `1` and closes the WebSocket.
      // The client gets no `error` event: there is no event to name.
      await waitFor(
        () => raw.state.closed,
        TIMEOUT_MS,
        () => `the raw socket to be closed (frames after the bad packet ${JSON.stringify(raw.frames.slice(framesBefore))})`,
      );
      const after = raw.frames.slice(framesBefore).filter((f) => f !== "2");
      assert.deepEqual(after, ["1"], "frames after the malformed packet: only Engine.IO `close`");
      await assertOthersUnaffected();
      assert.equal(observer.connected, true);
      assert.equal(talker.connected, true);
      assert.equal(bad.connected, true);
      assert.ok(host.alive(), "the host died");
      // The server still takes new raw and regular connections.
      const again = await rawSocket();
      again.ws.close();
      const res = await fetch(`${host.url}/healthz`);
      assert.equal(res.status, 200);
    } finally {
      raw.ws.close();
    }
  });

  test("other malformed frames: unknown packet types and garbage", async () => {
    for (const frame of ["49", "4x", '42{"not":"an array"}', "42[]", "42[42]", "hello", "7"]) {
      const raw = await rawSocket();
      try {
        raw.ws.send(frame);
        // Give the server time to react, then check the server is still fine.
        await quiet(150);
        await assertOthersUnaffected();
        assert.ok(host.alive(), `the host died on ${frame}`);
      } finally {
        raw.ws.close();
      }
    }
  });
});
