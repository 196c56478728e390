// Logs and secrets: a server run with every secret set (API token, HS256
// secret, a Redis password checked by a real redis-server) and debug logging,
// driven through connections, events, a refused API call, a plugin logging
// hostile client text and a broken manifest, prints none of the secrets in
// any line of its output or of `switchboard check`'s; and text from clients
// and plugins cannot break or colour a log line.

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";

import {
  chatPlugin,
  closeAllSockets,
  connect,
  emitAckOk,
  faultyPlugin,
  FAULTY_EVENTS,
  manifestToml,
  runSwitchboard,
  spawnServe,
  tempDir,
  waitFor,
  writeManifest,
} from "./harness.mjs";
import { startRedis } from "./redis.mjs";
import { signToken } from "./tokens.mjs";

const fresh = (label) => `${label}-${randomBytes(12).toString("hex")}`;
const SECRETS = {
  "API token": fresh("api-token"),
  "JWT secret": fresh("jwt-secret-of-at-least-32-bytes"),
  "Redis password": fresh("redis-password"),
};

/** Everything at debug but the compiler's internals. */
const LOG_FILTER = "debug,cranelift_codegen=info,wasmtime_cranelift=info,wasmtime=info";

/** What a hostile client sends a plugin that logs it: a forged line, a colour, a bell. */
const HOSTILE = "hello\nINFO forged: admin logged in\r\u001b[31mred\u001b[0m\u0007 done";
const HOSTILE_ESCAPED = String.raw`hello\nINFO forged: admin logged in\r\u{1b}[31mred\u{1b}[0m\u{7} done`;

/** How every line tracing-subscriber writes begins: a timestamp and a level. */
const LOG_LINE = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z +(TRACE|DEBUG|INFO|WARN|ERROR) /;

function manifest(redisUrl, { extra = "" } = {}) {
  return (
    manifestToml({
      server: { cache_dir: tempDir() },
      plugins: [chatPlugin(), faultyPlugin({ events: [...FAULTY_EVENTS, "log"] })],
    }) +
    `\n[api]\ntoken = "${SECRETS["API token"]}"\n` +
    `\n[auth]\nsecret = "${SECRETS["JWT secret"]}"\n` +
    `\n[cluster]\nredis_url = "${redisUrl}"\n${extra}`
  );
}

/** Fails naming the secret and the line if any output holds a secret's value. */
function assertNoSecret(label, output) {
  for (const [name, value] of Object.entries(SECRETS)) {
    const line = output.split("\n").find((line) => line.includes(value));
    assert.equal(line, undefined, `${label} shows the ${name}`);
  }
}

/** `switchboard serve` with every byte of its output kept, resolved once it listens. */
async function serveCapturingAll(manifestPath) {
  const proc = spawnServe(manifestPath, { env: { RUST_LOG: LOG_FILTER, NO_COLOR: "1" } });
  const output = { stdout: "", stderr: "" };
  proc.child.stdout.on("data", (chunk) => (output.stdout += chunk));
  proc.child.stderr.on("data", (chunk) => (output.stderr += chunk));
  const exited = () => proc.child.exitCode !== null || proc.child.signalCode !== null;
  await waitFor(() => /switchboard listening on/.test(output.stdout) || exited(), 30000, "the ready line");
  const url = output.stdout.match(/switchboard listening on (http:\/\/\S+)/)?.[1];
  assert.ok(url, `no ready line; stderr:\n${output.stderr.slice(-4000)}`);
  return { proc, output, url };
}

describe("a server with every secret set", () => {
  let redis;
  let redisUrl;
  let manifestPath;
  let server;

  before(async () => {
    redis = await startRedis({ args: ["--requirepass", SECRETS["Redis password"]] });
    redisUrl = `redis://default:${SECRETS["Redis password"]}@127.0.0.1:${redis.port}`;
    manifestPath = writeManifest(manifest(redisUrl));
    server = await serveCapturingAll(manifestPath);
  });

  after(async () => {
    closeAllSockets();
    server?.proc.child.kill("SIGKILL");
    await redis?.stop();
  });

  test("prints none of them while it serves, refuses, logs hostile text and rejects a manifest", async () => {
    const { url, output } = server;
    const token = signToken({ sub: "alice" }, { key: SECRETS["JWT secret"] });

    const chat = await connect(url, { auth: { token } });
    await emitAckOk(chat, "join", { room: "lobby" });
    await emitAckOk(chat, "send_message", { room: "lobby", text: "hi\nthere" });
    const forged = signToken({ sub: "mallory" }, { key: "not-the-secret-not-the-secret-123" });
    await assert.rejects(connect(url, { auth: { token: forged } }));

    const wrongToken = await fetch(`${url}/api/v1/emit`, {
      method: "POST",
      headers: { authorization: "Bearer wrong", "content-type": "application/json" },
      body: JSON.stringify({ namespace: "/", to: { room: "lobby" }, event: "news", data: 1 }),
    });
    assert.equal(wrongToken.status, 401);

    const faulty = await connect(url, { namespace: "/faulty", auth: { token } });
    await emitAckOk(faulty, "log", HOSTILE);
    await waitFor(() => output.stderr.includes("hello\\nINFO forged"), 5000, "the plugin's log line");

    // A manifest the running server rejects, with an error that names the Redis URL.
    writeFileSync(manifestPath, manifest(redisUrl, { extra: 'ca_file = "ca.pem"\n' }));
    await waitFor(() => output.stderr.includes("manifest not applied"), 10000, "the manifest's rejection");
    assert.match(output.stderr, /does not use TLS/);

    server.proc.child.kill("SIGTERM");
    await server.proc.exited;
    await server.proc.closed;
    assert.match(output.stderr, / DEBUG /, "debug logging was on");
    assertNoSecret("serve's stdout", output.stdout);
    assertNoSecret("serve's stderr", output.stderr);
  });

  test("a plugin's log line keeps embedded newlines and escapes on one line", () => {
    const { stderr } = server.output;
    const pluginLines = stderr.split("\n").filter((line) => / INFO (.*: )?plugin: hello/.test(line));
    assert.equal(pluginLines.length, 1, pluginLines.join("\n"));
    assert.ok(pluginLines[0].includes(HOSTILE_ESCAPED), pluginLines[0]);
    assert.doesNotMatch(stderr, /[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/, "no control character but line ends");
    const strays = stderr.split("\n").filter((line) => line !== "" && !LOG_LINE.test(line));
    assert.deepEqual(strays, [], "every line of stderr is a whole log line");
  });

  test("`check` prints none of them, for a valid manifest and one with an error", async () => {
    const valid = await runSwitchboard(["check", writeManifest(manifest(redisUrl))], {
      env: { RUST_LOG: LOG_FILTER },
    });
    assert.equal(valid.code, 0, valid.stderr);
    assert.match(valid.stdout, /cluster redis:\/\/default:\*\*\*\*@127\.0\.0\.1:\d+/);
    const broken = await runSwitchboard(
      ["check", writeManifest(manifest(redisUrl, { extra: 'ca_file = "ca.pem"\n' }))],
      { env: { RUST_LOG: LOG_FILTER } },
    );
    assert.equal(broken.code, 1);
    assert.match(broken.stderr, /does not use TLS/);
    const mistyped = await runSwitchboard(
      ["check", writeManifest(manifest(redisUrl).replace(`"${SECRETS["API token"]}"`, "7310573105"))],
      { env: { RUST_LOG: LOG_FILTER } },
    );
    assert.equal(mistyped.code, 1);
    assert.match(mistyped.stderr, /expected a string/);
    assert.doesNotMatch(mistyped.stderr, /7310573105/);
    const fromEnvironment = await runSwitchboard(
      ["check", writeManifest(manifest("redis://overridden:1", { extra: 'ca_file = "ca.pem"\n' }))],
      {
        env: {
          RUST_LOG: LOG_FILTER,
          SWITCHBOARD_API_TOKEN: SECRETS["API token"],
          SWITCHBOARD_JWT_SECRET: SECRETS["JWT secret"],
          SWITCHBOARD_REDIS_URL: redisUrl,
        },
      },
    );
    assert.equal(fromEnvironment.code, 1);
    assert.match(fromEnvironment.stderr, /redis:\/\/default:\*\*\*\*@127\.0\.0\.1:\d+ does not use TLS/);
    for (const [label, run] of Object.entries({ valid, broken, mistyped, fromEnvironment })) {
      assertNoSecret(`check of the ${label} manifest (stdout)`, run.stdout);
      assertNoSecret(`check of the ${label} manifest (stderr)`, run.stderr);
    }
  });

  test("a wrong Redis password is reported without the password", async () => {
    const wrong = `${SECRETS["Redis password"]}-wrong`;
    const run = await runSwitchboard(
      ["serve", "--manifest", writeManifest(manifest(redisUrl.replace(SECRETS["Redis password"], wrong))), "--listen", "127.0.0.1:0"],
      { env: { RUST_LOG: LOG_FILTER } },
    );
    assert.equal(run.code, 1, run.stderr);
    assert.match(run.stderr, /refused the credentials/);
    assert.ok(!`${run.stdout}${run.stderr}`.includes(wrong), run.stderr.slice(-2000));
    assertNoSecret("serve with a wrong Redis password", `${run.stdout}${run.stderr}`);
  });
});
