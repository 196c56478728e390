// The DogMatch flow against two nodes: Alice on node A and Bob on node B; Bob
// swipes right on Alice, who liked him already, so the backend sends
// `new_match` to both. Then Bob goes offline, gets a message, and receives it
// when he reconnects.
//   node swipe.mjs http://127.0.0.1:3201 http://127.0.0.1:3202

import { createRequire } from "node:module";

import { signHs256 } from "../../scripts/mint-token.mjs";

const require = createRequire(new URL("../../tests/package.json", import.meta.url));
const { io } = require("socket.io-client");

const SECRET = "notifications-example-secret-of-32-bytes-or-more";
const BACKEND_TOKEN = "notifications-example-token";
const [nodeA, nodeB] = process.argv.slice(2);

const token = (user) => signHs256({ sub: user, exp: Math.floor(Date.now() / 1000) + 3600 }, SECRET);

const nextEvent = (socket, event) => new Promise((resolve) => socket.once(event, resolve));

/** Resolves to `{ socket, inbox }`: `inbox` is the first notification, which may come right after connect. */
function connect(node, user) {
  const socket = io(`${node}/notifications`, { auth: { token: token(user) }, reconnection: false });
  const inbox = nextEvent(socket, "notification");
  socket.on("notification", (n) => console.log(`  ${user} (${node}) got ${n.type} #${n.id}: ${JSON.stringify(n.data)}`));
  socket.on("user_online", ({ user_id }) => console.log(`  ${user} sees ${user_id} online`));
  socket.on("user_offline", ({ user_id }) => console.log(`  ${user} sees ${user_id} offline`));
  return new Promise((resolve, reject) => {
    socket.once("connect", () => resolve({ socket, inbox }));
    socket.once("connect_error", reject);
  });
}

/** What a backend does: one authenticated HTTP call to any node. */
async function backend(node, method, path, body) {
  const response = await fetch(`${node}${path}`, {
    method,
    headers: { authorization: `Bearer ${BACKEND_TOKEN}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${await response.text()}`);
  return response.json();
}

const timeout = setTimeout(() => {
  console.error("timed out: the demo did not complete within 10 s");
  process.exit(1);
}, 10_000);

await backend(nodeA, "PUT", "/apps/notifications/contacts/alice", { contacts: ["bob"] });
await backend(nodeA, "PUT", "/apps/notifications/contacts/bob", { contacts: ["alice"] });

console.log(`Alice connects to ${nodeA}, Bob to ${nodeB}`);
const { socket: alice, inbox: aliceInbox } = await connect(nodeA, "alice");
const { socket: bob, inbox: bobInbox } = await connect(nodeB, "bob");

console.log("Bob swipes right on Alice: it's a match (the backend calls node B)");
const matched = [aliceInbox, bobInbox];
for (const [user, other] of [["alice", "bob"], ["bob", "alice"]]) {
  await backend(nodeB, "POST", "/apps/notifications/notify", { user_id: user, type: "new_match", data: { with: other } });
}
await Promise.all(matched);

console.log("Bob goes offline; Alice writes to him");
const offline = nextEvent(alice, "user_offline");
bob.close();
await offline;
const stored = await backend(nodeA, "POST", "/apps/notifications/notify", {
  user_id: "bob",
  type: "message",
  data: { from: "alice", text: "walk at 6?" },
});
console.log(`  stored as #${stored.id} (bob online: ${stored.online})`);

console.log("Bob reconnects, to node A this time");
const { socket: bobAgain, inbox: delivered } = await connect(nodeA, "bob");
await delivered;
console.log(`  bob's unread count: ${(await bobAgain.emitWithAck("unread_count", null)).unread}`);

clearTimeout(timeout);
alice.close();
bobAgain.close();
console.log("done");
