// What the upstream Socket.IO protocol suite (socketio/socket.io-protocol,
// test-suite/) checks of a server, written here against the test-only
// conformance plugin, frame by frame on a raw WebSocket: CONNECT payloads,
// custom and unknown namespaces, acks with several arguments, binary both
// ways, leaving `/` keeping the Engine.IO session, and long-polling errors and
// closes as Node answers them.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import WebSocket from "ws";

import { manifestToml, sleep, startHost, wasm } from "./harness.mjs";

const PING_INTERVAL_MS = 300;
let started;

before(async () => {
  started = await startHost({
    manifest: manifestToml({
      server: {
        ping_interval_ms: PING_INTERVAL_MS,
        ping_timeout_ms: 200,
        max_payload_bytes: 500000,
        "recovery.enabled": false,
      },
      plugins: [
        {
          name: "conformance",
          path: wasm("conformance"),
          namespaces: ["/", "/custom"],
          events: ["message", "message-with-ack"],
        },
      ],
    }),
  });
});

after(() => started?.stop());

/**
 * An Engine.IO WebSocket session: every frame it receives is kept, in
 * order, PINGs answered; `next()` resolves to the next frame not yet taken
 * (a PING too, when `pings` is set).
 */
async function openSession({ pings = false } = {}) {
  const ws = new WebSocket(`ws://127.0.0.1:${started.port}/socket.io/?EIO=4&transport=websocket`);
  const frames = [];
  let waiting;
  const closed = new Promise((resolve) => ws.on("close", resolve));
  ws.on("message", (data, isBinary) => {
    const frame = isBinary ? Buffer.from(data) : String(data);
    if (frame === "2") ws.send("3");
    if (frame === "2" && !pings) return;
    frames.push(frame);
    waiting?.();
  });
  const session = {
    send: (frame) => ws.send(frame),
    closed,
    close: () => ws.close(),
    async next() {
      while (frames.length === 0) {
        await new Promise((resolve, reject) => {
          waiting = resolve;
          closed.then(() => reject(new Error("the session closed")));
        });
      }
      return frames.shift();
    },
  };
  const open = JSON.parse((await session.next()).slice(1));
  assert.equal(typeof open.sid, "string");
  return session;
}

describe("the Socket.IO protocol, frame by frame", () => {
  test("CONNECT to `/` with a payload: the reply has only a sid, then the plugin's `auth` carries the payload", async () => {
    const session = await openSession();
    session.send('40{"token":"123"}');
    const reply = JSON.parse((await session.next()).slice(2));
    assert.deepEqual(Object.keys(reply), ["sid"]);
    assert.equal(await session.next(), '42["auth",{"token":"123"}]');
    session.close();
  });

  test("a custom namespace, with and without a payload, on one session", async () => {
    const session = await openSession();
    session.send("40/custom,");
    assert.match(await session.next(), /^40\/custom,\{"sid":"[^"]+"\}$/);
    assert.equal(await session.next(), '42/custom,["auth",{}]');
    const other = await openSession();
    other.send('40/custom,{"token":"abc"}');
    assert.match(await other.next(), /^40\/custom,/);
    assert.equal(await other.next(), '42/custom,["auth",{"token":"abc"}]');
    session.close();
    other.close();
  });

  test("an unknown namespace is refused with Node's message, the session kept", async () => {
    const session = await openSession();
    session.send("40/random,");
    assert.equal(await session.next(), '44/random,{"message":"Invalid namespace"}');
    session.send("40");
    assert.match(await session.next(), /^40\{"sid":/);
    session.close();
  });

  test("an event with several arguments comes back with them; an ack carries several", async () => {
    const session = await openSession();
    session.send("40");
    await session.next();
    await session.next();
    session.send('42["message",1,"2",{"3":[true]}]');
    assert.equal(await session.next(), '42["message-back",1,"2",{"3":[true]}]');
    session.send('42456["message-with-ack",1,"2",{"3":[true]}]');
    assert.equal(await session.next(), '43456[1,"2",{"3":[true]}]');
    session.close();
  });

  test("binary both ways: an event and an ack with attachments", async () => {
    const session = await openSession();
    session.send("40");
    await session.next();
    await session.next();
    session.send('451-["message",{"_placeholder":true,"num":0}]');
    session.send(Buffer.from([1, 2, 3]));
    assert.equal(await session.next(), '451-["message-back",{"_placeholder":true,"num":0}]');
    assert.deepEqual([...(await session.next())], [1, 2, 3]);
    session.send('452-789["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]');
    session.send(Buffer.from([4]));
    session.send(Buffer.from([5, 6]));
    assert.equal(await session.next(), '462-789[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]');
    assert.deepEqual([...(await session.next())], [4]);
    assert.deepEqual([...(await session.next())], [5, 6]);
    session.close();
  });

  test("leaving `/` keeps the Engine.IO session: PINGs go on, and `/` can be joined again", async () => {
    const session = await openSession({ pings: true });
    session.send("40");
    await session.next();
    await session.next();
    session.send("41");
    assert.equal(await session.next(), "2", "a PING, not a close");
    assert.equal(await session.next(), "2", "and another, the PONG having been sent");
    session.send("40");
    assert.match(await session.next(), /^40\{"sid":/);
    session.close();
  });

  test("a malformed packet closes the session", async () => {
    for (const frame of ["4abc", "42[", "9"]) {
      const session = await openSession();
      session.send("40");
      await session.next();
      session.send(frame);
      await session.closed;
    }
  });
});

describe("Engine.IO over HTTP long-polling", () => {
  const pollingUrl = (query = "") => `http://127.0.0.1:${started.port}/socket.io/?EIO=4&transport=polling${query}`;

  async function openPollingSession() {
    const response = await fetch(pollingUrl());
    assert.equal(response.status, 200);
    return JSON.parse((await response.text()).slice(1)).sid;
  }

  test("errors are Node's: the code a JSON number, the message its words", async () => {
    const unknownSession = await fetch(pollingUrl("&sid=not-a-session"));
    assert.equal(unknownSession.status, 400);
    assert.deepEqual(await unknownSession.json(), { code: 1, message: "Session ID unknown" });

    const unknownTransport = await fetch(`http://127.0.0.1:${started.port}/socket.io/?EIO=4&transport=carrier-pigeon`);
    assert.equal(unknownTransport.status, 400);
    assert.deepEqual(await unknownTransport.json(), { code: 0, message: "Transport unknown" });
  });

  test("a GET reaching the server after its client's close gets the NOOP it would have had, once", async () => {
    const sid = await openPollingSession();
    const close = await fetch(pollingUrl(`&sid=${sid}`), { method: "POST", body: "1" });
    assert.equal(close.status, 200);

    const late = await fetch(pollingUrl(`&sid=${sid}`));
    assert.equal(late.status, 200);
    assert.equal(await late.text(), "6");

    const gone = await fetch(pollingUrl(`&sid=${sid}`));
    assert.equal(gone.status, 400);
    assert.deepEqual(await gone.json(), { code: 1, message: "Session ID unknown" });
  });

  test("a GET waiting when its client closes gets the NOOP; the next, the unknown session", async () => {
    const sid = await openPollingSession();
    const waiting = fetch(pollingUrl(`&sid=${sid}`));
    await sleep(100);
    const close = await fetch(pollingUrl(`&sid=${sid}`), { method: "POST", body: "1" });
    assert.equal(close.status, 200);
    const answered = await waiting;
    assert.equal(answered.status, 200);
    assert.equal(await answered.text(), "6");

    const gone = await fetch(pollingUrl(`&sid=${sid}`));
    assert.equal(gone.status, 400);
  });
});
