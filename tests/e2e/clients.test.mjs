// Socket.IO clients beyond JavaScript, from their registries: python-socketio
// runs a round trip (an ack, binary both ways, a room broadcast, a refused
// connection) against a node, and the test checks what each step got.

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import path from "node:path";
import { after, before, test } from "node:test";
import { promisify } from "node:util";

import { REPO, chatPlugin, faultyPlugin, manifestToml, startHost } from "./harness.mjs";
import { HS256_AUTH, tokenFor } from "./tokens.mjs";

const run = promisify(execFile);
const PYTHON = path.join(REPO, "target/tools/venv/bin/python");

let host;

before(async () => {
  host = await startHost({
    manifest:
      manifestToml({ plugins: [chatPlugin(), faultyPlugin({ namespaces: ["/"], events: ["echo", "relay"] })] }) +
      HS256_AUTH,
  });
});

after(async () => {
  await host?.stop();
});

test("python-socketio: an ack, binary both ways, a room broadcast and a refused connection", async () => {
  const { stdout } = await run(
    PYTHON,
    [path.join(REPO, "tests/clients/python/round_trip.py"), host.url, tokenFor("py-alice"), tokenFor("py-bob")],
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
