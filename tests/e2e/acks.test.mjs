// Server-to-client acks (WIT 0.2.1 `acks.to-socket` and `ack-handler`): a
// plugin sends an event asking a socket for its ack, and its `on-ack` gets the
// client's answer, every argument and binary included, or why none came
// (`ack_timeout`, `disconnected`, `not_connected`), on one node and from a
// socket on another node of a cluster. The test-only conformance plugin's
// `ask` event asks; the answer comes back to the asker as `answer`.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { closeAllSockets, collect, connect, emitAck, manifestToml, startHost, unique, waitFor, wasm } from "./harness.mjs";
import { startRedis } from "./redis.mjs";

const started = [];

function manifest({ cluster, limits, server } = {}) {
  const text = manifestToml({
    server,
    plugins: [{ name: "conformance", path: wasm("conformance"), namespaces: ["/"], events: ["ask"], limits }],
  });
  return cluster ? `${text}\n[cluster]\nredis_url = "${cluster}"\nprefix = "${unique("acks")}"\n` : text;
}

async function host(options) {
  const node = await startHost({ manifest: manifest(options) });
  started.push(node);
  return node;
}

after(async () => {
  closeAllSockets();
  await Promise.all(started.map((node) => node.stop()));
});

/**
 * Has `asker` ask socket `to` for an ack of `event` with `args`; resolves to
 * the `answer` that comes back (the plugin acks `ask` at once, with `true`).
 */
async function ask(asker, { to, event = "question", timeout_ms = 2000, tag = unique("tag") }, ...args) {
  const answers = collect(asker, "answer");
  const asked = await new Promise((resolve) =>
    asker.emit("ask", { to, event, timeout_ms, tag }, ...args, (...acked) => resolve(acked)),
  );
  assert.deepEqual(asked, [true]);
  await waitFor(() => answers.some((answer) => answer.tag === tag), 5000, `the answer to ${tag}`);
  const answer = answers.find((candidate) => candidate.tag === tag);
  assert.equal(answers.filter((candidate) => candidate.tag === tag).length, 1, "one answer per ask");
  return answer;
}

describe("one node", () => {
  let node;
  before(async () => {
    node = await host();
  });

  test("the client's answer reaches the plugin with every argument, binary included, and the question arrived as sent", async () => {
    const [asker, asked] = await Promise.all([connect(node.url), connect(node.url)]);
    const questions = [];
    asked.on("question", (...args) => {
      const callback = args.pop();
      questions.push(args);
      callback("yes", 2, Buffer.from([9, 8]), { nested: { b: 1, a: [Buffer.from([7])] } });
    });
    const answer = await ask(asker, { to: asked.id, tag: "first" }, 1, "two", Buffer.from([3]), { b: 1, a: 2 });
    assert.deepEqual(questions, [[1, "two", Buffer.from([3]), { b: 1, a: 2 }]]);
    assert.equal(answer.socket, asked.id);
    assert.deepEqual(answer.args, ["yes", 2, Buffer.from([9, 8]), { nested: { b: 1, a: [Buffer.from([7])] } }]);
    assert.deepEqual(Object.keys(answer.args[3].nested), ["b", "a"]);
  });

  test("an answer of no arguments is an empty list", async () => {
    const [asker, asked] = await Promise.all([connect(node.url), connect(node.url)]);
    asked.on("question", (callback) => callback());
    const answer = await ask(asker, { to: asked.id });
    assert.deepEqual(answer.args, []);
  });

  test("a client that does not answer in time: ack_timeout", async () => {
    const [asker, asked] = await Promise.all([connect(node.url), connect(node.url)]);
    const ignored = collect(asked, "question");
    const answer = await ask(asker, { to: asked.id, timeout_ms: 200 }, "anyone?");
    assert.equal(answer.error, "ack_timeout");
    assert.deepEqual(ignored, ["anyone?"]);
  });

  test("a socket that leaves before answering: disconnected; no such socket: not_connected", async () => {
    const [asker, asked] = await Promise.all([connect(node.url), connect(node.url)]);
    asked.on("question", () => asked.disconnect());
    assert.equal((await ask(asker, { to: asked.id, timeout_ms: 3000 })).error, "disconnected");
    assert.equal((await ask(asker, { to: "no-such-socket", timeout_ms: 3000 })).error, "not_connected");
  });

  test("a timeout out of range or an oversized tag is refused when asked", async () => {
    const asker = await connect(node.url);
    for (const [question, code] of [
      [{ to: asker.id, event: "question", timeout_ms: 0, tag: "t" }, "invalid_timeout"],
      [{ to: asker.id, event: "question", timeout_ms: 300001, tag: "t" }, "invalid_timeout"],
      [{ to: asker.id, event: "question", timeout_ms: 100, tag: "x".repeat(2000) }, "invalid_tag"],
      [{ to: asker.id, event: "connect", timeout_ms: 100, tag: "t" }, "reserved_event"],
    ]) {
      const reply = await emitAck(asker, "ask", question);
      assert.equal(reply?.error?.code, code, JSON.stringify(reply));
    }
  });
});

test("an answer over max_payload_bytes is not delivered: payload_too_large, its many tiny arguments counted too", async () => {
  const node = await host({ server: { max_payload_bytes: 10000 } });
  const [asker, asked] = await Promise.all([connect(node.url), connect(node.url)]);
  const answers = [() => "x".repeat(15000), () => Array(1000).fill(0), () => ["fits"]];
  asked.on("question", (which, callback) => {
    const answer = answers[which]();
    callback(...(Array.isArray(answer) ? answer : [answer]));
  });
  // A 15 KB answer (under the transport's 2x); 1,000 one-byte arguments (2 KB of text, 33 KB held as arguments).
  assert.equal((await ask(asker, { to: asked.id }, 0)).error, "payload_too_large");
  assert.equal((await ask(asker, { to: asked.id }, 1)).error, "payload_too_large");
  assert.deepEqual((await ask(asker, { to: asked.id }, 2)).args, ["fits"]);
});

test("a plugin waiting for max_pending_acks answers is refused another with overloaded, until one comes", async () => {
  const node = await host({ limits: { max_pending_acks: 2 } });
  const [asker, asked] = await Promise.all([connect(node.url), connect(node.url)]);
  const callbacks = [];
  asked.on("question", (callback) => callbacks.push(callback));
  const answers = collect(asker, "answer");
  for (const tag of ["one", "two"]) {
    assert.equal(await emitAck(asker, "ask", { to: asked.id, event: "question", timeout_ms: 5000, tag }), true);
  }
  const refused = await emitAck(asker, "ask", { to: asked.id, event: "question", timeout_ms: 5000, tag: "three" });
  assert.equal(refused?.error?.code, "overloaded");
  await waitFor(() => callbacks.length === 2, 5000, "both questions");
  callbacks[0]("first");
  await waitFor(() => answers.length === 1, 5000, "the first answer");
  assert.equal(await emitAck(asker, "ask", { to: asked.id, event: "question", timeout_ms: 5000, tag: "four" }), true);
  assert.deepEqual(answers, [{ tag: "one", socket: asked.id, args: ["first"] }]);
});

describe("two nodes over Redis", () => {
  let redis;
  let nodeA;
  let nodeB;
  before(async () => {
    redis = await startRedis();
    const options = { cluster: redis.url };
    const text = manifest(options);
    [nodeA, nodeB] = await Promise.all([startHost({ manifest: text }), startHost({ manifest: text })]);
  });
  after(async () => {
    closeAllSockets();
    await Promise.all([nodeA?.stop(), nodeB?.stop()]);
    await redis?.stop();
  });

  test("a socket on the other node answers; a missing one is not_connected; a silent one times out", async () => {
    const asker = await connect(nodeA.url);
    const asked = await connect(nodeB.url);
    asked.on("question", (...args) => {
      const callback = args.pop();
      if (args[0] !== "silent") callback("from B", ...args, Buffer.from([5]));
    });
    const answer = await ask(asker, { to: asked.id }, "hello", { n: 1 });
    assert.equal(answer.socket, asked.id);
    assert.deepEqual(answer.args, ["from B", "hello", { n: 1 }, Buffer.from([5])]);
    assert.equal((await ask(asker, { to: "no-such-socket", timeout_ms: 1000 })).error, "not_connected");
    assert.equal((await ask(asker, { to: asked.id, timeout_ms: 300 }, "silent")).error, "ack_timeout");
  });
});
