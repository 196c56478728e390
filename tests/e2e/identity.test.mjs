// Verified identities: JWTs checked on connect (handshake `auth.token` or an
// Authorization header), refusals that say why, anonymous namespaces, the
// user's room `user:{id}` on every node, and plugin timers on one node.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import {
  closeAllSockets,
  collect,
  connect,
  emitAckOk,
  faultyPlugin,
  manifestToml,
  quiet,
  startHost,
  tempDir,
  waitFor,
} from "./harness.mjs";
import { startRedis } from "./redis.mjs";
import { HS256_AUTH, keyPair, nowS, signToken, tokenFor } from "./tokens.mjs";

const API_TOKEN = "identity-test-token";

function manifest({ auth = HS256_AUTH, cluster = "" } = {}) {
  return (
    manifestToml({ plugins: [faultyPlugin({ namespaces: ["/faulty", "/lobby"] })] }) +
    auth +
    `\n[namespaces."/lobby"]\nanonymous = true\n` +
    `\n[api]\ntoken = "${API_TOKEN}"\n` +
    cluster
  );
}

/** The connect_error message for `options`; fails if the socket connects. */
async function refusal(url, options) {
  const error = await connect(url, options).then(
    () => assert.fail(`connected with ${JSON.stringify(options)}`),
    (error) => error,
  );
  return error.message;
}

async function emitToUser(node, user, event, data) {
  const response = await fetch(`${node.url}/api/v1/emit`, {
    method: "POST",
    headers: { authorization: `Bearer ${API_TOKEN}`, "content-type": "application/json" },
    body: JSON.stringify({ namespace: "/faulty", to: { user }, event, data }),
  });
  assert.equal(response.status, 202, await response.text());
}

describe("identity with an HS256 secret", () => {
  let host;

  before(async () => {
    host = await startHost({ manifest: manifest() });
  });

  after(async () => {
    closeAllSockets();
    await host?.stop();
  });

  test("a valid token names the user; the token itself never reaches plugins", async () => {
    const socket = await connect(host.url, {
      namespace: "/faulty",
      auth: { token: tokenFor("alice"), device: "phone" },
    });
    assert.deepEqual(await emitAckOk(socket, "whoami", null), {
      user_id: "alice",
      auth: { device: "phone" },
    });
  });

  test("an Authorization: Bearer header works as well, on polling and on WebSocket", async () => {
    for (const transports of [["polling"], ["websocket"]]) {
      const socket = await connect(host.url, {
        namespace: "/faulty",
        transports,
        extraHeaders: { authorization: `Bearer ${tokenFor("bob")}` },
      });
      assert.equal((await emitAckOk(socket, "whoami", null)).user_id, "bob", transports[0]);
    }
  });

  test("missing, expired, forged, not-yet-valid and malformed tokens are refused with the reason", async () => {
    const cases = [
      [{}, /authentication required/],
      [{ token: signToken({ sub: "a", exp: nowS(-60) }) }, /token expired/],
      [{ token: signToken({ sub: "a" }, { key: "some other secret" }) }, /signature is invalid/],
      [{ token: signToken({ sub: "a", nbf: nowS(600) }) }, /not valid yet/],
      [{ token: signToken({ exp: nowS(60) }) }, /no `sub` claim/],
      [{ token: "not-a-jwt" }, /malformed/],
    ];
    for (const [auth, reason] of cases) {
      assert.match(await refusal(host.url, { namespace: "/faulty", auth }), reason, JSON.stringify(auth));
    }
  });

  test("a token expired by less than the clock skew is still accepted", async () => {
    const socket = await connect(host.url, {
      namespace: "/faulty",
      auth: { token: signToken({ sub: "late", exp: nowS(-2) }) },
    });
    assert.equal((await emitAckOk(socket, "whoami", null)).user_id, "late");
  });

  test("an anonymous namespace admits sockets without a token, but not with a bad one", async () => {
    const anonymous = await connect(host.url, { namespace: "/lobby" });
    assert.equal((await emitAckOk(anonymous, "whoami", null)).user_id, null);
    const known = await connect(host.url, { namespace: "/lobby", auth: { token: tokenFor("carol") } });
    assert.equal((await emitAckOk(known, "whoami", null)).user_id, "carol");
    assert.match(
      await refusal(host.url, { namespace: "/lobby", auth: { token: signToken({ sub: "x" }, { key: "forged" }) } }),
      /signature is invalid/,
    );
  });

  test("a timer fires once, at its time; a cancelled one never does", async () => {
    const socket = await connect(host.url, { namespace: "/faulty", auth: { token: tokenFor("timer") } });
    const fired = collect(socket, "timer");
    await emitAckOk(socket, "schedule", { key: "cancelled", delay_ms: 1000, payload: "never" });
    await emitAckOk(socket, "schedule", { key: "replaced", delay_ms: 500, payload: "first" });
    // The replacement is due 1200 ms after the plugin schedules it, which is after this.
    const replacedAt = Date.now();
    await emitAckOk(socket, "schedule", { key: "replaced", delay_ms: 1200, payload: "second" });
    assert.deepEqual(await emitAckOk(socket, "cancel", { key: "cancelled" }), { cancelled: true });
    assert.deepEqual(await emitAckOk(socket, "cancel", { key: "unknown" }), { cancelled: false });
    await waitFor(() => fired.length >= 1, 5000, "the timer");
    assert.ok(Date.now() - replacedAt >= 1200, "the replaced timer fires at its new time, not its old one");
    await quiet(200);
    assert.deepEqual(fired, [{ key: "replaced", payload: "second" }]);
  });
});

test("a timer whose handler traps is dropped; the next timer still fires", async (t) => {
  const host = await startHost({ manifest: manifest({ auth: "" }) });
  t.after(async () => {
    closeAllSockets();
    await host.stop();
  });
  const socket = await connect(host.url, { namespace: "/faulty" });
  const fired = collect(socket, "timer");
  await emitAckOk(socket, "schedule", { key: "trap", delay_ms: 0 });
  await emitAckOk(socket, "schedule", { key: "after", delay_ms: 300, payload: "still here" });
  await waitFor(() => fired.length >= 1, 5000, "the timer after the trap");
  await quiet(200);
  assert.deepEqual(fired, [{ key: "after", payload: "still here" }]);
  assert.match(host.stderr(), /timer `trap` dropped: plugin `faulty` crashed/);
});

for (const algorithm of ["RS256", "ES256"]) {
  test(`${algorithm}: tokens signed with the private key are accepted, HS256 ones refused`, async (t) => {
    const { privateKey, auth } = keyPair(algorithm, tempDir());
    const host = await startHost({ manifest: manifest({ auth }) });
    t.after(async () => {
      closeAllSockets();
      await host.stop();
    });
    const token = signToken({ sub: "dana" }, { key: privateKey, algorithm });
    const socket = await connect(host.url, { namespace: "/faulty", auth: { token } });
    assert.equal((await emitAckOk(socket, "whoami", null)).user_id, "dana");
    assert.match(
      await refusal(host.url, { namespace: "/faulty", auth: { token: tokenFor("dana") } }),
      new RegExp(`accepts ${algorithm}`),
    );
  });
}

test("an emit to a user reaches each of the user's sockets on every node, once", async (t) => {
  const redis = await startRedis();
  const cluster = `\n[cluster]\nredis_url = "${redis.url}"\nprefix = "identity"\n`;
  const [nodeA, nodeB] = await Promise.all([
    startHost({ manifest: manifest({ cluster }) }),
    startHost({ manifest: manifest({ cluster }) }),
  ]);
  t.after(async () => {
    closeAllSockets();
    await Promise.all([nodeA.stop(), nodeB.stop()]);
    await redis.stop();
  });
  const options = (user) => ({ namespace: "/faulty", auth: { token: tokenFor(user) } });
  const aliceOnA = await connect(nodeA.url, options("alice"));
  const aliceOnB = await connect(nodeB.url, options("alice"));
  const bobOnA = await connect(nodeA.url, options("bob"));
  const received = [aliceOnA, aliceOnB, bobOnA].map((socket) => collect(socket, "ping"));
  await emitToUser(nodeB, "alice", "ping", { n: 1 });
  await emitToUser(nodeB, "bob", "ping", { n: 2 });
  await waitFor(() => received.every((events) => events.length >= 1), 5000, "every ping");
  await quiet(200);
  assert.deepEqual(received, [[{ n: 1 }], [{ n: 1 }], [{ n: 2 }]]);
});
