// The precompiled-code cache: native code is loaded only from a directory of
// the server's user that nobody else can write, and only from entries whose
// header matches the component; otherwise the plugin is compiled again, with a
// warning naming the path and the reason, and still works.

import assert from "node:assert/strict";
import { chmodSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { after, test } from "node:test";

import { closeAllSockets, connect, emitAckOk, faultyPlugin, startHost, tempDir } from "./harness.mjs";

after(closeAllSockets);

/** Starts a server with `cacheDir`, checks the faulty plugin answers, stops it; resolves to its stderr. */
async function serveOnce(cacheDir) {
  const host = await startHost({
    server: { cache_dir: cacheDir },
    plugins: [faultyPlugin()],
    env: { NO_COLOR: "1" },
  });
  try {
    const socket = await connect(host.url, { namespace: "/faulty" });
    assert.deepEqual((await emitAckOk(socket, "echo", "hi")).echo, "hi");
    socket.close();
  } finally {
    await host.stop();
  }
  return host.stderr();
}

test("a private cache directory is created 0700 and its entry is used on the next start", async () => {
  const cacheDir = path.join(tempDir(), "cache");
  const first = await serveOnce(cacheDir);
  assert.doesNotMatch(first, / WARN .*cache/, first);
  assert.equal(statSync(cacheDir).mode & 0o777, 0o700);
  const entries = readdirSync(cacheDir);
  assert.equal(entries.length, 1, entries.join(", "));
  const entry = path.join(cacheDir, entries[0]);
  assert.equal(statSync(entry).mode & 0o777, 0o600);
  const written = statSync(entry).mtimeMs;
  const second = await serveOnce(cacheDir);
  assert.doesNotMatch(second, / WARN .*cache/, second);
  assert.equal(statSync(entry).mtimeMs, written, "the entry was used, not written again");
});

test("a world-writable cache directory is not used: a warning, and the plugin still works", async () => {
  const cacheDir = path.join(tempDir(), "shared");
  mkdirSync(cacheDir);
  chmodSync(cacheDir, 0o777);
  const stderr = await serveOnce(cacheDir);
  const warning = stderr.split("\n").find((line) => line.includes("not using the code cache directory"));
  assert.ok(warning, stderr);
  assert.match(warning, / WARN /);
  assert.ok(warning.includes(cacheDir), warning);
  assert.match(warning, /group or others can write it \(mode 777\)/);
  assert.deepEqual(readdirSync(cacheDir), [], "nothing was read from or written to it");
});

test("a tampered entry is ignored with a warning and replaced; the plugin still works", async () => {
  const cacheDir = path.join(tempDir(), "cache");
  await serveOnce(cacheDir);
  const [name] = readdirSync(cacheDir);
  const entry = path.join(cacheDir, name);
  const code = readFileSync(entry);
  code[code.length - 100] ^= 0xff;
  writeFileSync(entry, code);
  const stderr = await serveOnce(cacheDir);
  const warning = stderr.split("\n").find((line) => line.includes("ignoring cached code"));
  assert.ok(warning, stderr);
  assert.ok(warning.includes(entry), warning);
  assert.match(warning, /does not match the checksum in its header; compiling again/);
  assert.notDeepEqual(readFileSync(entry), code, "the entry was written again");
});
