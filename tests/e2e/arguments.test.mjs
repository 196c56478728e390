// WIT 0.2: an event's arguments reach a plugin one by one, as many as the
// client sent, and go back as many as the plugin gives: events, acks and
// emits, with binary at any depth, JSON kept as written. A plugin built
// against WIT 0.1.1 keeps loading and sees payloads as 0.1 documented them.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import WebSocket from "ws";

import { closeAllSockets, collect, connect, manifestToml, openSocket, startHost, unique, waitFor, wasm } from "./harness.mjs";

const hosts = [];
let plain;
let recovering;

const API_TOKEN = "arguments-test-token";

async function host(server) {
  const started = await startHost({
    manifest: `${manifestToml({
      server,
      plugins: [
        { name: "conformance", path: wasm("conformance"), namespaces: ["/"], events: ["message", "message-with-ack", "sum"] },
        {
          name: "legacy",
          path: wasm("legacy"),
          namespaces: ["/legacy"],
          events: ["echo", "relay", "count", "room"],
          routes: [{ method: "GET", path: "/apps/legacy", auth: "none" }],
        },
      ],
    })}\n[api]\ntoken = "${API_TOKEN}"\n`,
  });
  hosts.push(started);
  return started;
}

before(async () => {
  [plain, recovering] = await Promise.all([host({ "recovery.enabled": false }), host({})]);
});

after(async () => {
  closeAllSockets();
  await Promise.all(hosts.map((started) => started.stop()));
});

/** Resolves to the arguments of the next `event` on `socket`. */
function nextArguments(socket, event) {
  return new Promise((resolve) => socket.once(event, (...args) => resolve(args)));
}

/** Sends `args` with an ack callback and resolves to the ack's arguments. */
function ackArguments(socket, event, ...args) {
  return new Promise((resolve) => socket.emit(event, ...args, (...acked) => resolve(acked)));
}

/**
 * A raw WebSocket on the default namespace: sends `frame` once connected
 * and resolves to the first text frame that starts with `prefix`.
 */
function rawRoundTrip(started, frame, prefix) {
  const ws = new WebSocket(`ws://127.0.0.1:${started.port}/socket.io/?EIO=4&transport=websocket`);
  return new Promise((resolve, reject) => {
    ws.on("error", reject);
    ws.on("message", (data) => {
      const text = String(data);
      if (text.startsWith("0")) return ws.send("40");
      if (text.startsWith("40")) return ws.send(frame);
      if (text.startsWith(prefix)) {
        ws.close();
        resolve(text);
      }
    });
  });
}

describe("any number of arguments", () => {
  test("an event's arguments come back as they were sent: none, one, several, binary among them", async () => {
    const socket = await connect(plain.url);
    const cases = [[], [1], [1, "2", { three: [3, null, true] }], [[1, 2]], ["x", Buffer.from([1, 2, 3]), { nested: { bytes: Buffer.from([4]) } }]];
    for (const args of cases) {
      const back = nextArguments(socket, "message-back");
      socket.emit("message", ...args);
      assert.deepEqual(await back, args, `${args.length} argument(s)`);
    }
  });

  test("an ack carries as many arguments as the plugin gives", async () => {
    const socket = await connect(plain.url);
    assert.deepEqual(await ackArguments(socket, "message-with-ack", 1, "2", { three: 3 }), [1, "2", { three: 3 }]);
    assert.deepEqual(await ackArguments(socket, "message-with-ack"), []);
    assert.deepEqual(await ackArguments(socket, "message-with-ack", [1, 2]), [[1, 2]], "an array is one argument");
    const bytes = Buffer.from([9, 8, 7]);
    assert.deepEqual(await ackArguments(socket, "message-with-ack", bytes, "tail"), [bytes, "tail"]);
  });

  test("the SDK reads several arguments as one tuple or list, and sends several", async () => {
    const socket = await connect(plain.url);
    assert.deepEqual(await ackArguments(socket, "sum", 1, 2, 3.5), [6.5, 3]);
    assert.deepEqual(await ackArguments(socket, "sum"), [0, 0]);
    const [refused] = await ackArguments(socket, "sum", 1, "two");
    assert.equal(refused.error.code, "invalid_payload");
    assert.match(refused.error.message, /^invalid arguments: `\[1\]`/);
  });

  test("the HTTP API emits one argument as `data`, none or several as `args`", async () => {
    const socket = await connect(plain.url);
    const emit = (body) =>
      fetch(`${plain.url}/api/v1/emit`, {
        method: "POST",
        headers: { authorization: `Bearer ${API_TOKEN}`, "content-type": "application/json" },
        body: JSON.stringify({ namespace: "/", to: { socket: socket.id }, event: "pushed", ...body }),
      });
    const received = [];
    socket.on("pushed", (...args) => received.push(args));
    assert.equal((await emit({ args: [1, "two", { three: 3 }] })).status, 202);
    assert.equal((await emit({ args: [] })).status, 202);
    assert.equal((await emit({ data: [1, 2] })).status, 202);
    for (const body of [{}, { data: 1, args: [1] }]) {
      const refused = await emit(body);
      assert.equal(refused.status, 400);
      assert.equal((await refused.json()).error.code, "bad_request");
    }
    await waitFor(() => received.length === 3, undefined, "the three emits");
    assert.deepEqual(received, [[1, "two", { three: 3 }], [], [[1, 2]]]);
  });

  test("JSON goes through byte for byte: key order, spacing, number forms", async () => {
    const frame = `42["message",{"b":1,"a":[1.50,2e3,-0]}, "second" ,{}]`;
    assert.equal(await rawRoundTrip(plain, frame, `42["message-back"`), `42["message-back",{"b":1,"a":[1.50,2e3,-0]},"second",{}]`);
  });

  test("binary at any depth comes back with the object's keys in their order", async () => {
    const socket = await connect(plain.url);
    const back = nextArguments(socket, "message-back");
    socket.emit("message", { zebra: Buffer.from([1]), apple: 2, mango: { kiwi: Buffer.from([2]), fig: 3 } });
    const [received] = await back;
    assert.deepEqual(Object.keys(received), ["zebra", "apple", "mango"]);
    assert.deepEqual(Object.keys(received.mango), ["kiwi", "fig"]);
    assert.deepEqual([...received.zebra, ...received.mango.kiwi], [1, 2]);
  });

  test("with recovery on, the offset follows the arguments as one more", async () => {
    const socket = await connect(recovering.url);
    const back = nextArguments(socket, "message-back");
    socket.emit("message", 1, "2");
    const args = await back;
    assert.equal(args.length, 3);
    assert.deepEqual(args.slice(0, 2), [1, "2"]);
    assert.equal(typeof args[2], "string", "the offset");
  });

  test("each socket is sent its handshake auth, from on-connected", async () => {
    const socket = openSocket(plain.url, { auth: { z: 1, a: [true] } });
    assert.deepEqual(await nextArguments(socket, "auth"), [{ z: 1, a: [true] }]);
  });
});

describe("a plugin built against WIT 0.1.1", () => {
  test("loads, and gets an event's arguments as one JSON text: one as is, several as an array, none as null", async () => {
    const socket = await connect(plain.url, { namespace: "/legacy" });
    assert.deepEqual(await ackArguments(socket, "echo", { a: 1 }), [{ a: 1 }]);
    assert.deepEqual(await ackArguments(socket, "echo", 1, "2"), [[1, "2"]]);
    assert.deepEqual(await ackArguments(socket, "echo"), [null]);
  });

  test("its emits, state, rooms, on-connected and HTTP routes work through the adapter", async () => {
    const client = openSocket(plain.url, { namespace: "/legacy" });
    assert.deepEqual(await nextArguments(client, "welcome"), ["0.1.1"]);
    const relayed = nextArguments(client, "relay");
    client.emit("relay", 1, 2);
    assert.deepEqual(await relayed, [[1, 2]], "what it sends is one argument");
    const [first] = await ackArguments(client, "count");
    assert.deepEqual(await ackArguments(client, "count"), [first + 1]);
    const joined = collect(client, "joined");
    client.emit("room", unique("room"));
    await waitFor(() => joined.length === 1, undefined, "the room's `joined`");
    assert.equal(joined[0], client.id);
    const response = await fetch(`${plain.url}/apps/legacy`);
    assert.equal(response.status, 200);
    assert.equal(await response.text(), "0.1.1 plugin: GET /apps/legacy");
  });
});
