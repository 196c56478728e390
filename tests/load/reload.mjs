// Hot-reload latency: time from a plugin file's atomic rename to the new
// version answering, over 20 reloads alternating two builds, with the
// precompiled-code cache and with it emptied before every reload; and the
// round-trip latency of another plugin's events (chat) during the reloads
// against a steady period.
//
//   node tests/load/reload.mjs [--reloads 20]
//
// Uses target/release/switchboard (build it with `cargo build --release`).
import { copyFileSync, mkdirSync, renameSync, rmSync } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";

import { io } from "socket.io-client";

import { chatPlugin, faultyPlugin, manifestToml, tempDir, wasm, writeManifest } from "../e2e/harness.mjs";
import { serveRelease } from "./servers.mjs";

const { values } = parseArgs({ options: { reloads: { type: "string", default: "20" } } });
const RELOADS = Number(values.reloads);

const connectTo = (url, options) =>
  new Promise((resolve) => {
    const socket = io(url, { transports: ["websocket"], ...options });
    socket.once("connect", () => resolve(socket));
  });

const percentile = (values, p) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))];
};
const now = () => Number(process.hrtime.bigint()) / 1e6;

async function measure(emptyCache) {
  const dir = tempDir();
  const cache = path.join(dir, "cache");
  const file = path.join(dir, "faulty.wasm");
  copyFileSync(wasm("faulty"), file);
  const manifest = writeManifest(
    manifestToml({ server: { cache_dir: cache }, plugins: [chatPlugin(), faultyPlugin({ path: file })] }),
  );
  const host = await serveRelease(manifest);
  const echo = await connectTo(`${host.url}/faulty`);
  const chat = await connectTo(host.url, { auth: { user: "steady" } });
  await chat.emitWithAck("join", { room: "latency" });

  // Chat round trips all along; each is tagged with whether a reload was under way.
  let reloading = false;
  let running = true;
  const chatLatency = { steady: [], reloading: [] };
  const chatLoop = (async () => {
    while (running) {
      const during = reloading;
      const started = now();
      await chat.emitWithAck("send_message", { room: "latency", text: "x" });
      (during || reloading ? chatLatency.reloading : chatLatency.steady).push(now() - started);
    }
  })();
  await new Promise((resolve) => setTimeout(resolve, 1000)); // a steady period first

  const swaps = [];
  for (let index = 0; index < RELOADS; index++) {
    const build = index % 2 === 0 ? "faulty_v2" : "faulty";
    const marker = build === "faulty_v2" ? "v2" : "faulty";
    if (emptyCache) {
      rmSync(cache, { recursive: true, force: true });
      mkdirSync(cache, { recursive: true });
    }
    copyFileSync(wasm(build), `${file}.tmp`);
    reloading = true;
    renameSync(`${file}.tmp`, file);
    const written = now();
    for (;;) {
      const ack = await echo.emitWithAck("echo", index);
      if (ack.marker === marker) break;
    }
    swaps.push(now() - written);
    reloading = false;
    await new Promise((resolve) => setTimeout(resolve, 300));
  }
  running = false;
  await chatLoop;
  echo.close();
  chat.close();
  host.child.kill("SIGTERM");
  return { swaps, chatLatency };
}

const cached = await measure(false);
const uncached = await measure(true);
console.log(`${RELOADS} reloads each, alternating two builds, atomic rename; debounce 200 ms included`);
console.log("| precompiled cache | reload p50 ms | reload p99 ms | chat p99 steady ms | chat p99 during reloads ms |");
console.log("|---|---|---|---|---|");
for (const [name, r] of [["used", cached], ["emptied before each reload", uncached]]) {
  console.log(
    `| ${name} | ${percentile(r.swaps, 50).toFixed(0)} | ${percentile(r.swaps, 99).toFixed(0)} | ` +
      `${percentile(r.chatLatency.steady, 99).toFixed(2)} | ${percentile(r.chatLatency.reloading, 99).toFixed(2)} |`,
  );
}
process.exit(0);
