// The notifications plugin on two real nodes sharing Redis: a backend's
// notification reaches every socket of the user on every node, offline users
// get theirs on the next connect in order and exactly once, and presence is
// cluster-wide.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { collect, connect, disconnected, emitAckOk, openSocket, quiet, unique, waitFor } from "./harness.mjs";
import { API_TOKEN, SHORT_RECOVERY, call, notificationsPlugin, startApps } from "./apps.mjs";
import { tokenFor } from "./tokens.mjs";

function user(node, id) {
  return connect(node.url, { namespace: "/notifications", auth: { token: tokenFor(id) } });
}

/** Connects `id`, recording its notifications from the first packet on (stored ones come right after connect). */
async function userWithInbox(node, id) {
  const socket = openSocket(node.url, { namespace: "/notifications", auth: { token: tokenFor(id) } });
  const inbox = collect(socket, "notification");
  await new Promise((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("connect_error", reject);
  });
  return { socket, inbox };
}

/** Which of `users` the plugin counts online, asked through `node`'s HTTP route. */
async function onlineAmong(node, users) {
  const response = await call(node, "POST", "/apps/notifications/online", { token: API_TOKEN, body: { users } });
  return response.body.online;
}

async function notify(node, userId, type, data) {
  const response = await call(node, "POST", "/apps/notifications/notify", {
    token: API_TOKEN,
    body: { user_id: userId, type, data },
  });
  assert.equal(response.status, 202, JSON.stringify(response.body));
  return response.body;
}

describe("notifications on two nodes", () => {
  let apps;
  let nodeA;
  let nodeB;

  before(async () => {
    apps = await startApps({ plugins: [notificationsPlugin()], prefix: "notifications" });
    [nodeA, nodeB] = apps.nodes;
  });

  after(() => apps?.stop());

  test("a swipe's new_match reaches both users, on different nodes, on each of their sockets once", async () => {
    const [alice, bob] = [unique("alice"), unique("bob")];
    const sockets = [await user(nodeA, alice), await user(nodeB, alice), await user(nodeB, bob)];
    const received = sockets.map((socket) => collect(socket, "notification"));
    for (const [me, them] of [[alice, bob], [bob, alice]]) {
      const sent = await notify(nodeA, me, "new_match", { with: them });
      assert.equal(sent.online, true);
    }
    await waitFor(() => received.every((events) => events.length >= 1), 5000, "new_match on every socket");
    await quiet(300);
    const matches = received.map((events) => events.map(({ type, data }) => ({ type, data })));
    assert.deepEqual(matches, [
      [{ type: "new_match", data: { with: bob } }],
      [{ type: "new_match", data: { with: bob } }],
      [{ type: "new_match", data: { with: alice } }],
    ]);
  });

  test("an offline user gets its notifications on the next connect, in order, exactly once", async () => {
    const carol = unique("carol");
    const sent = [];
    for (let n = 1; n <= 5; n += 1) {
      const result = await notify(n % 2 ? nodeA : nodeB, carol, "message", { n });
      assert.equal(result.online, false);
      sent.push(result.id);
    }
    const { socket: first, inbox: firstReceived } = await userWithInbox(nodeA, carol);
    await waitFor(() => firstReceived.length >= 5, 5000, "the 5 stored notifications");
    assert.deepEqual(firstReceived.map(({ id, data }) => ({ id, n: data.n })), sent.map((id, index) => ({ id, n: index + 1 })));
    first.close();
    await waitFor(async () => (await onlineAmong(nodeA, [carol])).length === 0, 5000, "carol offline");

    const { socket: again, inbox: againReceived } = await userWithInbox(nodeB, carol);
    // Counted online by `on_connected`, which runs after the client sees "connect".
    await waitFor(async () => (await onlineAmong(nodeA, [carol])).length === 1, 5000, "carol online");
    const live = await notify(nodeA, carol, "message", { n: 6 });
    assert.equal(live.online, true);
    await waitFor(() => againReceived.length >= 1, 5000, "the live notification");
    await quiet(300);
    assert.deepEqual(againReceived.map(({ data }) => data.n), [6], "nothing delivered twice");

    assert.deepEqual(await emitAckOk(again, "unread_count", null), { unread: 6 });
    assert.deepEqual(await emitAckOk(again, "mark_read", { ids: sent.slice(0, 2) }), { unread: 4 });
    const unread = await emitAckOk(again, "unread", null);
    assert.deepEqual(unread.notifications.map(({ data }) => data.n), [3, 4, 5, 6]);
  });

  test("notifications racing from both nodes reach every socket once each, all in the same order", async () => {
    const ivy = unique("ivy");
    const sockets = await Promise.all([userWithInbox(nodeA, ivy), userWithInbox(nodeB, ivy)]);
    const sent = await Promise.all(
      Array.from({ length: 40 }, (_, n) => notify(n % 2 ? nodeA : nodeB, ivy, "burst", { n })),
    );
    const ids = sent.map((result) => result.id);
    await waitFor(() => sockets.every(({ inbox }) => inbox.length >= 40), 10_000, "40 notifications on both sockets");
    await quiet(300);
    const stored = (await emitAckOk(sockets[0].socket, "unread", null)).notifications.map(({ id }) => id);
    for (const { inbox } of sockets) {
      const received = inbox.map(({ id }) => id);
      assert.deepEqual([...received].sort((a, b) => a - b), [...ids].sort((a, b) => a - b), "each exactly once");
      assert.deepEqual(received, stored, "in the order they were stored");
    }
  });

  test("contacts see a user come online and go offline when its last socket anywhere leaves", async () => {
    const [dave, erin, frank] = [unique("dave"), unique("erin"), unique("frank")];
    const contacts = await call(nodeA, "PUT", `/apps/notifications/contacts/${dave}`, {
      token: API_TOKEN,
      body: { contacts: [erin] },
    });
    assert.equal(contacts.status, 200, JSON.stringify(contacts.body));
    const erinSocket = await user(nodeB, erin);
    const online = collect(erinSocket, "user_online");
    const offline = collect(erinSocket, "user_offline");
    const daveOnA = await user(nodeA, dave);
    const daveOnB = await user(nodeB, dave);
    // A socket's events are handled after its `on_connected`, which counts it
    // online and runs after the client sees "connect": once each socket has an
    // answer, both are counted (CI closed the first before the second was).
    for (const socket of [daveOnA, daveOnB]) await emitAckOk(socket, "who_is_online", { users: [dave] });
    await waitFor(() => online.length >= 1, 5000, "user_online");
    assert.deepEqual(await emitAckOk(erinSocket, "who_is_online", { users: [dave, erin, frank] }), { online: [dave, erin] });
    daveOnA.close();
    await quiet(300);
    assert.equal(offline.length, 0, "dave still has a socket on node B");
    daveOnB.close();
    await disconnected(daveOnB).catch(() => {});
    await waitFor(() => offline.length >= 1, 5000, "user_offline");
    await quiet(200);
    assert.deepEqual(online, [{ user_id: dave }]);
    assert.deepEqual(offline, [{ user_id: dave }]);
    assert.deepEqual(await onlineAmong(nodeB, [dave, erin]), [erin]);
  });

  test("the backend routes need the API token", async () => {
    const response = await call(nodeA, "POST", "/apps/notifications/notify", {
      token: tokenFor("not-a-backend"),
      body: { user_id: "x", type: "t" },
    });
    assert.equal(response.status, 401);
    assert.equal(response.body.error.code, "bad_token");
  });
});

test("a user whose node is killed goes offline for its contacts once the node is declared dead", async (t) => {
  const apps = await startApps({ plugins: [notificationsPlugin()], prefix: "notifications-kill", server: SHORT_RECOVERY });
  t.after(() => apps.stop());
  const [nodeA, nodeB] = apps.nodes;
  const [gina, hal] = [unique("gina"), unique("hal")];
  await call(nodeA, "PUT", `/apps/notifications/contacts/${gina}`, { token: API_TOKEN, body: { contacts: [hal] } });
  const halSocket = await user(nodeA, hal);
  const online = collect(halSocket, "user_online");
  const offline = collect(halSocket, "user_offline");
  await user(nodeB, gina);
  await waitFor(() => online.length === 1, 5000, "user_online");
  await nodeB.stop("SIGKILL");
  await waitFor(() => offline.length >= 1, 15_000, "user_offline after node B died");
  await quiet(300);
  assert.deepEqual(offline, [{ user_id: gina }]);
  assert.deepEqual(await onlineAmong(nodeA, [gina, hal]), [hal]);
});
