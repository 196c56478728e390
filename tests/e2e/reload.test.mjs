// Hot reload: the chat plugin's file is replaced under traffic, alternating
// two builds (the second's send_message acks carry `build: "v2"`), with
// broken files in between. Every event is acked exactly once and in order,
// the markers follow the swaps, a broken file leaves the old version
// answering, state survives, and no client is disconnected. Then the
// manifest itself changes under traffic.

import assert from "node:assert/strict";
import { copyFileSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";

import {
  chatPlugin,
  closeAllSockets,
  collect,
  connect,
  emitAck,
  emitAckOk,
  faultyPlugin,
  manifestToml,
  startHost,
  tempDir,
  waitFor,
  wasm,
} from "./harness.mjs";

const TOKEN = "reload-token";
/** The `build` field of each version's send_message ack. */
const MARKERS = { v1: undefined, v2: "v2" };
/** The traffic here is sent as fast as acks come back, above the default event rate. */
const AS_FAST_AS_ACKS = { "/": { events_per_second: 100_000, event_burst: 100_000 } };

describe("hot reload of a plugin file", () => {
  let dir;
  let file;
  let host;

  // Writes `source` as the chat plugin's file, by atomic rename or in place.
  function install(source, { atomic }) {
    if (atomic) {
      const temporary = path.join(dir, ".chat.wasm.tmp");
      copyFileSync(source, temporary);
      renameSync(temporary, file);
    } else {
      copyFileSync(source, file);
    }
  }

  async function api(method, route) {
    const response = await fetch(`${host.url}${route}`, { method, headers: { authorization: `Bearer ${TOKEN}` } });
    return { status: response.status, body: await response.json() };
  }

  before(async () => {
    dir = tempDir();
    file = path.join(dir, "chat.wasm");
    copyFileSync(wasm("chat"), file);
    const manifest =
      manifestToml({ plugins: [chatPlugin({ path: file }), faultyPlugin()], namespaces: AS_FAST_AS_ACKS }) + `\n[api]\ntoken = "${TOKEN}"\n`;
    host = await startHost({ manifest });
  });

  after(async () => {
    closeAllSockets();
    await host?.stop();
  });

  test("ten swaps of the chat plugin under traffic, with broken files in between", async () => {
    const rooms = ["swap-1", "swap-2", "swap-3"];
    const senders = await Promise.all(rooms.map((room) => connect(host.url, { auth: { user: `sender-${room}` } })));
    const listener = await connect(host.url, { auth: { user: "listener" } });
    for (const [index, room] of rooms.entries()) {
      await emitAckOk(senders[index], "join", { room });
      await emitAckOk(listener, "join", { room });
    }
    const heard = collect(listener, "message");
    const disconnects = [];
    for (const socket of [...senders, listener]) socket.on("disconnect", (reason) => disconnects.push(reason));

    // Each sender sends to its room one message after another while the swaps go on.
    let running = true;
    const acks = senders.map(() => []);
    const traffic = senders.map(async (socket, index) => {
      for (let seq = 0; running; seq++) {
        acks[index].push(await emitAck(socket, "send_message", { room: rooms[index], text: `${seq}` }));
      }
    });
    const latestMarkers = () => acks.map((list) => list.at(-1)?.build);
    const markerEverywhere = (marker) =>
      waitFor(
        async () => {
          const mark = acks.map((list) => list.length);
          await waitFor(() => acks.every((list, index) => list.length > mark[index] + 2), 5000, "more acks");
          return latestMarkers().every((seen) => seen === marker);
        },
        5000,
        () => `every sender to see build ${marker} (latest: ${latestMarkers()})`,
      );

    const broken = path.join(dir, "broken.wasm");
    writeFileSync(broken, readFileSync(wasm("chat")).subarray(0, 4096));
    let expected = MARKERS.v1;
    await markerEverywhere(expected);
    for (let swap = 1; swap <= 10; swap++) {
      // A truncated file: the running version must keep answering.
      install(broken, { atomic: swap % 2 === 0 });
      await new Promise((resolve) => setTimeout(resolve, 400));
      await markerEverywhere(expected);
      const version = swap % 2 === 1 ? "v2" : "v1";
      install(version === "v2" ? wasm("chat_v2") : wasm("chat"), { atomic: swap % 2 === 1 });
      expected = MARKERS[version];
      await markerEverywhere(expected);
    }
    running = false;
    await Promise.all(traffic);

    for (const [index, list] of acks.entries()) {
      for (const ack of list) assert.ok(!ack.error, `send_message failed: ${JSON.stringify(ack)}`);
      // Ids come from a per-room counter in the state API: consecutive ids
      // mean every message was handled exactly once, in order, across swaps.
      assert.deepEqual(list.map((ack) => ack.id), list.map((_, seq) => seq + 1), `room ${rooms[index]}`);
      await waitFor(() => heard.filter((message) => message.room === rooms[index]).length === list.length, 5000,
        `every message of ${rooms[index]} at the listener`);
      const texts = heard.filter((message) => message.room === rooms[index]).map((message) => message.text);
      assert.deepEqual(texts, list.map((_, seq) => `${seq}`));
    }
    assert.deepEqual(disconnects, [], "no client was disconnected");

    const { status, body } = await api("GET", "/api/v1/plugins");
    assert.equal(status, 200);
    const chat = body.plugins.find((plugin) => plugin.name === "chat");
    assert.equal(chat.last_error, null);
    assert.match(chat.version, /^[0-9a-f]{64}$/);
    assert.ok(body.reloads >= 20, `reloads counted: ${body.reloads}`);
    assert.ok(body.failures >= 10, `failures counted: ${body.failures}`);
    const metrics = await (await fetch(`${host.url}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } })).text();
    assert.match(metrics, new RegExp(`^switchboard_plugin_reloads_total ${body.reloads}$`, "m"));
    assert.match(metrics, new RegExp(`^switchboard_plugin_reload_failures_total ${body.failures}$`, "m"));
    assert.match(metrics, new RegExp(`^switchboard_plugin_info\\{plugin="chat",version="${chat.version}"\\} 1$`, "m"));
  });

  test("a broken file is reported by the API and leaves the running version", async () => {
    const socket = await connect(host.url, { auth: { user: "checker" } });
    await emitAckOk(socket, "join", { room: "check" });
    writeFileSync(file, "this is not WebAssembly");
    const { status, body } = await api("POST", "/api/v1/plugins/chat/reload");
    assert.equal(status, 422);
    assert.equal(body.error.code, "reload_failed");
    assert.match(body.error.message, /chat/);
    const listed = (await api("GET", "/api/v1/plugins")).body.plugins.find((plugin) => plugin.name === "chat");
    assert.equal(listed.last_reload, "failed");
    assert.match(listed.last_error, /not a valid WebAssembly component/);
    assert.equal((await emitAckOk(socket, "send_message", { room: "check", text: "still here" })).id, 1);
    // A component for another world (a plain WASI command) is refused the same way.
    install(wasm("not_a_plugin"), { atomic: true });
    const wrongWorld = await api("POST", "/api/v1/plugins/chat/reload");
    assert.equal(wrongWorld.status, 422);
    assert.match(wrongWorld.body.error.message, /does not implement the world `switchboard:plugin\/plugin@0\.2\.1` \(nor its 0\.1 version\)/);
    assert.equal((await emitAckOk(socket, "send_message", { room: "check", text: "still here" })).id, 2);
    install(wasm("chat"), { atomic: true });
    await waitFor(
      async () => (await api("GET", "/api/v1/plugins")).body.plugins.some((p) => p.name === "chat" && p.last_error === null),
      5000,
      "a good file to clear the error",
    );
  });

  test("POST reload and SIGHUP reload on demand; an unchanged file stays as it is", async () => {
    const reloaded = await api("POST", "/api/v1/plugins/chat/reload");
    assert.equal(reloaded.status, 200);
    assert.equal(reloaded.body.result, "unchanged");
    const unknown = await api("POST", "/api/v1/plugins/nope/reload");
    assert.equal(unknown.status, 404);
    const { reloads } = (await api("GET", "/api/v1/plugins")).body;
    host.child.kill("SIGHUP");
    await waitFor(async () => (await api("GET", "/api/v1/plugins")).body.reloads >= reloads + 3, 5000,
      "SIGHUP to reload the manifest and both plugins");
    assert.ok(host.alive(), "SIGHUP does not stop the server");
  });
});

describe("hot reload of the manifest", () => {
  test("plugins are added, removed and reconfigured under traffic; an invalid manifest changes nothing", async () => {
    const chatOnly = manifestToml({ plugins: [chatPlugin()], namespaces: AS_FAST_AS_ACKS });
    const host = await startHost({ manifest: chatOnly });
    const rewrite = (text) => {
      writeFileSync(`${host.manifestPath}.tmp`, text);
      renameSync(`${host.manifestPath}.tmp`, host.manifestPath);
    };
    try {
      const [ann, ben] = await Promise.all(["ann", "ben"].map((user) => connect(host.url, { auth: { user } })));
      await emitAckOk(ann, "join", { room: "steady" });
      await emitAckOk(ben, "join", { room: "steady" });
      const received = collect(ben, "message");
      const disconnects = [];
      for (const socket of [ann, ben]) socket.on("disconnect", (reason) => disconnects.push(reason));
      let running = true;
      let sent = 0;
      const traffic = (async () => {
        while (running) await emitAckOk(ann, "send_message", { room: "steady", text: `t${sent++}` });
      })();

      // Add a plugin in a new namespace.
      rewrite(manifestToml({ plugins: [chatPlugin(), faultyPlugin({ config: { marker: "added" } })], namespaces: AS_FAST_AS_ACKS }));
      const faulty = await waitFor(
        async () => connect(host.url, { namespace: "/faulty", timeout: 1000 }).catch(() => null),
        10000,
        "the added plugin's namespace to accept connections",
      );
      assert.equal((await emitAckOk(faulty, "echo", 1)).marker, "added");

      // Change its config: it restarts with the new one.
      rewrite(manifestToml({ plugins: [chatPlugin(), faultyPlugin({ config: { marker: "changed" } })], namespaces: AS_FAST_AS_ACKS }));
      await waitFor(async () => (await emitAck(faulty, "echo", 2)).marker === "changed", 10000, "the new config");

      // An invalid manifest keeps everything running as it was.
      rewrite(`bogus = 1\n${manifestToml({ plugins: [chatPlugin(), faultyPlugin({ config: { marker: "bad" } })], namespaces: AS_FAST_AS_ACKS })}`);
      await new Promise((resolve) => setTimeout(resolve, 600));
      assert.equal((await emitAckOk(faulty, "echo", 3)).marker, "changed");

      // Remove it: its events get a clear "no handler" error; the socket stays.
      rewrite(chatOnly);
      const removed = await waitFor(
        async () => {
          const reply = await emitAck(faulty, "echo", 4);
          return reply?.error?.code === "unknown_event" ? reply.error : null;
        },
        10000,
        "the removed plugin's events to be refused",
      );
      assert.match(removed.message, /no plugin handles `echo`/);
      assert.ok(faulty.connected);

      running = false;
      await traffic;
      await waitFor(() => received.length === sent, 5000, "every chat message sent during the changes");
      assert.deepEqual(received.map((message) => message.text), Array.from({ length: sent }, (_, i) => `t${i}`));
      assert.deepEqual(disconnects, []);
    } finally {
      closeAllSockets();
      await host.stop();
    }
  });
});
