// How a call's optimistic commit should be done in Redis, measured: calls
// each read one key and write it + 1, with `--clients` concurrent callers
// for `--seconds`, all on one key (contended) or each on its own.
// - WATCH/MULTI/EXEC: WATCH + GET, then MULTI SET EXEC (a nil EXEC is a
//   conflict). WATCH belongs to a connection, so each concurrent call needs
//   a connection of its own for as long as it runs.
// - Lua: one script reads the value and its version, another checks the
//   version and writes (what host/src/cluster/redis.rs does), on any
//   connection, so calls share one multiplexed connection.
//
//   node tests/load/commit_mechanisms.mjs [--clients 32] [--seconds 5]
import net from "node:net";
import { parseArgs } from "node:util";

import { startRedis } from "../e2e/redis.mjs";

const { values } = parseArgs({
  options: { clients: { type: "string", default: "32" }, seconds: { type: "string", default: "5" } },
});
const CLIENTS = Number(values.clients);
const SECONDS = Number(values.seconds);

/** A minimal RESP2 connection: `send(...commands)` writes them at once and resolves to their replies. */
async function resp(port) {
  const socket = net.connect(port, "127.0.0.1");
  await new Promise((resolve) => socket.once("connect", resolve));
  socket.setNoDelay(true);
  let buffer = Buffer.alloc(0);
  const waiting = [];
  const parse = (at) => {
    const end = buffer.indexOf("\r\n", at);
    if (end < 0) return null;
    const line = buffer.toString("utf8", at + 1, end);
    const type = String.fromCharCode(buffer[at]);
    if (type === "+" || type === "-") return { value: type === "-" ? new Error(line) : line, next: end + 2 };
    if (type === ":") return { value: Number(line), next: end + 2 };
    const length = Number(line);
    if (type === "$") {
      if (length < 0) return { value: null, next: end + 2 };
      if (buffer.length < end + 2 + length + 2) return null;
      return { value: buffer.toString("utf8", end + 2, end + 2 + length), next: end + 2 + length + 2 };
    }
    if (length < 0) return { value: null, next: end + 2 };
    const items = [];
    let next = end + 2;
    for (let index = 0; index < length; index += 1) {
      const item = parse(next);
      if (!item) return null;
      items.push(item.value);
      next = item.next;
    }
    return { value: items, next };
  };
  socket.on("data", (chunk) => {
    buffer = Buffer.concat([buffer, chunk]);
    for (let reply = parse(0); reply; reply = buffer.length ? parse(0) : null) {
      buffer = buffer.subarray(reply.next);
      waiting.shift()(reply.value);
    }
  });
  const encode = (args) => `*${args.length}\r\n${args.map((arg) => `$${Buffer.byteLength(String(arg))}\r\n${arg}\r\n`).join("")}`;
  return {
    send: (...commands) => {
      socket.write(commands.map(encode).join(""));
      return Promise.all(commands.map(() => new Promise((resolve) => waiting.push(resolve))));
    },
    close: () => socket.destroy(),
  };
}

const READ = `local v = redis.call('GET', KEYS[1]) or '0'
return {v, redis.call('HGET', KEYS[2], KEYS[1]) or '0'}`;
const COMMIT = `if (redis.call('HGET', KEYS[2], KEYS[1]) or '0') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('HSET', KEYS[2], KEYS[1], redis.call('HINCRBY', KEYS[2], '#', 1))
return 1`;

const mechanisms = {
  async "WATCH/MULTI/EXEC"(connection, key) {
    for (let runs = 1; ; runs += 1) {
      const [, value] = await connection.send(["WATCH", key], ["GET", key]);
      const replies = await connection.send(["MULTI"], ["SET", key, Number(value ?? 0) + 1], ["EXEC"]);
      if (replies[2] !== null) return runs;
    }
  },
  async "Lua, versioned"(connection, key) {
    for (let runs = 1; ; runs += 1) {
      const [[value, version]] = await connection.send(["EVAL", READ, 2, key, "{b}versions"]);
      const [applied] = await connection.send(["EVAL", COMMIT, 2, key, "{b}versions", version, Number(value) + 1]);
      if (applied === 1) return runs;
    }
  },
};

async function measure(port, name, contended) {
  const shared = name.startsWith("Lua") ? await resp(port) : null;
  const connections = await Promise.all(Array.from({ length: CLIENTS }, () => shared ?? resp(port)));
  const latencies = [];
  let runs = 0;
  const deadline = Date.now() + SECONDS * 1000;
  await Promise.all(
    connections.map(async (connection, index) => {
      const key = contended ? `{b}hot:${name}` : `{b}own:${name}:${index}`;
      while (Date.now() < deadline) {
        const started = performance.now();
        const ran = await mechanisms[name](connection, key);
        runs += ran;
        latencies.push(performance.now() - started);
      }
    }),
  );
  for (const connection of new Set(connections)) connection.close();
  latencies.sort((a, b) => a - b);
  const p99 = latencies[Math.floor(latencies.length * 0.99)];
  const retries = (runs - latencies.length) / latencies.length;
  console.log(
    `| ${name} | ${contended ? "one key" : "own keys"} | ${Math.round(latencies.length / SECONDS)} | ${p99.toFixed(2)} | ${retries.toFixed(2)} | ${new Set(connections).size} |`,
  );
}

const redis = await startRedis();
const port = Number(new URL(redis.url).port);
console.log(`${CLIENTS} concurrent calls, ${SECONDS} s each`);
console.log("| mechanism | keys | commits/s | p99 ms | retries per commit | connections |");
console.log("|---|---|---:|---:|---:|---:|");
for (const contended of [false, true]) {
  for (const name of Object.keys(mechanisms)) await measure(port, name, contended);
}
await redis.stop();
