// Soak: rounds of connection churn against one release node, printing what
// the process holds (jemalloc's allocated and resident bytes, from
// `/metrics`) once each round's sessions have expired. Each round connects
// `--sockets` socket.io-client sockets, half to the chat plugin and half to
// the relay, each joins one of 37 rooms, sends a message (the relay's also an
// echo), then half disconnect and half lose their transport (a recovery
// session each, kept 2 s here). What the plugins keep by design (the chat
// history, 50 messages per room) fills in the first rounds; after that the
// figure should stay flat: growth round after round is a leak.
//
//   node tests/load/soak.mjs [--rounds 10] [--sockets 300]
//
// Uses target/release/switchboard (or $SWITCHBOARD_BIN).
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import { chatPlugin, connect, emitAck, manifestToml, metric, relayPlugin, writeManifest } from "../e2e/harness.mjs";
import { serveRelease } from "./servers.mjs";

const { values } = parseArgs({
  options: { rounds: { type: "string", default: "10" }, sockets: { type: "string", default: "300" } },
});
const ROUNDS = Number(values.rounds);
const SOCKETS = Number(values.sockets);
const ROOMS = 37;

const manifest = writeManifest(
  manifestToml({
    server: { connections_per_second_per_ip: 0, recovery: { max_disconnection_ms: 2000 } },
    plugins: [chatPlugin({ namespaces: ["/"] }), relayPlugin({ namespaces: ["/relay"] })],
  }),
);

const megabytes = (bytes) => (bytes / 1048576).toFixed(1);

const server = await serveRelease(manifest);
try {
  for (let round = 0; round < ROUNDS; round++) {
    const sockets = await Promise.all(
      Array.from({ length: SOCKETS }, (_, i) =>
        connect(server.url, { namespace: i % 2 ? "/relay" : "/", transports: ["websocket"] }),
      ),
    );
    await Promise.all(
      sockets.map(async (socket, i) => {
        const room = `room-${i % ROOMS}`;
        await emitAck(socket, "join", { room });
        if (i % 2) await emitAck(socket, "echo", { round, i, pad: "x".repeat(i) });
        await emitAck(socket, "send_message", { room, text: `hi ${i}` });
      }),
    );
    sockets.forEach((socket, i) => (i % 4 < 2 ? socket.disconnect() : socket.io.engine.close()));
    // Past the sessions' 2 s.
    await sleep(4000);
    const allocated = await metric(server.url, "switchboard_memory_allocated_bytes");
    const resident = await metric(server.url, "switchboard_memory_resident_bytes");
    console.log(`round ${round}: allocated ${megabytes(allocated)} MB, resident ${megabytes(resident)} MB`);
  }
} finally {
  await server.stop();
}
