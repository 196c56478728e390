// Connection admission under hostile clients: a node holds at most
// `max_connections` (and never more than its file descriptors allow), one
// address opens new connections at a limited rate, a request's headers must
// arrive in time, and an Engine.IO session must send its Socket.IO CONNECT in
// time. Over a limit a client gets a JSON error (503 or 429) or a close;
// /healthz keeps answering, and well-behaved clients beside the hostile ones
// keep being served.

import assert from "node:assert/strict";
import http from "node:http";
import { connect as connectTcp } from "node:net";
import { afterEach, describe, test } from "node:test";
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
  sleep,
  manifestToml,
  spawnServe,
  startHost,
  unique,
  waitFor,
  writeManifest,
} from "./harness.mjs";
import { openRawSocket } from "./raw_socket.mjs";
import { freePort, startRedis } from "./redis.mjs";

/** Connections over `max_connections` read for a request at once (listener/admission.rs). */
const PROBE_RESERVE = 32;
/** Timeouts long enough that silent connections stay open for a whole test. */
const PATIENT = { header_read_timeout_ms: 60000, idle_timeout_ms: 60000 };

/** A TCP connection that sends nothing; `closed` resolves when the server closes it. */
function silentConnection(port, localAddress = "127.0.0.1") {
  const socket = connectTcp({ port, host: "127.0.0.1", localAddress });
  socket.on("error", () => {});
  const closed = new Promise((resolve) => socket.once("close", resolve));
  const opened = new Promise((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("error", reject);
  });
  let received = "";
  socket.setEncoding("utf8");
  socket.on("data", (chunk) => {
    received += chunk;
  });
  return { socket, opened, closed, received: () => received, isClosed: () => socket.destroyed || socket.readyState === "closed" };
}

/**
 * Sends one raw HTTP/1.1 GET on a new connection (from `localAddress`, with
 * `headers`, lines of raw text) and resolves to `{ status, body }`, or
 * `{ closed: true }` when the server closes the connection without an answer.
 */
function rawGet(port, path, { localAddress = "127.0.0.1", headers = "" } = {}) {
  return new Promise((resolve, reject) => {
    const socket = connectTcp({ port, host: "127.0.0.1", localAddress });
    let data = "";
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer to GET ${path} within ${TIMEOUT_MS} ms`));
    }, TIMEOUT_MS);
    socket.setEncoding("utf8");
    socket.on("connect", () => socket.write(`GET ${path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n${headers}\r\n`));
    socket.on("data", (chunk) => {
      data += chunk;
    });
    const done = () => {
      clearTimeout(timer);
      const match = data.match(/^HTTP\/1\.1 (\d{3})/);
      if (!match) return resolve({ closed: true });
      const body = data.slice(data.indexOf("\r\n\r\n") + 4);
      resolve({ status: Number(match[1]), body, head: data.slice(0, data.indexOf("\r\n\r\n")) });
    };
    socket.on("end", done);
    socket.on("error", done);
  });
}

/** The Engine.IO long-polling handshake: a request that opens a session. */
const HANDSHAKE = "/socket.io/?EIO=4&transport=polling";

/**
 * Sends GETs of `paths` one after another on one keep-alive connection (from
 * `localAddress`) and resolves to their `{ status, body, head }`; fails if a
 * later one did not reuse the connection.
 */
async function getsOnOneConnection(port, paths, { localAddress = "127.0.0.1" } = {}) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const answers = [];
  try {
    for (const [n, path] of paths.entries()) {
      const answer = await new Promise((resolve, reject) => {
        const request = http.get({ host: "127.0.0.1", port, path, agent, localAddress }, (response) => {
          let body = "";
          response.setEncoding("utf8");
          response.on("data", (chunk) => {
            body += chunk;
          });
          response.on("end", () => resolve({ status: response.statusCode, body, headers: response.headers }));
        });
        request.on("error", reject);
        if (n > 0) request.on("socket", () => assert.ok(request.reusedSocket, `request ${n} reused the connection`));
      });
      answers.push(answer);
    }
  } finally {
    agent.destroy();
  }
  return answers;
}

/** Closes a long-polling session as its client would: a close packet. */
async function closeSession(port, handshakeBody, localAddress) {
  const { sid } = JSON.parse(handshakeBody.slice(1));
  const closed = await new Promise((resolve, reject) => {
    const request = http.request(
      { host: "127.0.0.1", port, method: "POST", path: `${HANDSHAKE}&sid=${sid}`, localAddress, headers: { "content-type": "text/plain" } },
      (response) => {
        response.resume();
        response.on("end", () => resolve(response.statusCode));
      },
    );
    request.on("error", reject);
    request.end("1");
  });
  assert.equal(closed, 200);
}

/** Resolves to a metric's value from /metrics (public: no API token here). */
async function metric(host, name, localAddress) {
  const { status, body } = await rawGet(host.port, "/metrics", { localAddress });
  assert.equal(status, 200, body);
  const line = body.split("\n").find((l) => l.startsWith(`${name} `));
  assert.ok(line, `${name} is not in /metrics:\n${body}`);
  return Number(line.split(" ")[1]);
}

/** A chat client that joins a room; `roundTrip()` sends a message and checks it arrives. */
async function chatter(url, options = {}) {
  const socket = await connect(url, { transports: ["websocket"], ...options });
  const room = unique("admission");
  await emitAckOk(socket, "join", { room });
  const received = collect(socket, "message");
  let sent = 0;
  return {
    socket,
    async roundTrip() {
      sent += 1;
      const text = `m${sent}`;
      await emitAckOk(socket, "send_message", { room, text });
      await waitFor(() => received.some((message) => message.text === text), TIMEOUT_MS, `message ${text} back`);
    },
  };
}

describe("connection admission", () => {
  const hosts = [];
  const sockets = [];
  async function host(options) {
    const started = await startHost(options);
    hosts.push(started);
    return started;
  }
  function silent(port, localAddress) {
    const connection = silentConnection(port, localAddress);
    sockets.push(connection.socket);
    return connection;
  }
  afterEach(async () => {
    closeAllSockets();
    for (const socket of sockets.splice(0)) socket.destroy();
    await Promise.all(hosts.splice(0).map((started) => started.stop()));
  });

  test("over max_connections new connections get 503 too_many_connections while /healthz answers", async () => {
    const MAX = 6;
    const started = await host({ server: { max_connections: MAX, ...PATIENT } });
    const client = await chatter(started.url);
    const hogs = Array.from({ length: MAX - 1 }, () => silent(started.port));
    await Promise.all(hogs.map((hog) => hog.opened));

    const refused = await rawGet(started.port, "/socket.io/?EIO=4&transport=polling");
    assert.equal(refused.status, 503, JSON.stringify(refused));
    assert.equal(JSON.parse(refused.body).error.code, "too_many_connections");
    await assert.rejects(connect(started.url), (error) => error.description === 503);

    // More silent connections than the reserve that reads refused ones: each
    // new one (the probe too) takes the place of the one waiting longest.
    const flood = Array.from({ length: 2 * PROBE_RESERVE }, () => silent(started.port));
    await Promise.all(flood.map((connection) => connection.opened));
    const health = await rawGet(started.port, "/healthz");
    assert.deepEqual([health.status, health.body], [200, "ok"]);
    assert.equal((await rawGet(started.port, "/readyz")).status, 200);
    assert.equal(await metric(started, "switchboard_connections_open"), MAX);
    assert.ok((await metric(started, 'switchboard_connections_refused_total{reason="too_many_connections"}')) >= 2);
    await client.roundTrip();

    // A freed slot admits a new client.
    hogs[0].socket.destroy();
    const late = await waitFor(
      () => connect(started.url, { transports: ["websocket"] }).catch(() => null),
      TIMEOUT_MS,
      "a client admitted once a connection closed",
    );
    assert.ok(late.connected);
    await client.roundTrip();
    // The refusals are logged as a count, once per period, not one line each.
    const logged = await waitFor(
      () => started.stderr().match(/refused (\d+) connections in the last 10s: \d+ over `max_connections`/),
      15000,
      "the refusal log line",
    );
    assert.ok(Number(logged[1]) >= 2, logged[0]);
  });

  test("a burst from one address over its limit gets 429 rate_limited, then is admitted again; other addresses are not limited", async () => {
    const BURST = 5;
    const started = await host({ server: { connections_per_second_per_ip: 1, connection_burst_per_ip: BURST } });
    // Another loopback address is another client.
    const neighbour = await chatter(started.url, { localAddress: "127.0.0.2" });
    const answers = await Promise.all(Array.from({ length: 3 * BURST }, () => rawGet(started.port, "/healthz")));
    const ok = answers.filter((answer) => answer.status === 200).length;
    const limited = answers.filter((answer) => answer.status === 429);
    assert.ok(ok >= BURST, `the burst is admitted: ${JSON.stringify(answers)}`);
    assert.ok(limited.length > 0, `past the burst, refused: ${JSON.stringify(answers)}`);
    assert.equal(JSON.parse(limited[0].body).error.code, "rate_limited");
    assert.match(limited[0].head, /retry-after: 1/i);
    await neighbour.roundTrip();
    await connect(started.url, { transports: ["websocket"], localAddress: "127.0.0.2" });

    const again = await waitFor(
      async () => {
        const answer = await rawGet(started.port, "/healthz");
        return answer.status === 200 && answer;
      },
      TIMEOUT_MS,
      "127.0.0.1 admitted again after the window",
    );
    assert.equal(again.body, "ok");
    const refused = await metric(started, 'switchboard_connections_refused_total{reason="rate_limited"}', "127.0.0.2");
    assert.ok(refused >= limited.length, `${refused} refusals counted`);
  });

  test("a connection that sends half a header, or nothing, is closed after the header and idle timeouts", async () => {
    const started = await host({ server: { header_read_timeout_ms: 1000, idle_timeout_ms: 500 } });
    const client = await chatter(started.url);
    const polling = await connect(started.url, { transports: ["polling"] });

    const half = silent(started.port);
    await half.opened;
    half.socket.write("GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: ");
    const mute = silent(started.port);
    await mute.opened;
    // Still trickling bytes: the header timeout counts from the start, not from the last byte.
    const trickle = setInterval(() => half.socket.writable && half.socket.write("a"), 200);
    try {
      await waitFor(() => half.isClosed() && mute.isClosed(), 10000, "the half-header and the silent connection closed");
    } finally {
      clearInterval(trickle);
    }
    assert.equal(half.received(), "", "no response to a request that never finished");
    assert.ok((await metric(started, "switchboard_http_header_timeouts_total")) >= 1);

    // The WebSocket and the long-polling client stayed connected throughout.
    assert.ok(client.socket.connected && polling.connected);
    await client.roundTrip();
    await emitAckOk(polling, "join", { room: unique("polling") });
  });

  test("a request head over max_header_bytes gets 431; a browser's large cookie under it is served", async () => {
    const started = await host({});
    // 12 KB: more than most servers' 8 KiB, under Node's and our 16 KiB.
    const handshake = await rawGet(started.port, "/socket.io/?EIO=4&transport=polling", {
      headers: `cookie: session=${"c".repeat(12_000)}\r\n`,
    });
    assert.equal(handshake.status, 200, JSON.stringify(handshake).slice(0, 300));
    assert.match(handshake.body, /^0\{"sid"/);

    const padding = Array.from({ length: 4 }, (_, n) => `x-pad-${n}: ${"p".repeat(5_000)}\r\n`).join("");
    const refused = await rawGet(started.port, "/healthz", { headers: padding });
    assert.equal(refused.status, 431, JSON.stringify(refused).slice(0, 300));
    assert.equal(await metric(started, "switchboard_http_heads_too_large_total"), 1);
    assert.equal((await rawGet(started.port, "/healthz")).status, 200);
  });

  test("an address holding max_connections_per_ip gets 429 too_many_connections_from_address; others do not", async () => {
    const started = await host({ server: { max_connections_per_ip: 2, ...PATIENT } });
    const held = [silent(started.port, "127.0.0.2"), silent(started.port, "127.0.0.2")];
    await Promise.all(held.map((connection) => connection.opened));
    const refused = await rawGet(started.port, "/healthz", { localAddress: "127.0.0.2" });
    assert.equal(refused.status, 429, JSON.stringify(refused));
    assert.equal(JSON.parse(refused.body).error.code, "too_many_connections_from_address");
    assert.equal((await rawGet(started.port, "/healthz", { localAddress: "127.0.0.3" })).status, 200);
    assert.ok((await metric(started, 'switchboard_connections_refused_total{reason="too_many_connections_from_address"}')) >= 1);
    // Closed, they count no more.
    for (const connection of held) connection.socket.destroy();
    await waitFor(async () => (await rawGet(started.port, "/healthz", { localAddress: "127.0.0.2" })).status === 200, TIMEOUT_MS,
      "the address to be admitted again");
  });

  test("long-polling handshakes over one keep-alive connection are charged to its address's rate, past the connection's first", async () => {
    const BURST = 5;
    const started = await host({ server: { connections_per_second_per_ip: 1, connection_burst_per_ip: BURST } });
    // The connection takes one of the burst; its first handshake comes with it.
    const answers = await getsOnOneConnection(started.port, Array(BURST + 3).fill(HANDSHAKE), { localAddress: "127.0.0.4" });
    const opened = answers.slice(0, BURST);
    assert.ok(opened.every((answer) => answer.status === 200 && answer.body.startsWith('0{"sid"')), JSON.stringify(opened));
    const limited = answers.slice(BURST).filter((answer) => answer.status === 429);
    assert.ok(limited.length > 0, `past the burst, refused: ${JSON.stringify(answers.slice(BURST))}`);
    assert.equal(JSON.parse(limited[0].body).error.code, "rate_limited");
    assert.equal(limited[0].headers["retry-after"], "1");
    assert.equal(await metric(started, "switchboard_engine_sessions_open", "127.0.0.5"), answers.length - limited.length);
    // Another address is another client.
    await (await chatter(started.url, { localAddress: "127.0.0.5" })).roundTrip();
  });

  test("an address opening sessions over one connection holds at most max_connections_per_ip of them, and gets them back as they close", async () => {
    const MAX = 3;
    const started = await host({ server: { max_connections_per_ip: MAX } });
    const answers = await getsOnOneConnection(started.port, Array(MAX + 2).fill(HANDSHAKE), { localAddress: "127.0.0.6" });
    assert.deepEqual(answers.map((answer) => answer.status), [200, 200, 200, 429, 429]);
    assert.equal(JSON.parse(answers[MAX].body).error.code, "too_many_connections_from_address");
    assert.equal(await metric(started, "switchboard_engine_sessions_open", "127.0.0.7"), MAX);
    await (await chatter(started.url, { localAddress: "127.0.0.7" })).roundTrip();

    await closeSession(started.port, answers[0].body, "127.0.0.6");
    await waitFor(
      async () => (await getsOnOneConnection(started.port, [HANDSHAKE], { localAddress: "127.0.0.6" }))[0].status === 200,
      TIMEOUT_MS,
      "a session admitted once one closed",
    );
  });

  test("over max_connections sessions, however few connections carry them, a handshake gets 503 too_many_connections", async () => {
    const MAX = 4;
    const started = await host({ server: { max_connections: MAX, max_connections_per_ip: 0, connections_per_second_per_ip: 0 } });
    const answers = await getsOnOneConnection(started.port, Array(MAX + 1).fill(HANDSHAKE));
    assert.deepEqual(answers.map((answer) => answer.status), [200, 200, 200, 200, 503]);
    assert.equal(JSON.parse(answers[MAX].body).error.code, "too_many_connections");
    assert.deepEqual([(await rawGet(started.port, "/healthz")).status, await metric(started, "switchboard_engine_sessions_open")], [200, MAX]);
    assert.ok((await metric(started, 'switchboard_connections_refused_total{reason="too_many_connections"}')) >= 1);
  });

  test("a request body that stops arriving is given up after header_read_timeout_ms", async () => {
    const token = "admission-token";
    const started = await host({
      manifest: manifestToml({ server: { header_read_timeout_ms: 1000, idle_timeout_ms: 500 }, plugins: [chatPlugin()] }) +
        `\n[api]\ntoken = "${token}"\n`,
    });
    const stalled = silent(started.port);
    await stalled.opened;
    stalled.socket.write(
      `POST /api/v1/emit HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer ${token}\r\n` +
        "content-type: application/json\r\ncontent-length: 100\r\n\r\n{\"namespace\":",
    );
    await waitFor(() => stalled.isClosed() || stalled.received().length > 0, 5000, "the stalled body to be given up");
    assert.doesNotMatch(stalled.received(), /^HTTP\/1\.1 2/, "no success for half a body");
  });

  test("a request body that keeps arriving but never ends is given up after body_timeout_ms", async () => {
    const started = await host({
      manifest: manifestToml({
        server: { header_read_timeout_ms: 2000, idle_timeout_ms: 1000, body_timeout_ms: 1000 },
        plugins: [faultyPlugin({ routes: [{ method: "POST", path: "/apps/echo/{thing}", auth: "none" }] })],
      }),
    });
    const handshake = await rawGet(started.port, "/socket.io/?EIO=4&transport=polling");
    const { sid } = JSON.parse(handshake.body.slice(1));
    const posts = {
      "a long-polling POST": `/socket.io/?EIO=4&transport=polling&sid=${sid}`,
      "a plugin route's POST": "/apps/echo/slow",
    };
    for (const [what, path] of Object.entries(posts)) {
      const trickler = silent(started.port);
      await trickler.opened;
      trickler.socket.write(
        `POST ${path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: text/plain\r\ncontent-length: 100000\r\n\r\n`,
      );
      // 100 bytes every 100 ms: never a pause the header timeout would end.
      const sending = setInterval(() => trickler.socket.writable && trickler.socket.write("4".repeat(100)), 100);
      try {
        await waitFor(() => trickler.isClosed() || /\r\n\r\n/.test(trickler.received()), 5000, `${what} to be given up`);
      } finally {
        clearInterval(sending);
      }
      assert.match(trickler.received(), /^HTTP\/1\.1 4\d\d/, `${what}: ${trickler.received().slice(0, 200)}`);
      if (path.startsWith("/apps/")) {
        assert.match(trickler.received(), /^HTTP\/1\.1 408/);
        await waitFor(() => trickler.received().includes('"body_incomplete"'), TIMEOUT_MS, "the JSON reason");
      }
    }
  });

  test("an Engine.IO session that never sends the Socket.IO CONNECT is closed after connect_timeout_ms", async () => {
    const started = await host({ server: { connect_timeout_ms: 500 } });
    const client = await chatter(started.url);
    const lurker = new WebSocket(`ws://127.0.0.1:${started.port}/socket.io/?EIO=4&transport=websocket`);
    const frames = [];
    lurker.on("message", (data) => frames.push(String(data)));
    const closed = new Promise((resolve) => lurker.once("close", resolve));
    await waitFor(() => frames.length > 0, TIMEOUT_MS, "the Engine.IO open packet");
    assert.match(frames[0], /^0\{/);
    await Promise.race([
      closed,
      new Promise((_, reject) => setTimeout(() => reject(new Error("the session without CONNECT is still open")), 10000)),
    ]);
    assert.ok(!frames.some((frame) => frame.startsWith("40")), `no namespace was joined: ${frames}`);
    assert.ok(client.socket.connected);
    await client.roundTrip();
  });

  test("a connection flooding packets is read at packets_per_second_per_connection: slowed down, nothing dropped, others served", async () => {
    const started = await host({
      server: { packets_per_second_per_connection: 1000, packet_burst_per_connection: 100 },
      plugins: [faultyPlugin()],
    });
    const flooder = await openRawSocket(started.port, "/faulty");
    // 3,000 Engine.IO pongs in masked WebSocket frames, then an event: read
    // at 1,000 packets a second, the event waits about three seconds.
    const pong = Buffer.from([0x81, 0x81, 0, 0, 0, 0, 0x33]);
    flooder.writeRaw(Buffer.concat(Array(3000).fill(pong)));
    const order = [];
    const flooded = flooder.emitWithAck("echo", { n: "after the flood" }).then((reply) => {
      order.push("flooder");
      return reply;
    });
    const bystander = await connect(started.url, { namespace: "/faulty", transports: ["websocket"] });
    assert.deepEqual((await emitAckOk(bystander, "echo", { n: "beside" })).echo, { n: "beside" });
    order.push("bystander");
    assert.deepEqual((await flooded).echo, { n: "after the flood" });
    assert.deepEqual(order, ["bystander", "flooder"]);
    assert.ok((await metric(started, "switchboard_reads_paced_total")) >= 1);
  });

  test("a connection sending one message as endless empty fragments is read at bytes_per_second_per_connection: slowed down, others served", async () => {
    const started = await host({
      server: { max_payload_bytes: 10000, bytes_per_second_per_connection: 20000, byte_burst_per_connection: 20000 },
      plugins: [faultyPlugin()],
    });
    const flooder = await openRawSocket(started.port, "/faulty");
    // A text frame, not final, then empty continuation frames (masked, as a
    // client's must be): a message that never completes a packet and never
    // grows toward the message size limit. Unpaced, the node read them as
    // fast as they came, a core's worth.
    const mask = [1, 2, 3, 4];
    flooder.writeRaw(Buffer.from([0x01, 0x81, ...mask, 0x34 ^ 1]));
    const fragments = Buffer.concat(Array(10000).fill(Buffer.from([0x00, 0x80, ...mask])));
    let written = 0;
    const until = Date.now() + 3000;
    while (Date.now() < until) {
      if (flooder.unsent() < fragments.length) {
        flooder.writeRaw(fragments);
        written += fragments.length;
      }
      await sleep(5);
    }
    const bystander = await connect(started.url, { namespace: "/faulty", transports: ["websocket"] });
    assert.deepEqual((await emitAckOk(bystander, "echo", { n: "beside" })).echo, { n: "beside" });
    assert.ok((await metric(started, "switchboard_reads_paced_total")) >= 1, "the flooder's reads paced");
    // Read at 20,000 bytes a second, the rest waits in the kernel's buffers
    // (a few MB on loopback); unpaced, it was read as fast as it came.
    assert.ok(written < 24_000_000, `${written} bytes of fragments taken in 3 s`);
  });

  test("a request left half-sent while the node waits for Redis does not hold up its start", async () => {
    const [port, redisPort] = [await freePort(), await freePort()];
    const manifest = writeManifest(
      manifestToml({ server: { header_read_timeout_ms: 1000, idle_timeout_ms: 1000 }, plugins: [chatPlugin()] }) +
        `\n[cluster]\nredis_url = "redis://127.0.0.1:${redisPort}"\n`,
    );
    const node = spawnServe(manifest, { listen: `127.0.0.1:${port}` });
    let redis;
    try {
      await waitFor(
        async () => (await rawGet(port, "/healthz").catch(() => ({}))).status === 200,
        10000,
        "the start-up responder to answer /healthz",
      );
      const half = silent(port);
      await half.opened;
      half.socket.write("GET /readyz HTTP/1.1\r\nhost: 127.0.0.1\r\n");
      redis = await startRedis({ port: redisPort });
      await waitFor(() => /switchboard listening on/.test(node.stdout()), 15000, () => `the ready line; stderr:\n${node.stderr()}`);
      await waitFor(() => half.isClosed(), TIMEOUT_MS, "the half-sent request closed");
      const client = await chatter(`http://127.0.0.1:${port}`);
      await client.roundTrip();
    } finally {
      node.child.kill("SIGKILL");
      await redis?.stop();
    }
  });

  test("with `ulimit -n 256`, silent connections cannot take the last descriptors: clients are refused clearly and /healthz answers", async () => {
    const LIMIT = 256;
    const started = await host({
      shell: `ulimit -n ${LIMIT}`,
      server: { connections_per_second_per_ip: 0, ...PATIENT },
    });
    const lowered = await logged(started, /`max_connections` lowered from 10000 to (\d+)/);
    const capacity = Number(lowered[1]);
    assert.ok(capacity > 0 && capacity < LIMIT, `capacity ${capacity}`);

    const client = await chatter(started.url);
    const hogs = Array.from({ length: LIMIT }, () => silent(started.port));
    await Promise.all(hogs.map((hog) => hog.opened));
    // Those past the limit are closed (at once, or after the short read a refused connection gets).
    const admitted = capacity - 1;
    await waitFor(
      () => hogs.filter((hog) => hog.isClosed()).length === LIMIT - admitted,
      15000,
      () => `${LIMIT - admitted} silent connections closed, got ${hogs.filter((hog) => hog.isClosed()).length}`,
    );

    const health = await rawGet(started.port, "/healthz");
    assert.deepEqual([health.status, health.body], [200, "ok"]);
    await assert.rejects(connect(started.url, { transports: ["websocket"] }), /websocket error/);
    await client.roundTrip();
    assert.doesNotMatch(started.stderr(), /could not accept|Too many open files/);

    for (const hog of hogs.slice(0, 10)) hog.socket.destroy();
    const late = await waitFor(
      () => connect(started.url, { transports: ["websocket"] }).catch(() => null),
      TIMEOUT_MS,
      "a client admitted once connections closed",
    );
    assert.ok(late.connected);
    await client.roundTrip();
  });
});
