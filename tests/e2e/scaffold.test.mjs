// `switchboard plugin new`: a plugin project made outside the repository
// builds for wasm32-wasip2, passes its own generated test, and its manifest
// serves the plugin to socket.io-client. The SDK, packaged as crates.io would
// get it, builds a plugin too. So do the JavaScript and Python projects, with
// their own test commands.
//
// Each Rust project's `target` is a link to one directory, target/scaffold,
// so the dependencies are compiled once for every run of the suite, and the
// project's manifest still finds its component at `target/...` (with
// CARGO_TARGET_DIR it would not). The JavaScript project installs
// componentize-js from npm's cache, which setup.sh's `npm ci` of
// plugins/js/echo filled with the same version; the Python project is built
// by the componentize-py setup.sh installed in target/tools/venv. These tests
// run after the Rust ones, in this one file, so that their builds and the
// host's compiling of the components (SpiderMonkey, CPython) do not run beside
// the Rust builds and starve the suite's other files.

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import path from "node:path";
import { after, test } from "node:test";
import { promisify } from "node:util";

import { BIN, REPO, collect, connect, emitAckOk, runSwitchboard, startHost, tempDir, waitFor } from "./harness.mjs";

const run = promisify(execFile);
const SHARED_TARGET = path.join(REPO, "target/scaffold");
/** A cold build compiles the SDK's dependencies twice (wasm and native). */
const BUILD_TIMEOUT_MS = 600000;

const hosts = [];

after(async () => {
  await Promise.all(hosts.map((host) => host.stop()));
});

/** Cargo's environment: the project's own `target` link, and our binary for its test. */
function cargoEnv() {
  const { CARGO_TARGET_DIR, ...env } = process.env;
  // Without debug info the shared target stays small (CI's disk is tight).
  return { ...env, SWITCHBOARD_BIN: BIN, CARGO_PROFILE_DEV_DEBUG: "false" };
}

function cargo(dir, args) {
  return run("cargo", args, { cwd: dir, env: cargoEnv(), timeout: BUILD_TIMEOUT_MS, maxBuffer: 16 * 1024 * 1024 });
}

/** `switchboard plugin new NAME` into a new temporary directory; resolves to the project's directory. */
async function newProject(name, extraArgs = []) {
  const dir = path.join(tempDir("switchboard-scaffold-"), name);
  const result = await runSwitchboard(["plugin", "new", name, "--dir", dir, ...extraArgs]);
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stdout, /created plugin `.*`/);
  assert.ok(!dir.startsWith(REPO), `${dir} is inside the repository`);
  return dir;
}

/** A new Rust project, its `target` linked to the shared one. */
async function scaffold(name, extraArgs = []) {
  const dir = await newProject(name, extraArgs);
  mkdirSync(SHARED_TARGET, { recursive: true });
  symlinkSync(SHARED_TARGET, path.join(dir, "target"));
  return dir;
}

async function buildComponent(dir) {
  await cargo(dir, ["build", "--target", "wasm32-wasip2", "--release"]);
}

let greet;
/** The `greet-e2e` project, scaffolded and built once for the tests that need it. */
function greetProject() {
  greet ??= (async () => {
    const dir = await scaffold("greet-e2e");
    await buildComponent(dir);
    return dir;
  })();
  return greet;
}

test("a new project builds outside the repository, passes its own test, fmt and clippy", { timeout: BUILD_TIMEOUT_MS }, async () => {
  const dir = await greetProject();
  assert.deepEqual(readdirSync(dir).sort(), [".gitignore", "Cargo.lock", "Cargo.toml", "README.md", "src", "switchboard.toml", "target", "tests"]);
  assert.ok(existsSync(path.join(SHARED_TARGET, "wasm32-wasip2/release/greet_e2e.wasm")));

  const { stdout } = await cargo(dir, ["test"]);
  assert.match(stdout, /test a_greeting_reaches_the_room_and_is_counted \.\.\. ok/);
  assert.match(stdout, /test result: ok\. 2 passed/);
  // What an author's CI would run next passes on the generated code as it is.
  await cargo(dir, ["fmt", "--check"]);
  await cargo(dir, ["clippy", "--all-targets", "--", "-D", "warnings"]);
});

test("the project's manifest serves the plugin: a greeting reaches the room, counted", { timeout: BUILD_TIMEOUT_MS }, async () => {
  const dir = await greetProject();
  const host = await startHost({ manifestPath: path.join(dir, "switchboard.toml") });
  hosts.push(host);
  const ada = await connect(host.url);
  const grace = await connect(host.url);
  const greetings = [collect(ada, "greeting"), collect(grace, "greeting")];
  assert.deepEqual(await emitAckOk(ada, "join", { room: "lobby" }), { room: "lobby", members: 1 });
  assert.deepEqual(await emitAckOk(grace, "join", { room: "lobby" }), { room: "lobby", members: 2 });

  assert.deepEqual(await emitAckOk(grace, "greet", { room: "lobby", name: "grace" }), { count: 1 });
  await waitFor(() => greetings.every((received) => received.length === 1), undefined, "both members greeted");
  for (const received of greetings) {
    assert.deepEqual(received, [{ text: "hello, grace!", count: 1 }]);
  }
  const refused = await ada.emitWithAck("greet", { room: "lobby" });
  assert.equal(refused.error.code, "invalid_payload");
});

test("the SDK as `cargo package` makes it builds a plugin", { timeout: BUILD_TIMEOUT_MS }, async () => {
  const packageTarget = path.join(SHARED_TARGET, "sdk-package");
  await run(
    "cargo",
    ["package", "-p", "switchboard-sdk", "--no-verify", "--allow-dirty", "--offline", "--target-dir", packageTarget],
    { cwd: path.join(REPO, "plugins"), env: cargoEnv(), timeout: BUILD_TIMEOUT_MS },
  );
  const unpacked = tempDir("switchboard-sdk-");
  const crate = readdirSync(path.join(packageTarget, "package")).find((file) => file.endsWith(".crate"));
  await run("tar", ["xzf", path.join(packageTarget, "package", crate), "-C", unpacked]);
  const [sdk] = readdirSync(unpacked);

  const dir = await scaffold("packaged-sdk", ["--sdk-path", path.join(unpacked, sdk)]);
  await buildComponent(dir);
  assert.ok(existsSync(path.join(SHARED_TARGET, "wasm32-wasip2/release/packaged_sdk.wasm")));
});

test("a name cargo refuses, an occupied directory and --sdk-path for Python are refused, and nothing is written", async () => {
  const keyword = await runSwitchboard(["plugin", "new", "fn", "--dir", path.join(tempDir(), "fn")]);
  assert.equal(keyword.code, 1);
  assert.match(keyword.stderr, /invalid plugin name `fn`: `fn` is a Rust keyword/);

  const occupied = tempDir();
  writeFileSync(path.join(occupied, "notes.txt"), "mine");
  const refused = await runSwitchboard(["plugin", "new", "greet", "--dir", occupied]);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /exists and is not an empty directory/);
  assert.deepEqual(readdirSync(occupied), ["notes.txt"]);

  const sdkForPython = path.join(tempDir(), "py");
  const sdk = await runSwitchboard(["plugin", "new", "greet", "--lang", "python", "--dir", sdkForPython, "--sdk-path", REPO]);
  assert.equal(sdk.code, 1);
  assert.match(sdk.stderr, /`--sdk-path` is for Rust plugins only/);
  assert.ok(!existsSync(sdkForPython));
});

/**
 * `command args` in `dir`, with our binary for the generated test; the
 * environment is the suite's but for NODE_TEST_CONTEXT, which would make a
 * `node --test` inside report to this runner instead of printing its results.
 * The components are compiled into a code cache beside the project, removed
 * with it: a build of these is never loaded again, and each entry is 35 MB.
 */
function runInProject(dir, command, args) {
  const { NODE_TEST_CONTEXT, ...env } = process.env;
  return run(command, args, {
    cwd: dir,
    env: { ...env, SWITCHBOARD_BIN: BIN, SWITCHBOARD_SERVER_CACHE_DIR: path.join(path.dirname(dir), "code-cache") },
    timeout: BUILD_TIMEOUT_MS,
    maxBuffer: 16 * 1024 * 1024,
  });
}

test("a new JavaScript project installs componentize-js from npm's cache, builds and passes its own test", { timeout: BUILD_TIMEOUT_MS }, async () => {
  const dir = await newProject("greet-js", ["--lang", "js"]);
  try {
    assert.deepEqual(readdirSync(dir).sort(), [".gitignore", "README.md", "package.json", "src", "switchboard.toml", "test", "wit"]);
    await runInProject(dir, "npm", ["install", "--prefer-offline", "--no-audit", "--no-fund"]);
    const { stdout } = await runInProject(dir, "npm", ["test"]);
    assert.match(stdout, /ok 1 - a greeting reaches the room and is counted|✔ a greeting reaches the room and is counted/);
    assert.match(stdout, /\bpass 2\b/);
    assert.match(stdout, /\bfail 0\b/);
    assert.ok(existsSync(path.join(dir, "greet-js.wasm")));
  } finally {
    rmSync(path.dirname(dir), { recursive: true, force: true });
  }
});

test("a new Python project builds with setup.sh's componentize-py and passes its own test", { timeout: BUILD_TIMEOUT_MS }, async () => {
  const dir = await newProject("greet-py", ["--lang", "python"]);
  try {
    assert.deepEqual(readdirSync(dir).sort(), [".gitignore", "README.md", "requirements.txt", "src", "switchboard.toml", "test_call.py", "wit"]);
    const python = path.join(REPO, "target/tools/venv/bin/python");
    const { stderr } = await runInProject(dir, python, ["-m", "unittest", "-v"]);
    assert.match(stderr, /test_a_greeting_reaches_the_room_and_is_counted .* \.\.\. ok/);
    assert.match(stderr, /Ran 2 tests/);
    assert.match(stderr, /\nOK\n/);
    assert.ok(existsSync(path.join(dir, "greet-py.wasm")));
  } finally {
    rmSync(path.dirname(dir), { recursive: true, force: true });
  }
});
