// Loopback load run: the memory a node holds for clients that stop reading.
// `--readers` raw Socket.IO sockets join one room and stop reading (the
// kernel's buffers fill, then the server's writes block); one member that
// reads floods the room through the greedy test plugin (100 emits of 1 KB a
// call, call after call). Reports the server's RSS per stuck reader once they
// are connected, its peak per stuck reader during the flood, how long the
// server took to disconnect them all (as too slow: `max_outbound_bytes`,
// `write_timeout_ms`), and the RSS once they are gone.
//
//   node tests/load/stuck_readers.mjs [--readers 1000] [--seconds 20] [--rounds 2]
//
// Each round starts over with new readers on the same server: a second
// round that needs no more memory than the first shows the first's was
// given back; the server's RSS 15 s after a round shows what the allocator
// returned to the OS, its allocated bytes what is still in use.
//
// Readers connect from 127.0.0.2 .. 127.0.0.9 in turn, so the per-address
// connection limits keep their defaults. Uses target/release/switchboard (or
// $SWITCHBOARD_BIN).
import { parseArgs } from "node:util";

import { io } from "socket.io-client";

import { manifestToml, metric, sleep, wasm, writeManifest } from "../e2e/harness.mjs";
import { openRawSocket } from "../e2e/raw_socket.mjs";
import { memoryKib, resetPeak } from "./proc.mjs";
import { UNLIMITED_SOCKET, serveRelease } from "./servers.mjs";

const { values } = parseArgs({
  options: {
    readers: { type: "string", default: "1000" },
    seconds: { type: "string", default: "20" },
    rounds: { type: "string", default: "2" },
  },
});
const READERS = Number(values.readers);
const ADDRESSES = 8;
const NAMESPACE = "/greedy";
const ROOM = { prefix: "stuck", count: 1 }; // the room `stuck0`

const manifest = manifestToml({
  plugins: [{ name: "greedy", path: wasm("greedy"), namespaces: [NAMESPACE], events: ["join_rooms", "flood"] }],
  namespaces: { [NAMESPACE]: UNLIMITED_SOCKET },
});
const server = await serveRelease(writeManifest(manifest));
const { port } = new URL(server.url);
const pid = server.child.pid;
await sleep(1000);
const empty = memoryKib(pid).rss;

/** One round: readers connect, stop reading, are flooded until the server has disconnected them all. */
async function round(number) {
  const before = memoryKib(pid).rss;
  const readers = [];
  for (let index = 0; index < READERS; index++) {
    const reader = await openRawSocket(Number(port), NAMESPACE, { localAddress: `127.0.0.${2 + (index % ADDRESSES)}` });
    await reader.emitWithAck("join_rooms", ROOM);
    readers.push(reader);
  }
  await sleep(2000);
  const connected = memoryKib(pid).rss;

  const flooder = io(`${server.url}${NAMESPACE}`, { transports: ["websocket"], forceNew: true });
  await new Promise((resolve) => flooder.once("connect", resolve));
  await flooder.emitWithAck("join_rooms", ROOM);
  let received = 0;
  flooder.on("flood", () => received++);

  const disconnectedBefore = await slowDisconnects();
  const stoppedAt = performance.now();
  for (const reader of readers) reader.pause();
  resetPeak(pid);
  let flooding = true;
  let sent = 0;
  const flood = (async () => {
    while (flooding) {
      const reply = await flooder.emitWithAck("flood", { room: "stuck0", count: 100, size: 1000 });
      sent += reply.sent ?? 0;
    }
  })();
  const end = performance.now() + Number(values.seconds) * 1000;
  let disconnected = 0;
  let firstDisconnect;
  let lastDisconnect;
  while (performance.now() < end && disconnected < READERS) {
    await sleep(100);
    const now = (await slowDisconnects()) - disconnectedBefore;
    if (now > disconnected) {
      firstDisconnect ??= performance.now() - stoppedAt;
      lastDisconnect = performance.now() - stoppedAt;
    }
    disconnected = now;
  }
  flooding = false;
  await flood;
  const peak = memoryKib(pid).peak;
  flooder.close();
  for (const reader of readers) reader.close();
  await sleep(3000);
  const after = memoryKib(pid).rss;
  const allocated = await metric(server.url, "switchboard_memory_allocated_bytes", {});
  // The allocator returns pages unused for 10 s.
  await sleep(12_000);
  const settled = memoryKib(pid).rss;
  const kib = (value) => (value / READERS).toFixed(1);
  return {
    round: number,
    "server MiB before": (before / 1024).toFixed(1),
    "KiB per reader, connected": kib(connected - before),
    "KiB per reader, peak while stuck": kib(peak - before),
    "server MiB once they are gone": (after / 1024).toFixed(1),
    "allocated MiB then": (allocated / 2 ** 20).toFixed(1),
    "server MiB 15 s later": (settled / 1024).toFixed(1),
    "disconnected as slow": `${disconnected}/${READERS}`,
    "first / last disconnect s": disconnected
      ? `${(firstDisconnect / 1000).toFixed(2)} / ${(lastDisconnect / 1000).toFixed(2)}`
      : "-",
    "emits sent / received by the reading member": `${sent} / ${received}`,
  };
}

// A reader that stopped reading does not see its connection close either: the server's count does.
const slowDisconnects = () => metric(server.url, "switchboard_disconnects_total", { reason: "slow_client" });
const rows = [];
for (let number = 1; number <= Number(values.rounds); number++) rows.push(await round(number));
console.log(`${READERS} stuck readers in one room; a member flooding it with 1 KB emits; idle server ${(empty / 1024).toFixed(1)} MiB`);
console.table(rows);
await server.stop();
process.exit(0);
