// Socket.IO clients beyond JavaScript, from their registries: python-socketio
// (PyPI) and rust_socketio (crates.io) each run a round trip (an ack, binary
// both ways, a room broadcast, a refused connection) against a node, and the
// test checks what each step got.

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import path from "node:path";
import { after, test } from "node:test";
import { promisify } from "node:util";

import { REPO, chatPlugin, faultyPlugin, manifestToml, startHost } from "./harness.mjs";
import { HS256_AUTH, tokenFor } from "./tokens.mjs";

const run = promisify(execFile);
const PYTHON = path.join(REPO, "target/tools/venv/bin/python");
const RUST_CLIENT = path.join(REPO, "tests/clients/rust");
const RUST_TARGET = path.join(REPO, "target/clients-rust");

const hosts = [];

/** A node with chat and the test plugin's `echo` and `relay` on `/`, behind tokens. */
async function host(server = {}) {
  const started = await startHost({
    manifest:
      manifestToml({ server, plugins: [chatPlugin(), faultyPlugin({ namespaces: ["/"], events: ["echo", "relay"] })] }) +
      HS256_AUTH,
  });
  hosts.push(started);
  return started;
}

after(async () => {
  await Promise.all(hosts.map((started) => started.stop()));
});

test("python-socketio: an ack, binary both ways, a room broadcast and a refused connection", async () => {
  const { url } = await host();
  const { stdout } = await run(
    PYTHON,
    [path.join(REPO, "tests/clients/python/round_trip.py"), url, tokenFor("py-alice"), tokenFor("py-bob")],
    { timeout: 60000 },
  );
  const results = JSON.parse(stdout);
  assert.deepEqual(results.echo.echo, { n: 1, text: "héllo" });
  // The bytes came back as bytes, beside the offset connection-state recovery appends.
  assert.deepEqual(results.relay, { bytes: Buffer.from([0, 1, 255]).toString("base64"), n: 2, arguments: 2 });
  assert.deepEqual(
    results.joins.map((join) => join.room),
    ["python", "python"],
  );
  assert.equal(typeof results.send.id, "number");
  assert.equal(results.message.text, "hi from python");
  assert.equal(results.message.from, "py-alice");
  assert.equal(results.message.id, results.send.id);
  assert.equal(results.refused.length, 1, "one connect_error");
  assert.match(results.refused[0].message, /token/i);
});

// The client is built here when missing (scripts/test.sh builds it first): a
// cold build takes minutes. rust_socketio reads a binary event only in the
// exact form `["event",{placeholder}]`: the offset connection-state recovery
// appends to every event breaks it, so this node runs without recovery.
test("rust_socketio: an ack, binary both ways, a room broadcast and a refused connection", { timeout: 900000 }, async () => {
  await run("cargo", ["build", "--quiet", "--manifest-path", path.join(RUST_CLIENT, "Cargo.toml"), "--target-dir", RUST_TARGET], {
    timeout: 900000,
  });
  const { url } = await host({ "recovery.enabled": false });
  const { stdout } = await run(
    path.join(RUST_TARGET, "debug/rust-round-trip"),
    [url, tokenFor("rs-alice"), tokenFor("rs-bob")],
    { timeout: 60000 },
  );
  const results = JSON.parse(stdout);
  // rust_socketio hands an ack's arguments over as one array.
  const [[echo]] = results.echo;
  assert.deepEqual(echo.echo, { n: 1, text: "héllo" });
  assert.deepEqual(results.relay, { binary: Buffer.from([0, 1, 255]).toString("base64") });
  assert.deepEqual(
    results.joins.map(([[join]]) => join.room),
    ["rust", "rust"],
  );
  const [message] = results.message;
  assert.equal(message.text, "hi from rust");
  assert.equal(message.from, "rs-alice");
  assert.equal(message.id, results.send[0][0].id);
  assert.match(JSON.stringify(results.refused), /token/i);
});
