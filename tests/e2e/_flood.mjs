import { readFileSync } from "node:fs";
import { connect, emitAckOk, faultyPlugin, startHost } from "./harness.mjs";
import { openRawSocket } from "./raw_socket.mjs";

const kind = process.argv[2] ?? "pong";
const floods = Number(process.argv[3] ?? 2);
const host = await startHost({ plugins: [faultyPlugin()], namespaces: { "/faulty": { events_per_second: 100000, event_burst: 100000 } } });
const pid = host.child.pid;
const cpu = () => { const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" "); return (Number(f[11]) + Number(f[12])) / 100; };
// One masked client frame: FIN + opcode, MASK + length 1, zero mask, payload.
const frame = kind === "ping" ? Buffer.from([0x89, 0x81, 0, 0, 0, 0, 0x78]) : Buffer.from([0x81, 0x81, 0, 0, 0, 0, 0x33]);
const chunk = Buffer.concat(Array(150000).fill(frame));
const bystander = await connect(host.url, { namespace: "/faulty", transports: ["websocket"] });
async function latencies(ms) {
  const until = Date.now() + ms; const all = [];
  while (Date.now() < until) { const t = process.hrtime.bigint(); await emitAckOk(bystander, "echo", { n: 1 }); all.push(Number(process.hrtime.bigint() - t) / 1e6); }
  all.sort((a, b) => a - b); return { acks: all.length, p50: all[all.length >> 1].toFixed(2), p99: all[Math.floor(all.length * 0.99)].toFixed(2) };
}
console.log("quiet", JSON.stringify(await latencies(2000)));
const sockets = [];
for (let n = 0; n < floods; n++) sockets.push(await openRawSocket(host.port, "/faulty"));
let running = true; let sent = 0;
for (const s of sockets) (async () => { while (running) { await new Promise((r) => s.writeRaw(chunk) ? setImmediate(r) : setTimeout(r, 1)); sent += 150000; } })();
const c0 = cpu(); const t0 = Date.now();
const during = await latencies(5000);
const secs = (Date.now() - t0) / 1000;
console.log(kind, floods, "flooding", JSON.stringify(during), "server cpu", ((cpu() - c0) / secs).toFixed(2), "cores; frames written by client", (sent / secs / 1e6).toFixed(2), "M/s");
running = false;
process.exit(0);
