// A throwaway `redis-server` (installed by scripts/setup.sh) on a free
// loopback port, killed when the test file is done.

import { spawn, spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { after } from "node:test";

import { LEFTOVER_GRACE_MS } from "./harness.mjs";

const servers = new Set();
function killServers() {
  for (const server of servers) server.kill("SIGKILL");
}
// Leftovers of a failed test would keep the file's process from exiting (see harness.mjs).
after(() => {
  setTimeout(killServers, LEFTOVER_GRACE_MS).unref();
});
process.on("exit", killServers);

/** A port nobody listens on right now. */
export async function freePort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.unref();
    probe.on("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

async function accepts(port) {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

/**
 * Starts redis-server (or `binary`, e.g. valkey-server) on `port`, or else on
 * a port from `pickPort` (a free one by default), with `args` added (a list,
 * or a function of the port giving one).
 * Resolves to `{ port, url, stop() }` once it accepts connections.
 */
export async function startRedis({ port, pickPort = freePort, args = [], binary = "redis-server" } = {}) {
  if (port !== undefined) return launchRedis(port, args, binary);
  // A port found free can be taken by another process before redis-server
  // binds it (tests run in parallel): then another port is tried.
  for (let attempt = 1; ; attempt++) {
    try {
      return await launchRedis(await pickPort(), args, binary);
    } catch (error) {
      if (attempt === 3) throw error;
    }
  }
}

async function launchRedis(port, args, binary) {
  const child = spawn(
    binary,
    ["--bind", "127.0.0.1", "--port", String(port), "--save", "", "--appendonly", "no", ...(typeof args === "function" ? args(port) : args)],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  servers.add(child);
  // redis-server logs to stdout, including why it could not start.
  let output = "";
  child.stdout.on("data", (chunk) => (output += chunk));
  child.stderr.on("data", (chunk) => (output += chunk));
  const exited = new Promise((resolve) => child.on("exit", resolve));
  const deadline = Date.now() + 10000;
  // Its own word, not a connection: another process may hold the port.
  while (!/Ready to accept connections/.test(output)) {
    if (child.exitCode !== null || Date.now() > deadline) {
      servers.delete(child);
      child.kill("SIGKILL");
      throw new Error(`${binary} did not start on port ${port}:\n${output.slice(-2000)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  child.stdout.removeAllListeners("data");
  child.stdout.resume();
  return {
    port,
    pid: child.pid,
    url: `redis://127.0.0.1:${port}`,
    async stop() {
      servers.delete(child);
      child.kill("SIGKILL");
      await exited;
    },
  };
}

/**
 * A free port whose cluster bus port (port + 10000) is free too, both below
 * the kernel's ephemeral range (32768 and up here), where outgoing
 * connections would otherwise take them at random.
 */
async function freeClusterPort() {
  for (;;) {
    const port = 10000 + Math.floor(Math.random() * 12000);
    const [a, b] = await Promise.all([accepts(port), accepts(port + 10000)]);
    if (!a && !b) return port;
  }
}

/**
 * A Redis Cluster of `shards` masters (no replicas), created with
 * `redis-cli --cluster create`. Resolves to `{ url, stop() }` where `url` is a
 * `redis-cluster://` URL naming every node.
 */
export async function startRedisCluster({ shards = 3, dir }) {
  const nodes = [];
  try {
    for (let index = 0; index < shards; index++) {
      nodes.push(
        await startRedis({
          pickPort: freeClusterPort,
          args: (port) => ["--cluster-enabled", "yes", "--cluster-config-file", path.join(dir, `nodes-${port}.conf`), "--dir", dir],
        }),
      );
    }
    const create = spawnSync(
      "redis-cli",
      ["--cluster", "create", ...nodes.map((node) => `127.0.0.1:${node.port}`), "--cluster-replicas", "0", "--cluster-yes"],
      { encoding: "utf8", timeout: 30000 },
    );
    if (create.status !== 0) throw new Error(`redis-cli --cluster create failed: ${create.stdout}${create.stderr}`);
    const deadline = Date.now() + 20000;
    for (;;) {
      const states = nodes.map(
        (node) => spawnSync("redis-cli", ["-p", String(node.port), "cluster", "info"], { encoding: "utf8" }).stdout,
      );
      if (states.every((info) => info.includes("cluster_state:ok"))) break;
      if (Date.now() > deadline) throw new Error(`cluster not ok:\n${states.join("\n")}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  } catch (error) {
    await Promise.all(nodes.map((node) => node.stop()));
    throw error;
  }
  const [first, ...rest] = nodes;
  return {
    url: `redis-cluster://127.0.0.1:${first.port}?${rest.map((node) => `node=127.0.0.1:${node.port}`).join("&")}`,
    stop: () => Promise.all(nodes.map((node) => node.stop())),
  };
}

/**
 * Certificates for a TLS redis-server on 127.0.0.1, made with openssl in
 * `dir`: `{ ca, cert, key }` paths.
 */
export function makeCertificates(dir) {
  const file = (name) => path.join(dir, name);
  const run = (args) => {
    const result = spawnSync("openssl", args, { encoding: "utf8" });
    if (result.status !== 0) throw new Error(`openssl ${args.join(" ")} failed: ${result.stderr}`);
  };
  writeFileSync(file("san.ext"), "subjectAltName=IP:127.0.0.1\n");
  run(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", file("ca.key"), "-out", file("ca.pem"), "-days", "1", "-subj", "/CN=switchboard-test-ca"]);
  run(["req", "-newkey", "rsa:2048", "-nodes", "-keyout", file("server.key"), "-out", file("server.csr"), "-subj", "/CN=127.0.0.1"]);
  run(["x509", "-req", "-in", file("server.csr"), "-CA", file("ca.pem"), "-CAkey", file("ca.key"), "-CAcreateserial", "-out", file("server.pem"), "-days", "1", "-extfile", file("san.ext")]);
  return { ca: file("ca.pem"), cert: file("server.pem"), key: file("server.key") };
}
