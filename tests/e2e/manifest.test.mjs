// `switchboard check` and `serve` on good and bad manifests, errors that name
// the file, line and column, HTTP basics and graceful shutdown.

import assert from "node:assert/strict";
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";

import {
  chatPlugin,
  closeAllSockets,
  collect,
  connect,
  disconnected,
  emitAckError,
  emitAckOk,
  faultyPlugin,
  lineOf,
  manifestToml,
  runCheck,
  runSwitchboard,
  startHost,
  tempDir,
  unique,
  wasm,
  writeManifest,
} from "./harness.mjs";

after(() => closeAllSockets());

const GOOD = manifestToml({
  server: { listen: "127.0.0.1:3000" },
  plugins: [chatPlugin(), faultyPlugin({ limits: { time_ms: 200, memory_mib: 32 } })],
});

/**
 * The error line of a failed run: `error: <path>:<line>:<column>: <message>`.
 * Returns `{ line, column, message }`.
 */
function parseError(stderr, manifestPath) {
  const escaped = manifestPath.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const match = stderr.match(new RegExp(`^error: ${escaped}:(\\d+):(\\d+): (.+)$`, "m"));
  assert.ok(match, `stderr has no "error: ${manifestPath}:LINE:COLUMN: ..." line:\n${stderr}`);
  return { line: Number(match[1]), column: Number(match[2]), message: match[3] };
}

/** Runs `check`, asserts exit 1 with an error at `line`, returns the parsed error. */
async function expectCheckError(text, line, options = {}) {
  const result = await runCheck(text, options);
  assert.equal(result.timedOut, false, "check hung");
  assert.equal(result.code, 1, `check exit code ${result.code}; stdout:\n${result.stdout}\nstderr:\n${result.stderr}`);
  const error = parseError(result.stderr, result.manifestPath);
  if (typeof line === "number") {
    assert.equal(error.line, line, `error on line ${error.line}, expected ${line}: ${error.message}`);
  } else {
    assert.ok(line(error.line), `error on line ${error.line}: ${error.message}\nmanifest:\n${text}`);
  }
  assert.ok(error.column >= 1, `column ${error.column}`);
  return { ...error, result };
}

/** Lines from the `n`-th `[[plugins]]` header (0-based) to the line before the next plugin. */
function pluginEntryLines(text, n) {
  const lines = text.split("\n");
  const headers = lines.flatMap((l, i) => (l.trim() === "[[plugins]]" ? [i + 1] : []));
  const start = headers[n];
  const end = (headers[n + 1] ?? lines.length + 1) - 1;
  return (line) => line >= start && line <= end;
}

describe("switchboard check", () => {
  test("a good manifest: exit 0 and a summary naming every plugin", async () => {
    const result = await runCheck(GOOD);
    assert.equal(result.code, 0, `stderr:\n${result.stderr}`);
    assert.match(result.stdout, /chat/);
    assert.match(result.stdout, /faulty/);
    assert.ok(result.stdout.includes(result.manifestPath), `summary does not name the manifest:\n${result.stdout}`);
  });

  test("check and serve take the manifest as an argument or as --manifest", async () => {
    const manifestPath = writeManifest(GOOD);
    const checked = await runSwitchboard(["check", "--manifest", manifestPath]);
    assert.equal(checked.code, 0, `stderr:\n${checked.stderr}`);
    const served = await runSwitchboard(["serve", manifestPath, "--listen", "127.0.0.1:0"], { timeout: 5000 });
    assert.match(served.stdout, /^switchboard listening on /m, `stderr:\n${served.stderr}`);
  });

  test("a setting from the environment wins over the file, and a bad one is reported by its variable", async () => {
    const manifestPath = writeManifest(GOOD);
    const bad = await runSwitchboard(["check", manifestPath], { env: { SWITCHBOARD_SERVER_MAX_CONNECTIONS: "0" } });
    assert.equal(bad.code, 1, bad.stderr);
    assert.match(bad.stderr, /^error: SWITCHBOARD_SERVER_MAX_CONNECTIONS \(for .*\): `max_connections` must be at least 1$/m);
    const unreadable = await runSwitchboard(["check", manifestPath], { env: { SWITCHBOARD_SERVER_PING_INTERVAL_MS: "soon" } });
    assert.equal(unreadable.code, 1, unreadable.stderr);
    assert.match(unreadable.stderr, /^error: SWITCHBOARD_SERVER_PING_INTERVAL_MS: /m);
    const host = await startHost({ env: { SWITCHBOARD_SERVER_PATH: "/realtime" } });
    try {
      const socket = await connect(host.url, { path: "/realtime", auth: { user: unique("env") } });
      assert.ok(socket.connected);
    } finally {
      closeAllSockets();
      await host.stop();
    }
  });

  test("a relative plugin path is resolved against the manifest's directory", async () => {
    const dir = tempDir();
    const text = manifestToml({
      plugins: [chatPlugin({ path: path.relative(dir, wasm("chat")) })],
    });
    const result = await runCheck(text, { dir });
    assert.equal(result.code, 0, `stderr:\n${result.stderr}`);
  });

  test("an unknown field in [server] names the file, line and column", async () => {
    const text = GOOD.replace("[server]\n", '[server]\ncolour = "red"\n');
    const error = await expectCheckError(text, lineOf(text, "colour"));
    assert.equal(error.column, 1);
    assert.match(error.message, /unknown field `colour`/);
  });

  test("an unknown field in a plugin entry", async () => {
    const text = GOOD.replace('name = "faulty"\n', 'name = "faulty"\ncolour = 1\n');
    const error = await expectCheckError(text, lineOf(text, "colour"));
    assert.match(error.message, /unknown field `colour`/);
  });

  test("an unknown field in [plugins.limits]", async () => {
    const text = GOOD.replace("memory_mib = 32", "memory_mib = 32\nfuel = 5");
    const error = await expectCheckError(text, lineOf(text, "fuel"));
    assert.match(error.message, /unknown field `fuel`/);
  });

  test("a missing wasm file points at the plugin entry", async () => {
    const text = GOOD.replace(JSON.stringify(wasm("faulty")), '"does-not-exist.wasm"');
    const error = await expectCheckError(text, pluginEntryLines(text, 1));
    assert.match(error.message, /faulty/);
    assert.match(error.result.stderr, /does-not-exist\.wasm/);
  });

  test("a component of the wrong world (not_a_plugin.wasm) points at the plugin entry", async () => {
    const text = GOOD.replace(JSON.stringify(wasm("faulty")), JSON.stringify(wasm("not_a_plugin")));
    const error = await expectCheckError(text, pluginEntryLines(text, 1));
    assert.match(error.result.stderr, /not_a_plugin\.wasm/);
  });

  test("HTTP routes mapped to a component without `http-handler` point at the plugin entry", async () => {
    const coreOnly = {
      name: "core",
      path: wasm("core_only"),
      namespaces: ["/core"],
      events: ["ping"],
      routes: [{ method: "GET", path: "/apps/core", auth: "none" }],
    };
    const text = manifestToml({ plugins: [chatPlugin(), coreOnly] });
    const error = await expectCheckError(text, pluginEntryLines(text, 1));
    assert.match(error.result.stderr, /does not export `http-handler`/);
  });

  test("a file that is not WebAssembly at all", async () => {
    const dir = tempDir();
    writeFileSync(path.join(dir, "junk.wasm"), "this is not wasm\n");
    const text = manifestToml({ plugins: [chatPlugin({ path: "junk.wasm" })] });
    const error = await expectCheckError(text, pluginEntryLines(text, 0), { dir });
    assert.match(error.result.stderr, /junk\.wasm/);
  });

  test("an event claimed twice in one namespace points at the second claim", async () => {
    const text = manifestToml({
      plugins: [chatPlugin(), faultyPlugin({ namespaces: ["/"], events: ["echo", "send_message"] })],
    });
    const secondEvents = lineOf(text, "events", lineOf(text, 'name = "faulty"'));
    const error = await expectCheckError(text, secondEvents);
    assert.match(error.message, /send_message/);
    assert.match(error.message, /chat/);
  });

  test("the same event in two different namespaces is fine", async () => {
    const text = manifestToml({
      plugins: [chatPlugin(), faultyPlugin({ namespaces: ["/other"], events: ["echo", "send_message"] })],
    });
    const result = await runCheck(text);
    assert.equal(result.code, 0, `stderr:\n${result.stderr}`);
  });

  test("a TOML syntax error names the line", async () => {
    const text = 'version = 1\n\n[server\nlisten = "127.0.0.1:0"\n';
    await expectCheckError(text, 3);
  });

  test("a value of the wrong type names the line", async () => {
    const text = GOOD.replace("time_ms = 200", 'time_ms = "fast"');
    await expectCheckError(text, lineOf(text, "time_ms"));
  });

  test("a missing manifest file is an error, not a crash", async () => {
    const result = await runSwitchboard(["check", path.join(tempDir(), "nope.toml")]);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /^error: .*nope\.toml/m);
  });
});

describe("switchboard serve", () => {
  test("a component of the 0.1.0-style core world loads; what it does not export is refused clearly", async (t) => {
    const host = await startHost({
      plugins: [{ name: "core", path: wasm("core_only"), namespaces: ["/core"], events: ["ping", "schedule"] }],
    });
    t.after(() => host.stop());
    const socket = await connect(host.url, { namespace: "/core" });
    assert.equal(await emitAckOk(socket, "ping", null), "pong");
    assert.deepEqual(await emitAckOk(socket, "schedule", null), { code: "timers_unavailable" });
  });


  test("a plugin naming its namespaces and no events only sees connections there; without namespaces it is an error", async () => {
    const host = await startHost({
      plugins: [{ name: "gate", path: wasm("faulty"), namespaces: ["/push"] }],
    });
    try {
      await assert.rejects(connect(host.url, { namespace: "/push", auth: { deny: true } }), /denied by faulty plugin/,
        "its on-connect refuses a socket");
      const socket = await connect(host.url, { namespace: "/push" });
      assert.equal((await emitAckError(socket, "echo", 1)).code, "unknown_event");
    } finally {
      closeAllSockets();
      await host.stop();
    }
    const forgotten = manifestToml({ plugins: [{ name: "idle", path: wasm("faulty") }] });
    const error = await expectCheckError(forgotten, lineOf(forgotten, 'name = "idle"'));
    assert.match(error.message, /handles no events and no routes.*`namespaces` for a plugin that only sees connections/);
  });

  test("`server.threads` is how many threads run plugin code (and serve sockets); by default one per core", async () => {
    // Thread names as the kernel keeps them, 15 bytes: `switchboard-plugin`.
    const pluginThreads = (host) =>
      readdirSync(`/proc/${host.child.pid}/task`).filter(
        (tid) => readFileSync(`/proc/${host.child.pid}/task/${tid}/comm`, "utf8").trim() === "switchboard-plu",
      ).length;
    for (const [server, expected] of [[{ threads: 1 }, 1], [{}, availableParallelism()]]) {
      const host = await startHost({ server });
      try {
        const socket = await connect(host.url);
        await emitAckOk(socket, "join", { room: unique("threads") });
        assert.equal(pluginThreads(host), expected, `with ${JSON.stringify(server)}`);
      } finally {
        closeAllSockets();
        await host.stop();
      }
    }
  });

  test("a bad manifest fails with the same error as check, without listening", async () => {
    const text = GOOD.replace("[server]\n", '[server]\ncolour = "red"\n');
    const dir = tempDir();
    const manifestPath = writeManifest(text, dir);
    const checked = await runSwitchboard(["check", manifestPath]);
    const served = await runSwitchboard(["serve", "--manifest", manifestPath, "--listen", "127.0.0.1:0"], { timeout: 20000 });
    assert.equal(served.timedOut, false, "serve kept running on a bad manifest");
    assert.equal(served.code, 1, `serve exit ${served.code}; stderr:\n${served.stderr}`);
    assert.doesNotMatch(served.stdout, /listening/);
    const fromCheck = parseError(checked.stderr, manifestPath);
    const fromServe = parseError(served.stderr, manifestPath);
    assert.deepEqual(fromServe, fromCheck);
  });

  test("a missing wasm file fails serve too, pointing at the plugin entry", async () => {
    const text = GOOD.replace(JSON.stringify(wasm("faulty")), '"does-not-exist.wasm"');
    const manifestPath = writeManifest(text);
    const served = await runSwitchboard(["serve", "--manifest", manifestPath, "--listen", "127.0.0.1:0"], { timeout: 20000 });
    assert.equal(served.code, 1, `stderr:\n${served.stderr}`);
    const error = parseError(served.stderr, manifestPath);
    assert.ok(pluginEntryLines(text, 1)(error.line), `line ${error.line}`);
  });

  test("a plugin whose init fails stops check and serve with the same error, naming the plugin entry", async () => {
    const text = manifestToml({ plugins: [chatPlugin(), faultyPlugin({ config: { fail_init: true } })] });
    const manifestPath = writeManifest(text);
    const checked = await runSwitchboard(["check", manifestPath]);
    assert.equal(checked.code, 1, `check runs every plugin's init; stderr:\n${checked.stderr}`);
    const served = await runSwitchboard(["serve", "--manifest", manifestPath, "--listen", "127.0.0.1:0"], { timeout: 20000 });
    assert.equal(served.timedOut, false, "serve kept running with a plugin whose init fails");
    assert.equal(served.code, 1, `stderr:\n${served.stderr}`);
    assert.doesNotMatch(served.stdout, /listening/);
    const error = parseError(served.stderr, manifestPath);
    assert.ok(pluginEntryLines(text, 1)(error.line), `line ${error.line}: ${error.message}`);
    assert.match(error.message, /faulty/);
    assert.deepEqual(parseError(checked.stderr, manifestPath), error);
  });

  test("GET /healthz is 200, static_dir is served at /, and the ready line is printed once", async () => {
    const dir = tempDir();
    mkdirSync(path.join(dir, "public"));
    const page = `<!doctype html><title>${unique("page")}</title>`;
    writeFileSync(path.join(dir, "public", "index.html"), page);
    const host = await startHost({ server: { static_dir: path.join(dir, "public") } });
    try {
      const health = await fetch(`${host.url}/healthz`);
      assert.equal(health.status, 200);
      const index = await fetch(`${host.url}/`);
      assert.equal(index.status, 200);
      assert.equal(await index.text(), page);
      const file = await fetch(`${host.url}/index.html`);
      assert.equal(file.status, 200);
      const missing = await fetch(`${host.url}/nope.js`);
      assert.equal(missing.status, 404);
      assert.equal(host.readyLineCount(), 1);
      assert.deepEqual(host.stdout().trim().split("\n"), [`switchboard listening on ${host.url}`], "stdout has only the ready line");
    } finally {
      await host.stop();
    }
  });

  test("static_dir relative to the manifest", async () => {
    const host = await startHost({ server: { static_dir: "public" } });
    try {
      // The generated manifest lives in a fresh temp dir without public/: 404, not a crash.
      const missing = await fetch(`${host.url}/index.html`);
      assert.equal(missing.status, 404);
      assert.equal((await fetch(`${host.url}/healthz`)).status, 200);
    } finally {
      await host.stop();
    }
  });

  for (const signal of ["SIGTERM", "SIGINT"]) {
    test(`${signal}: connected clients are disconnected and the process exits 0 promptly`, async () => {
      const host = await startHost({});
      const room = unique("shutdown");
      const a = await connect(host.url, { auth: { user: unique("a") } });
      const b = await connect(host.url, { auth: { user: unique("b") }, transports: ["polling"] });
      try {
        await emitAckOk(a, "join", { room });
        await emitAckOk(b, "join", { room });
        const goneA = disconnected(a, 8000);
        const goneB = disconnected(b, 8000);
        const { code, signal: sig, ms, killed } = await host.stop(signal, 8000);
        assert.equal(killed, false, `not stopped within 8 s of ${signal}; stderr:\n${host.stderr().slice(-2000)}`);
        assert.equal(sig, null, `exited by signal ${sig}`);
        assert.equal(code, 0, `exit code ${code}; stderr:\n${host.stderr().slice(-2000)}`);
        assert.ok(ms < 5000, `took ${ms} ms to exit`);
        await goneA;
        await goneB;
      } finally {
        a.close();
        b.close();
        await host.stop("SIGKILL");
      }
    });
  }

  test("an idle server exits 0 on SIGTERM within a second", async () => {
    const host = await startHost({});
    // Right after the ready line: being ready includes handling SIGTERM.
    const { code, signal, ms } = await host.stop("SIGTERM", 5000);
    assert.equal(signal, null, `killed by ${signal} instead of exiting: the ready line came before the SIGTERM handler`);
    assert.equal(code, 0);
    assert.ok(ms < 1000, `took ${ms} ms`);
  });

  test("two servers with the same manifest run side by side on port 0", async () => {
    const [one, two] = await Promise.all([startHost({}), startHost({})]);
    try {
      assert.notEqual(one.port, two.port);
      const a = await connect(one.url, { auth: { user: unique("one") } });
      const b = await connect(two.url, { auth: { user: unique("two") } });
      const room = unique("sep");
      await emitAckOk(a, "join", { room });
      // Separate servers: separate rooms.
      assert.equal((await emitAckOk(b, "join", { room })).members, 1);
      const atA = collect(a, "message");
      await emitAckOk(b, "send_message", { room, text: "only on two" });
      await new Promise((r) => setTimeout(r, 200));
      assert.deepEqual(atA, []);
      a.close();
      b.close();
    } finally {
      await Promise.all([one.stop(), two.stop()]);
    }
  });
});
