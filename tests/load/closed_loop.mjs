// Closed-loop load: every socket sends an event and waits for its ack before
// sending the next, so the server's throughput sets the pace.
import { cpuSeconds } from "./proc.mjs";

const WARMUP_MS = 1000;

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))];
}

/** One socket's loop until `until`; pushes each round trip (ms) to `latencies`, returns the wrong replies. */
async function loop(socket, until, latencies, request) {
  let n = 0;
  let wrong = 0;
  while (performance.now() < until) {
    n += 1;
    const sent = performance.now();
    const right = await request(socket, n);
    latencies.push(performance.now() - sent);
    if (!right) wrong += 1;
  }
  return wrong;
}

/**
 * Runs `request(socket, n)`, which sends the n-th event and resolves to
 * whether its reply was right, on every socket for a second of warm-up, then
 * for `seconds` while measuring the server process `pid`'s CPU time. Resolves
 * to `{ acks, wrong, acksPerSecond, acksPerCpuSecond, cpuPerSecond, p50, p99 }`
 * (round trips in ms).
 */
export async function closedLoops(sockets, { seconds, pid, request }) {
  const warmupUntil = performance.now() + WARMUP_MS;
  await Promise.all(sockets.map((socket) => loop(socket, warmupUntil, [], request)));
  const latencies = [];
  const cpuBefore = cpuSeconds(pid);
  const started = performance.now();
  const until = started + seconds * 1000;
  const wrongs = await Promise.all(sockets.map((socket) => loop(socket, until, latencies, request)));
  const elapsed = (performance.now() - started) / 1000;
  const cpu = cpuSeconds(pid) - cpuBefore;
  latencies.sort((a, b) => a - b);
  return {
    acks: latencies.length,
    wrong: wrongs.reduce((a, b) => a + b, 0),
    acksPerSecond: latencies.length / elapsed,
    acksPerCpuSecond: latencies.length / cpu,
    cpuPerSecond: cpu / elapsed,
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
  };
}
