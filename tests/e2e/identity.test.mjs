// Verified identities: JWTs checked on connect and on every reconnect
// (handshake `auth.token` or an Authorization header), refusals that say why,
// required issuer and audience, HS256 secrets long enough, sockets
// disconnected when their token expires, the handshake `auth` plugins get,
// anonymous namespaces, the user's room `user:{id}` on every node, and plugin
// timers on one node.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import {
  closeAllSockets,
  collect,
  collectAll,
  connect,
  disconnected,
  emitAck,
  emitAckOk,
  faultyPlugin,
  logged,
  manifestToml,
  quiet,
  runSwitchboard,
  startHost,
  tempDir,
  waitFor,
  writeManifest,
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
    const { user_id, auth } = await emitAckOk(socket, "whoami", null);
    assert.deepEqual({ user_id, auth }, { user_id: "alice", auth: { device: "phone" } });
  });

  test("an Authorization: Bearer header works as well, on polling and on WebSocket; `auth` then reaches plugins as sent", async () => {
    for (const transports of [["polling"], ["websocket"]]) {
      const auth = { device: "tablet", tags: ["b", "a"] };
      const socket = await connect(host.url, {
        namespace: "/faulty",
        transports,
        auth,
        extraHeaders: { authorization: `Bearer ${tokenFor("bob")}` },
      });
      const whoami = await emitAckOk(socket, "whoami", null);
      assert.equal(whoami.user_id, "bob", transports[0]);
      assert.equal(whoami.auth_text, JSON.stringify(auth), transports[0]);
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

test("with issuer and audience configured, a token must carry both, with those values", async (t) => {
  const auth = HS256_AUTH + `issuer = "https://id.example.com"\naudience = "switchboard"\n`;
  const host = await startHost({ manifest: manifest({ auth }) });
  t.after(async () => {
    closeAllSockets();
    await host.stop();
  });
  const claims = { sub: "ivy", iss: "https://id.example.com", aud: "switchboard" };
  const socket = await connect(host.url, { namespace: "/faulty", auth: { token: signToken(claims) } });
  assert.equal((await emitAckOk(socket, "whoami", null)).user_id, "ivy");
  const without = (name) => Object.fromEntries(Object.entries(claims).filter(([key]) => key !== name));
  const cases = [
    [without("iss"), /token rejected: it has no `iss` claim/],
    [without("aud"), /token rejected: it has no `aud` claim/],
    [{ ...claims, iss: "https://evil.example.com" }, /wrong issuer/],
    [{ ...claims, aud: "another-app" }, /wrong audience/],
  ];
  for (const [refused, reason] of cases) {
    const token = signToken(refused);
    assert.match(await refusal(host.url, { namespace: "/faulty", auth: { token } }), reason, JSON.stringify(refused));
    // The anonymous namespace, too, refuses a token it cannot accept.
    assert.match(await refusal(host.url, { namespace: "/lobby", auth: { token } }), reason, JSON.stringify(refused));
  }
});

test("HS256 secrets under 32 bytes are refused by check and serve, from the manifest or the environment", async () => {
  const short = "a-secret-of-only-31-bytes-long!";
  assert.equal(Buffer.byteLength(short), 31);
  const inManifest = writeManifest(manifest({ auth: `\n[auth]\nsecret = "${short}"\n` }));
  const longInManifest = writeManifest(manifest());
  const runs = [
    [inManifest, {}, new RegExp(`^error: ${inManifest}:\\d+:10: `, "m")],
    [longInManifest, { SWITCHBOARD_JWT_SECRET: short }, /SWITCHBOARD_JWT_SECRET: /],
  ];
  for (const [manifestPath, env, where] of runs) {
    for (const args of [["check", manifestPath], ["serve", "--manifest", manifestPath, "--listen", "127.0.0.1:0"]]) {
      const run = await runSwitchboard(args, { env, timeout: 20000 });
      const what = `${args[0]} ${JSON.stringify(env)}; stderr:\n${run.stderr}`;
      assert.equal(run.code, 1, what);
      assert.doesNotMatch(run.stdout, /listening/, what);
      assert.match(run.stderr, where, what);
      assert.match(
        run.stderr,
        /the HS256 secret is 31 bytes long; it needs at least 32 bytes: make one with `openssl rand -base64 32`/,
        what,
      );
      assert.doesNotMatch(run.stderr, new RegExp(short), what);
    }
  }
  const checked = await runSwitchboard(["check", longInManifest]);
  assert.equal(checked.code, 0, checked.stderr);
});

describe("a token that expires while its socket is open", () => {
  const SKEW_S = 1;
  let host;

  before(async () => {
    host = await startHost({ manifest: manifest({ auth: HS256_AUTH.replace("clock_skew_s = 5", `clock_skew_s = ${SKEW_S}`) }) });
  });

  after(async () => {
    closeAllSockets();
    await host?.stop();
  });

  /** The reason the plugins' `on-disconnect` got for `socketId`, once it ran. */
  async function disconnectReason(socketId) {
    const observer = await connect(host.url, { namespace: "/faulty", auth: { token: tokenFor("observer") } });
    return waitFor(() => emitAckOk(observer, "disconnect_reason", { socket_id: socketId }), 5000, "on-disconnect");
  }

  test("is reported as `token_expired`, the server disconnects the socket after exp + clock skew, plugins see `token expired`, a fresh token reconnects", async () => {
    const exp = nowS(2);
    let token = signToken({ sub: "expiring", exp });
    // `auth` as a function: the client reads it again on every connect.
    const socket = await connect(host.url, { namespace: "/faulty", auth: (send) => send({ token }) });
    const { socket_id: socketId } = await emitAckOk(socket, "whoami", null);
    const received = collectAll(socket);
    assert.equal(await disconnected(socket, 15000), "io server disconnect");
    assert.ok(Date.now() >= (exp + SKEW_S) * 1000, "not disconnected before exp + clock skew");
    assert.deepEqual(received, [
      {
        event: "error",
        data: { event: "", code: "token_expired", message: "token expired: get a new token and connect again" },
      },
    ]);
    assert.equal(socket.active, false, "the client does not reconnect by itself");
    assert.equal(await disconnectReason(socketId), "token expired");

    // The same token again: expired, since the deadline is where verification fails.
    const refused = new Promise((resolve) => socket.once("connect_error", resolve));
    socket.connect();
    assert.match((await refused).message, /token expired/);
    token = tokenFor("expiring");
    const accepted = new Promise((resolve) => socket.once("connect", resolve));
    socket.connect();
    await accepted;
    assert.equal((await emitAckOk(socket, "whoami", null)).user_id, "expiring");
    socket.close();
  });

  test("a socket with a long-lived token stays connected and keeps working", async () => {
    const socket = await connect(host.url, { namespace: "/faulty", auth: { token: tokenFor("lasting") } });
    const lost = collect(socket, "disconnect");
    await quiet(SKEW_S * 1000 + 1500);
    assert.deepEqual(lost, []);
    assert.equal((await emitAckOk(socket, "whoami", null)).user_id, "lasting");
  });

  test("every reconnect presents its token again: an expired one is refused, a fresh one accepted", async () => {
    let token = tokenFor("renewing");
    const socket = await connect(host.url, {
      namespace: "/faulty",
      auth: (send) => send({ token }),
      reconnection: true,
      reconnectionDelay: 50,
      reconnectionDelayMax: 100,
    });
    token = signToken({ sub: "renewing", exp: nowS(-60) });
    const refused = new Promise((resolve) => socket.once("connect_error", resolve));
    // The connection drops; the client reconnects on its own.
    socket.io.engine.close();
    assert.match((await refused).message, /token expired/);
    assert.equal(socket.connected, false);
    token = tokenFor("renewed");
    const accepted = new Promise((resolve) => socket.once("connect", resolve));
    socket.connect();
    await accepted;
    assert.equal((await emitAckOk(socket, "whoami", null)).user_id, "renewed");
  });
});

test("without [auth], plugins get the handshake `auth` exactly as the client sent it, `token` included", async (t) => {
  const host = await startHost({ manifest: manifest({ auth: "" }) });
  t.after(async () => {
    closeAllSockets();
    await host.stop();
  });
  const auth = { token: "a-namespace-shared-secret", zone: "eu", nested: { b: 1, a: [2, "x"] } };
  for (const transports of [["polling"], ["websocket"]]) {
    const socket = await connect(host.url, { namespace: "/faulty", transports, auth });
    const whoami = await emitAckOk(socket, "whoami", null);
    assert.equal(whoami.user_id, null);
    assert.deepEqual(whoami.auth, auth);
    assert.equal(whoami.auth_text, JSON.stringify(auth), transports[0]);
  }
  const none = await connect(host.url, { namespace: "/faulty" });
  assert.equal((await emitAckOk(none, "whoami", null)).auth_text, "{}");
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
  await logged(host, /timer `trap` dropped: plugin `faulty` crashed/);
});

test("a plugin at limits.max_timers schedules no new timer until one is cancelled or fires", async (t) => {
  const host = await startHost({ plugins: [faultyPlugin({ limits: { max_timers: 2 } })] });
  t.after(async () => {
    closeAllSockets();
    await host.stop();
  });
  const socket = await connect(host.url, { namespace: "/faulty" });
  const fired = collect(socket, "timer");
  const schedule = (key, delay_ms) => emitAck(socket, "schedule", { key, delay_ms, payload: key });
  assert.deepEqual(await schedule("soon", 300), { scheduled: "soon" });
  assert.deepEqual(await schedule("later", 60_000), { scheduled: "later" });
  const refused = await schedule("third", 60_000);
  assert.equal(refused.error?.code, "quota_exceeded", JSON.stringify(refused));
  assert.match(refused.error.message, /2 timers pending.*limits\.max_timers/);
  // A pending timer can be moved; a cancelled one makes room.
  assert.deepEqual(await schedule("later", 50_000), { scheduled: "later" });
  assert.deepEqual(await emitAckOk(socket, "cancel", { key: "later" }), { cancelled: true });
  assert.deepEqual(await schedule("third", 60_000), { scheduled: "third" });
  // So does one that fired.
  await waitFor(() => fired.length === 1, 5000, "the timer due soon");
  assert.deepEqual(fired, [{ key: "soon", payload: "soon" }]);
  await waitFor(async () => !(await schedule("fourth", 60_000)).error, 5000, "room after the timer fired");
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
