// A throwaway `redis-server` (installed by scripts/setup.sh) on a free
// loopback port, killed when the test process exits.

import { spawn } from "node:child_process";
import net from "node:net";

const servers = new Set();
process.on("exit", () => {
  for (const server of servers) server.kill("SIGKILL");
});

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
 * Starts redis-server on `port` (a free one by default) with `args` added.
 * Resolves to `{ port, url, stop() }` once it accepts connections.
 */
export async function startRedis({ port, args = [] } = {}) {
  port ??= await freePort();
  const child = spawn(
    "redis-server",
    ["--bind", "127.0.0.1", "--port", String(port), "--save", "", "--appendonly", "no", ...args],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  servers.add(child);
  let stderr = "";
  child.stderr.on("data", (chunk) => (stderr += chunk));
  const exited = new Promise((resolve) => child.on("exit", resolve));
  const deadline = Date.now() + 10000;
  while (!(await accepts(port))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`redis-server did not start on port ${port}: ${stderr}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    async stop() {
      servers.delete(child);
      child.kill("SIGKILL");
      await exited;
    },
  };
}
