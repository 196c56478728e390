// Plugins in other languages: the echo contract built with componentize-js
// (plugins/js/echo) and componentize-py (plugins/python/echo), each served by
// the real host, runs the same suite as its Rust twin (plugins/testing/echo).

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import {
  closeAllSockets,
  collect,
  connect,
  emitAck,
  emitAckError,
  quiet,
  startHost,
  stopCleanly,
  unique,
  waitFor,
  wasm,
} from "./harness.mjs";

const ECHO_EVENTS = ["join", "say", "echo"];

const IMPLEMENTATIONS = [
  { language: "Rust", plugin: "echo" },
  { language: "JavaScript", plugin: "echo_js" },
  { language: "Python", plugin: "echo_py" },
];

// The JavaScript and Python components carry their language's runtime
// (SpiderMonkey, CPython): 12 and 18 MB that a debug host with a cold code
// cache takes 15 to 45 s to compile (scripts/test.sh fills the cache first).
const COMPILE_TIMEOUT_MS = 180_000;

for (const { language, plugin } of IMPLEMENTATIONS) {
  describe(`the echo contract in ${language} (${plugin}.wasm)`, () => {
    let host;

    before(
      async () => {
        host = await startHost({
          plugins: [{ name: plugin, path: wasm(plugin), namespaces: ["/"], events: ECHO_EVENTS }],
          startupTimeout: COMPILE_TIMEOUT_MS,
        });
      },
      { timeout: COMPILE_TIMEOUT_MS + 10_000 },
    );

    after(async () => {
      closeAllSockets();
      if (host) await stopCleanly(host);
    });

    test("join puts the socket in the room and acks the member count", async () => {
      const room = unique("lobby");
      const [a, b] = await Promise.all([connect(host.url), connect(host.url)]);
      assert.deepEqual(await emitAck(a, "join", { room }), { room, members: 1 });
      assert.deepEqual(await emitAck(b, "join", { room }), { room, members: 2 });
      // Joining again changes nothing.
      assert.deepEqual(await emitAck(b, "join", { room }), { room, members: 2 });
    });

    test("say reaches every member of the room exactly once, and no one else", async () => {
      const room = unique("room");
      const elsewhere = unique("elsewhere");
      const [speaker, listener, stranger, outsider] = await Promise.all(
        Array.from({ length: 4 }, () => connect(host.url)),
      );
      await emitAck(speaker, "join", { room });
      await emitAck(listener, "join", { room });
      await emitAck(stranger, "join", { room: elsewhere });
      const heard = {
        speaker: collect(speaker, "said"),
        listener: collect(listener, "said"),
        stranger: collect(stranger, "said"),
        outsider: collect(outsider, "said"),
      };

      // Non-ASCII text survives each language's JSON encoding.
      const text = "héllo ✓ \"quoted\" \\ 🎉";
      assert.deepEqual(await emitAck(speaker, "say", { room, text }), { count: 1 });
      const expected = { from: speaker.id, text };
      await waitFor(
        () => heard.speaker.length >= 1 && heard.listener.length >= 1,
        undefined,
        () => `both members hear it; got ${JSON.stringify(heard)}`,
      );
      await quiet();
      assert.deepEqual(heard.speaker, [expected]);
      assert.deepEqual(heard.listener, [expected]);
      assert.deepEqual(heard.stranger, []);
      assert.deepEqual(heard.outsider, []);
    });

    test("say counts each room's messages in state, across calls and sockets", async () => {
      const room = unique("counted");
      const other = unique("other");
      const [a, b] = await Promise.all([connect(host.url), connect(host.url)]);
      await emitAck(a, "join", { room });
      await emitAck(b, "join", { room });
      assert.deepEqual(await emitAck(a, "say", { room, text: "one" }), { count: 1 });
      assert.deepEqual(await emitAck(b, "say", { room, text: "two" }), { count: 2 });
      assert.deepEqual(await emitAck(a, "say", { room, text: "three" }), { count: 3 });
      assert.deepEqual(await emitAck(b, "say", { room: other, text: "first" }), { count: 1 });
      // A socket that reconnects finds the count where it was: it lives in
      // state, not in the instance.
      a.close();
      const again = await connect(host.url);
      assert.deepEqual(await emitAck(again, "say", { room, text: "four" }), { count: 4 });
    });

    test("echo acks its payload unchanged, binary attachments included", async () => {
      const socket = await connect(host.url);
      const data = {
        text: "ünïcode ✓",
        numbers: [0, -1, 0.1, 1e300, 9007199254740991],
        nested: { empty: {}, list: [], nothing: null, yes: true },
      };
      assert.deepEqual(await emitAck(socket, "echo", data), data);
      assert.deepEqual(await emitAck(socket, "echo", "just a string"), "just a string");

      const reply = await emitAck(socket, "echo", { blob: Buffer.from([0, 1, 2, 255]), label: "bytes" });
      assert.equal(reply.label, "bytes");
      assert.deepEqual([...new Uint8Array(reply.blob)], [0, 1, 2, 255]);
    });

    test("a payload of the wrong shape fails with invalid_payload and emits nothing", async () => {
      const room = unique("strict");
      const socket = await connect(host.url);
      await emitAck(socket, "join", { room });
      const heard = collect(socket, "said");

      const missingText = await emitAckError(socket, "say", { room });
      assert.equal(missingText.code, "invalid_payload");
      assert.match(missingText.message, /`text`/);
      const numberText = await emitAckError(socket, "say", { room, text: 42 });
      assert.equal(numberText.code, "invalid_payload");
      assert.match(numberText.message, /`text`/);
      const notAnObject = await emitAckError(socket, "join", "lobby");
      assert.equal(notAnObject.code, "invalid_payload");

      await quiet();
      assert.deepEqual(heard, []);
      // The failed calls counted nothing.
      assert.deepEqual(await emitAck(socket, "say", { room, text: "valid" }), { count: 1 });
    });

    test("a host call's error reaches the client with the host's code", async () => {
      const socket = await connect(host.url);
      const reserved = await emitAckError(socket, "join", { room: `socket:${socket.id}` });
      assert.equal(reserved.code, "reserved_room");
      const empty = await emitAckError(socket, "join", { room: "" });
      assert.equal(empty.code, "invalid_room");
    });
  });
}
