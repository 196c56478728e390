// The test-only relay plugin (plugins/testing/relay): the load tools' contract
// as plain socketioxide serves it (tests/load/socketioxide-baseline), which the
// fanout benchmark runs on both servers. What a benchmark compares must be
// the same behaviour: checked here on the real host.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import {
  closeAllSockets,
  collect,
  connect,
  emitAck,
  emitAckError,
  quiet,
  relayPlugin,
  startHost,
  stopCleanly,
  unique,
  waitFor,
} from "./harness.mjs";

describe("the relay contract (relay.wasm)", () => {
  let host;

  before(async () => {
    host = await startHost({
      plugins: [relayPlugin()],
    });
  });

  after(async () => {
    closeAllSockets();
    if (host) await stopCleanly(host);
  });

  test("a message reaches every member of its room once, from a member only", async () => {
    const room = unique("load");
    const [sender, member, outsider] = await Promise.all([
      connect(host.url, { auth: { user: "ada" } }),
      connect(host.url),
      connect(host.url),
    ]);
    assert.deepEqual(await emitAck(sender, "join", { room }), { room, history: [] });
    assert.deepEqual(await emitAck(member, "join", { room }), { room, history: [] });
    const heard = {
      sender: collect(sender, "message"),
      member: collect(member, "message"),
      outsider: collect(outsider, "message"),
    };

    const { id } = await emitAck(sender, "send_message", { room, text: "hello" });
    assert.equal(typeof id, "number");
    await waitFor(() => heard.sender.length && heard.member.length, undefined, () => JSON.stringify(heard));
    assert.equal((await emitAckError(outsider, "send_message", { room, text: "let me in" })).code, "not_in_room");
    await quiet();
    for (const received of [heard.sender, heard.member]) {
      assert.equal(received.length, 1);
      assert.deepEqual({ ...received[0], ts: 0 }, { id, room, from: "ada", text: "hello", ts: 0 });
      assert.equal(typeof received[0].ts, "number");
    }
    assert.deepEqual(heard.outsider, []);

    assert.deepEqual(await emitAck(member, "leave", { room }), { room });
    assert.equal((await emitAckError(member, "send_message", { room, text: "gone" })).code, "not_in_room");
  });

  test("echo acks what it got", async () => {
    const socket = await connect(host.url);
    const data = { text: "ünïcode ✓", list: [1, 2.5, null] };
    assert.deepEqual(await emitAck(socket, "echo", data), { echo: data });
  });
});
