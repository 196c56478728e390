// What an idle connection costs the server: a node holding thousands of
// silent sockets must not hold a buffer or a task's worth of room per socket
// it never uses (hyper's read buffer kept alive by the handshake's headers,
// engineioxide's eagerly allocated channel block, futures sized for calls an
// idle socket is not making, a task per session for its heartbeat).

import assert from "node:assert/strict";
import { after, test } from "node:test";

import { memoryKib } from "../load/proc.mjs";
import { chatPlugin, sleep, startHost } from "./harness.mjs";
import { openRawSocket } from "./raw_socket.mjs";

const CONNECTIONS = 2000;
const PER_ADDRESS = 500;
const SETTLE_MS = 2000;
/**
 * RSS growth per idle connection this debug build must stay under: it holds
 * 12.5 to 12.8 KiB; 14.3 and more with a heartbeat task per session, 16.5
 * with engineioxide's watch channel, Switchboard's tokio channel per socket
 * and every header of the handshake kept; 25 KiB before engineioxide's idle
 * sessions were made smaller, 40 before the handshake head was copied out of
 * hyper's read buffer.
 */
const MAX_KIB_PER_CONNECTION = 14;

const sockets = [];
let host;

after(async () => {
  for (const socket of sockets) socket.close();
  await host?.stop();
});

test(`${CONNECTIONS} idle connections hold under ${MAX_KIB_PER_CONNECTION} KiB each`, async () => {
  host = await startHost({ server: { max_connections: CONNECTIONS + 10 }, plugins: [chatPlugin()] });
  const port = new URL(host.url).port;
  // One first: what the server allocates once is not counted per connection.
  sockets.push(await openRawSocket(port, "/"));
  await sleep(SETTLE_MS);
  const before = memoryKib(host.child.pid).rss;
  for (let opened = 0; opened < CONNECTIONS; opened += 20) {
    const batch = Array.from({ length: 20 }, (_, n) =>
      openRawSocket(port, "/", { localAddress: `127.0.0.${2 + Math.floor((opened + n) / PER_ADDRESS)}` }),
    );
    sockets.push(...(await Promise.all(batch)));
  }
  await sleep(SETTLE_MS);
  const perConnection = (memoryKib(host.child.pid).rss - before) / CONNECTIONS;
  assert.ok(
    perConnection < MAX_KIB_PER_CONNECTION,
    `an idle connection holds ${perConnection.toFixed(1)} KiB of the server's memory`,
  );
});
