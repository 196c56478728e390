// No client can act as, or listen as, another through what it learns of it:
// a socket's public id is not the Engine.IO session id that authenticates its
// long-polling requests, and the host's rooms (`socket:{id}`, `user:{id}`)
// cannot be joined through a plugin.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import {
  chatPlugin,
  closeAllSockets,
  collect,
  collectAll,
  connect,
  emitAckError,
  emitAckOk,
  logged,
  manifestToml,
  quiet,
  startHost,
  unique,
  waitFor,
} from "./harness.mjs";
import { HS256_AUTH, tokenFor } from "./tokens.mjs";

const API_TOKEN = "socket-ids-test-token";

let host;

before(async () => {
  host = await startHost({
    manifest:
      manifestToml({ plugins: [chatPlugin()] }) +
      HS256_AUTH +
      `\n[namespaces."/"]\nanonymous = true\n` +
      `\n[api]\ntoken = "${API_TOKEN}"\n`,
    env: { RUST_LOG: "info" },
  });
});

after(async () => {
  closeAllSockets();
  if (host) {
    const { code } = await host.stop();
    assert.equal(code, 0, `host exit code; stderr:\n${host.stderr().slice(-2000)}`);
  }
});

async function api(method, path, body) {
  const response = await fetch(`${host.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${API_TOKEN}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

const roomMembers = async (room) =>
  (await api("GET", `/api/v1/namespaces/%2F/rooms/${encodeURIComponent(room)}`)).body.members;

/** An Engine.IO long-polling POST of one Socket.IO packet into session `sid`. */
async function pollingPost(sid, packet) {
  const response = await fetch(`${host.url}/socket.io/?EIO=4&transport=polling&sid=${encodeURIComponent(sid)}`, {
    method: "POST",
    headers: { "content-type": "text/plain;charset=UTF-8" },
    body: packet,
  });
  return { status: response.status, body: await response.text() };
}

describe("socket ids are not credentials", () => {
  test("a socket's id differs from its session id, and a polling POST with it is refused", async () => {
    const room = unique("hijack");
    const target = unique("target");
    // No `auth.user`: chat shows such a sender by socket id, so everyone in
    // the room learns the victim's id.
    const victim = await connect(host.url, { transports: ["polling"] });
    const attacker = await connect(host.url, { auth: { user: unique("mallory") } });
    const sessionId = victim.io.engine.id;
    assert.ok(victim.id && sessionId, "the client knows both ids");
    assert.notEqual(victim.id, sessionId, "the socket id is the Engine.IO session id");

    await emitAckOk(victim, "join", { room });
    await emitAckOk(attacker, "join", { room });
    const seen = collect(attacker, "message");
    await emitAckOk(victim, "send_message", { room, text: "hello" });
    await waitFor(() => seen.length === 1, undefined, "the victim's message");
    assert.equal(seen[0].from, victim.id, "plugins see the socket id the client has");
    assert.deepEqual((await roomMembers(room)).sort(), [victim.id, attacker.id].sort());

    // What an attacker who saw the id would send as the victim.
    const forged = await pollingPost(victim.id, `42["join",{"room":"${target}"}]`);
    assert.notEqual(forged.status, 200, `the forged POST was accepted: ${forged.body}`);
    await quiet();
    assert.deepEqual(await roomMembers(target), [], "the victim was put in the attacker's room");

    // The victim is unaffected and still heard.
    assert.ok(victim.connected);
    await emitAckOk(victim, "send_message", { room, text: "still here" });
    await waitFor(() => seen.length === 2, undefined, "the victim's second message");
    assert.equal(seen[1].text, "still here");

    // Its whole life, disconnect included, is logged without the session id.
    victim.close();
    await waitFor(async () => (await roomMembers(room)).length === 1, undefined, "the victim gone");
    assert.ok(!host.stderr().includes(sessionId), "the session id appears in the log");
    assert.ok(!host.stdout().includes(sessionId), "the session id appears on stdout");
  });

  test("each namespace connection gets its own socket id", async () => {
    const socket = await connect(host.url);
    const again = await connect(host.url);
    assert.notEqual(socket.id, again.id);
    assert.notEqual(socket.id, socket.io.engine.id);
    assert.notEqual(again.id, again.io.engine.id);
  });
});

describe("the host's rooms", () => {
  test("a client cannot join another socket's room or another user's room through a plugin", async () => {
    const victimUser = unique("victim");
    const victim = await connect(host.url, { auth: { token: tokenFor(victimUser) } });
    const attacker = await connect(host.url, { auth: { token: tokenFor(unique("mallory")) } });
    const heard = collectAll(attacker);

    for (const room of [`socket:${victim.id}`, `user:${victimUser}`]) {
      const refused = await emitAckError(attacker, "join", { room });
      assert.equal(refused.code, "reserved_room", JSON.stringify(refused));
      const leave = await emitAckError(attacker, "leave", { room });
      assert.equal(leave.code, "reserved_room", JSON.stringify(leave));
    }
    // A room named after the bare id is an ordinary room with no one else in it.
    const plain = await emitAckOk(attacker, "join", { room: victim.id });
    assert.equal(plain.members, 1);

    const direct = collect(victim, "direct");
    const toSocket = await api("POST", "/api/v1/emit", { namespace: "/", to: { socket: victim.id }, event: "direct", data: 1 });
    const toUser = await api("POST", "/api/v1/emit", { namespace: "/", to: { user: victimUser }, event: "direct", data: 2 });
    assert.equal(toSocket.status, 202, JSON.stringify(toSocket.body));
    assert.equal(toUser.status, 202, JSON.stringify(toUser.body));
    await waitFor(() => direct.length === 2, undefined, "both direct events");
    await quiet();
    assert.deepEqual(direct, [1, 2], "the victim got each event once, in order");
    assert.deepEqual(heard.named("direct"), [], "the attacker received what was addressed to the victim");
    await logged(host, /reserved_room|the host's rooms/);
  });

  test("room names are bounded and printable", async () => {
    const socket = await connect(host.url, { auth: { user: unique("namer") } });
    for (const room of ["x".repeat(129), "two\nlines", "\u001b[31mred"]) {
      const refused = await emitAckError(socket, "join", { room });
      assert.equal(refused.code, "invalid_room", JSON.stringify(refused));
      assert.ok(!refused.message.includes("\n"), refused.message);
    }
    await emitAckOk(socket, "join", { room: "y".repeat(128) });
    const emit = await api("POST", "/api/v1/emit", { namespace: "/", to: { room: "z".repeat(200) }, event: "e", data: 1 });
    assert.equal(emit.status, 400);
    assert.equal(emit.body.error.code, "invalid_room");
  });
});
