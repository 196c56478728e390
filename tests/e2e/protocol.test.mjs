// Engine.IO / Socket.IO protocol details that clients and test suites rely on,
// checked on the wire with a raw WebSocket.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import WebSocket from "ws";

import { TIMEOUT_MS, chatPlugin, sleep, startHost, waitFor } from "./harness.mjs";

const PING_INTERVAL_MS = 1500;

let host;

before(async () => {
  host = await startHost({ server: { ping_interval_ms: PING_INTERVAL_MS }, plugins: [chatPlugin()] });
});

after(async () => {
  if (host) {
    const { code } = await host.stop();
    assert.equal(code, 0, `host exit code; stderr:\n${host.stderr().slice(-2000)}`);
  }
});

test("the first PING comes one pingInterval after the handshake, not at once", async () => {
  const ws = new WebSocket(`${host.url.replace(/^http/, "ws")}/socket.io/?EIO=4&transport=websocket`);
  const frames = [];
  ws.on("message", (data) => frames.push({ text: data.toString(), at: Date.now() }));
  try {
    await waitFor(() => frames.length > 0, TIMEOUT_MS, "the Engine.IO open packet");
    const open = frames[0];
    assert.equal(open.text[0], "0");
    assert.equal(JSON.parse(open.text.slice(1)).pingInterval, PING_INTERVAL_MS);
    ws.send("40");
    await waitFor(() => frames.length > 1, TIMEOUT_MS, "the Socket.IO connect reply");
    assert.match(frames[1].text, /^40\{"sid":"[^"]+","pid":"[^"]+"\}$/, "the packet after the handshake is the CONNECT reply (with the session id of connection-state recovery)");

    // Nothing else arrives before the interval is over.
    await sleep(PING_INTERVAL_MS * 0.8);
    assert.deepEqual(frames.slice(2).map((frame) => frame.text), [], "packets before the first pingInterval");
    await waitFor(() => frames.length > 2, TIMEOUT_MS, "the first PING");
    assert.equal(frames[2].text, "2");
    assert.ok(
      frames[2].at - open.at >= PING_INTERVAL_MS * 0.9,
      `the first PING came ${frames[2].at - open.at} ms after the handshake; pingInterval is ${PING_INTERVAL_MS}`,
    );
  } finally {
    ws.close();
  }
});

test("the handshake offers an upgrade over polling, none over WebSocket, and the frame limit it enforces", async () => {
  const polling = await fetch(`${host.url}/socket.io/?EIO=4&transport=polling`);
  assert.equal(polling.status, 200);
  const overPolling = JSON.parse((await polling.text()).slice(1));
  assert.deepEqual(overPolling.upgrades, ["websocket"]);
  assert.equal(overPolling.pingInterval, PING_INTERVAL_MS);
  assert.equal(overPolling.pingTimeout, 20000);
  // Twice `max_payload_bytes` (default 1,000,000): larger events get an error, larger frames a close.
  assert.equal(overPolling.maxPayload, 2_000_000);

  const ws = new WebSocket(`${host.url.replace(/^http/, "ws")}/socket.io/?EIO=4&transport=websocket`);
  try {
    const open = await new Promise((resolve, reject) => {
      ws.once("message", (data) => resolve(data.toString()));
      ws.once("error", reject);
    });
    assert.deepEqual(JSON.parse(open.slice(1)).upgrades, []);

    // A frame over `maxPayload` ends the session: its WebSocket is closed.
    const closed = new Promise((resolve) => ws.once("close", resolve));
    ws.send(`42["send_message","${"x".repeat(overPolling.maxPayload)}"]`);
    await closed;
  } finally {
    ws.close();
  }
});

test("a PONG answers the PING it follows: one sent unasked does not stand for the next", async () => {
  const pingIntervalMs = 600;
  const pingTimeoutMs = 200;
  const timed = await startHost({
    server: { ping_interval_ms: pingIntervalMs, ping_timeout_ms: pingTimeoutMs },
    plugins: [chatPlugin()],
  });
  const ws = new WebSocket(`${timed.url.replace(/^http/, "ws")}/socket.io/?EIO=4&transport=websocket`);
  const pings = [];
  ws.on("message", (data) => {
    if (data.toString() !== "2") return;
    pings.push(Date.now());
    // The first PING gets its PONG, and another one a little later; the
    // next PING gets nothing.
    if (pings.length === 1) {
      ws.send("3");
      setTimeout(() => ws.send("3"), pingTimeoutMs / 2);
    }
  });
  const closed = new Promise((resolve) => ws.once("close", resolve));
  try {
    await closed;
    assert.equal(
      pings.length,
      2,
      "the session closed pingTimeout after its second PING went unanswered, before a third was due",
    );
  } finally {
    ws.close();
    await timed.stop();
  }
});
