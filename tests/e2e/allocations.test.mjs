// What a broadcast costs the allocator: a message is encoded once and every
// recipient's connection writes the same bytes, so the allocations a node
// makes grow with the messages it sends, not with how many receive them.

import assert from "node:assert/strict";
import { after, test } from "node:test";

import { metric, relayPlugin, startHost, stopCleanly, unique, waitFor } from "./harness.mjs";
import { openRawSocket } from "./raw_socket.mjs";

const MEMBERS = 300;
const MESSAGES = 40;
/**
 * Allocations a delivery may cost on average: each message's own (the plugin
 * call, its ack, the encoding) spread over its 300 recipients, 0.32 to 0.47
 * in this debug build. Each recipient copying the message into a frame of its
 * own, boxing its packets and boxing its write made it 3.3 to 3.4.
 */
const MAX_ALLOCATIONS_PER_DELIVERY = 1;

const sockets = [];
let host;

after(async () => {
  for (const socket of sockets) socket.close();
  if (host) await stopCleanly(host);
});

test("a broadcast allocates nothing per recipient", async () => {
  // Without threads' caches, jemalloc counts each allocation as it is made:
  // with them, a thread's are counted when its cache next trades with the
  // arena, so a reading also counted thousands made before the sends (from
  // 0.33 to 1.05 a delivery in successive runs of the same build).
  host = await startHost({ plugins: [relayPlugin()], env: { _RJEM_MALLOC_CONF: "tcache:false" } });
  const port = new URL(host.url).port;
  const room = unique("fanout");
  for (let opened = 0; opened < MEMBERS; opened += 50) {
    sockets.push(...(await Promise.all(Array.from({ length: 50 }, () => openRawSocket(port, "/")))));
  }
  await Promise.all(sockets.map((socket) => socket.emitWithAck("join", { room })));

  const before = await metric(host.url, "switchboard_memory_allocations_total");
  assert.ok(before > 0, "the node reports its allocations");
  for (let sent = 0; sent < MESSAGES; sent += 1) {
    await sockets[0].emitWithAck("send_message", { room, text: `message ${sent}` });
  }
  await waitFor(
    () => sockets.every((socket) => socket.events() === MESSAGES),
    undefined,
    () => `events received: ${sockets.map((socket) => socket.events()).join(" ")}`,
  );
  const allocations = (await metric(host.url, "switchboard_memory_allocations_total")) - before;

  const perDelivery = allocations / (MESSAGES * MEMBERS);
  assert.ok(
    perDelivery < MAX_ALLOCATIONS_PER_DELIVERY,
    `${allocations} allocations for ${MESSAGES * MEMBERS} deliveries: ${perDelivery.toFixed(2)} each`,
  );
});
