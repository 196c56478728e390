// A client that stops reading is disconnected, with a reason its plugins see,
// and is never left connected while it misses events; the emits it could not
// take still succeed, and everyone else gets every event, once, in order.

import assert from "node:assert/strict";
import { mkdirSync, writeFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { after, describe, test } from "node:test";
import WebSocket from "ws";

import {
  TIMEOUT_MS,
  chatPlugin,
  closeAllSockets,
  collect,
  connect,
  emitAckOk,
  faultyPlugin,
  logged,
  manifestToml,
  metric,
  startHost,
  tempDir,
  unique,
  waitFor,
} from "./harness.mjs";

const API_TOKEN = "slow-readers-test-token";
const SLOW_REASON = "client did not keep up with the packets sent to it";

const hosts = [];

after(async () => {
  closeAllSockets();
  for (const host of hosts) {
    const { code } = await host.stop();
    assert.equal(code, 0, `host exit code; stderr:\n${host.stderr().slice(-2000)}`);
  }
});

async function startSlowHost(server) {
  const faultyEvents = ["whoami", "disconnect_reason"];
  const host = await startHost({
    manifest:
      manifestToml({
        // A slow reader's session waits for its client to recover it; this
        // one never comes back, so its plugins see it go once the (short)
        // window is over.
        server: { ...server, "recovery.max_disconnection_ms": 1000 },
        plugins: [chatPlugin(), faultyPlugin({ namespaces: ["/"], events: faultyEvents })],
      }) + `\n[api]\ntoken = "${API_TOKEN}"\n`,
  });
  hosts.push(host);
  return host;
}

/** A raw Socket.IO client on a WebSocket, in `room`, that can stop reading. */
async function joinedRawClient(host, room) {
  const ws = new WebSocket(`${host.url.replace(/^http/, "ws")}/socket.io/?EIO=4&transport=websocket`);
  const frames = [];
  const state = { closed: false };
  ws.on("message", (data) => {
    const text = data.toString();
    if (text === "2") ws.send("3");
    frames.push(text);
  });
  ws.on("close", () => {
    state.closed = true;
  });
  ws.on("error", () => {});
  await waitFor(() => frames.some((f) => f.startsWith("0")), TIMEOUT_MS, "the Engine.IO open packet");
  ws.send("40");
  await waitFor(() => frames.some((f) => f.startsWith("40{")), TIMEOUT_MS, "the Socket.IO connect packet");
  const { sid } = JSON.parse(frames.find((f) => f.startsWith("40{")).slice(2));
  ws.send(`421["join",${JSON.stringify({ room })}]`);
  await waitFor(() => frames.some((f) => f.startsWith("431")), TIMEOUT_MS, "the join ack");
  return {
    socketId: sid,
    state,
    /** The kernel keeps the bytes: the server's writes to it block once its buffers are full. */
    stopReading: () => ws._socket.pause(),
    resumeReading: () => ws._socket.resume(),
  };
}

async function emitToRoom(host, room, data) {
  const response = await fetch(`${host.url}/api/v1/emit`, {
    method: "POST",
    headers: { authorization: `Bearer ${API_TOKEN}`, "content-type": "application/json" },
    body: JSON.stringify({ namespace: "/", to: { room }, event: "bulk", data }),
  });
  return response.status;
}

/**
 * A reader that stopped, a healthy observer in the same room, and `count`
 * emits of `size` bytes to the room: each emit succeeds, the observer gets
 * all of them in order, and the stopped reader is disconnected as slow.
 */
async function floodPastAStoppedReader(host, { count, size }) {
  const room = unique("slow");
  const slow = await joinedRawClient(host, room);
  // With a limit this low, a loaded machine can find the observer too slow
  // for a moment: it then recovers its session and still gets every event
  // once, in order.
  const observer = await connect(host.url, {
    auth: { user: unique("observer") },
    reconnection: true,
    reconnectionDelay: 100,
    reconnectionDelayMax: 200,
  });
  await emitAckOk(observer, "join", { room });
  const received = collect(observer, "bulk");
  slow.stopReading();

  const filler = "x".repeat(size);
  for (let n = 0; n < count; n += 1) {
    assert.equal(await emitToRoom(host, room, { n, filler }), 202, `emit ${n} to a room with a slow member`);
  }
  await waitFor(() => received.length === count, 20000, () => `all ${count} events at the observer (got ${received.length})`);
  assert.deepEqual(
    received.map((event) => event.n),
    [...Array(count).keys()],
    "the observer got every event once, in order",
  );

  const reason = await waitFor(
    async () => (await emitAckOk(observer, "disconnect_reason", { socket_id: slow.socketId })) ?? false,
    20000,
    "the slow reader's on-disconnect",
  );
  assert.equal(reason, SLOW_REASON);
  // Its connection is closed, not just forgotten: once it reads again it sees the end.
  slow.resumeReading();
  await waitFor(() => slow.state.closed, TIMEOUT_MS, "the slow reader's connection to close");
  await waitFor(() => observer.connected, TIMEOUT_MS, "the observer to be connected");
  await emitAckOk(observer, "join", { room: unique("still-served") });
}

describe("clients that stop reading", () => {
  test("past max_outbound_bytes, a reader is disconnected as slow", async () => {
    // A write timeout no flood here reaches: only the byte limit can end it.
    const host = await startSlowHost({ max_payload_bytes: 100000, max_outbound_bytes: 262144, write_timeout_ms: 600000 });
    // More than the kernel's socket buffers take on loopback, so writes block
    // and events wait in the server.
    await floodPastAStoppedReader(host, { count: 300, size: 60000 });
    await logged(host, /slow|keep up/);
  });

  test("with min_write_interval_ms, broadcasts waiting for a stopped reader are bounded the same", async () => {
    // Broadcasts wait in the connection's write buffer, which is written out
    // past 128 KiB: the blocked write then holds the rest in the queue, and
    // the byte limit ends it as without the interval.
    const host = await startSlowHost({
      max_payload_bytes: 100000,
      max_outbound_bytes: 262144,
      write_timeout_ms: 600000,
      min_write_interval_ms: 200,
    });
    await floodPastAStoppedReader(host, { count: 300, size: 60000 });
  });

  test("a write blocked longer than write_timeout_ms disconnects the reader", async () => {
    // A byte limit no flood here reaches: only the blocked write can end it.
    const host = await startSlowHost({ max_outbound_bytes: 1 << 30, write_timeout_ms: 500 });
    await floodPastAStoppedReader(host, { count: 40, size: 900000 });
  });

  test("a client that stops reading an HTTP response is disconnected after write_timeout_ms; one that reads gets it whole", async () => {
    // Larger than the kernel's buffers on loopback take, so the response's
    // writes wait on a client that stops reading.
    const size = 24 << 20;
    const dir = tempDir();
    mkdirSync(path.join(dir, "public"));
    writeFileSync(path.join(dir, "public", "large.bin"), Buffer.alloc(size, 7));
    // Long enough that a client reading as fast as it can never waits that long.
    const host = await startHost({ plugins: [], server: { static_dir: path.join(dir, "public"), write_timeout_ms: 1000 } });
    hosts.push(host);

    const download = (stopped) => {
      const socket = net.connect(host.port, "127.0.0.1");
      const state = { received: 0, ended: false, socket };
      if (stopped) socket.pause();
      socket.on("data", (chunk) => {
        state.received += chunk.length;
      });
      socket.on("close", () => {
        state.ended = true;
      });
      socket.on("error", () => {});
      socket.write("GET /large.bin HTTP/1.1\r\nHost: switchboard\r\nConnection: close\r\n\r\n");
      return state;
    };
    const stopped = download(true);
    await waitFor(
      async () => (await metric(host.url, "switchboard_http_write_timeouts_total")) === 1,
      TIMEOUT_MS,
      "the stopped reader's connection closed for its write timeout",
    );
    // What the kernel buffered before the close, then the end: not the response.
    stopped.socket.resume();
    await waitFor(() => stopped.ended, TIMEOUT_MS, "the stopped reader to see its connection end");
    assert.ok(stopped.received < size, `the stopped reader got ${stopped.received} of ${size} bytes`);

    const reading = download(false);
    await waitFor(() => reading.ended, TIMEOUT_MS, "the reading client's response to end");
    assert.ok(reading.received > size, `the reading client got ${reading.received} bytes, its head and ${size} of body`);
    assert.equal(await metric(host.url, "switchboard_http_write_timeouts_total"), 1);
  });
});
