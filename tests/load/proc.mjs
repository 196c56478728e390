// What a server process uses, read from /proc: CPU time and memory.
import { readFileSync, readdirSync, writeFileSync } from "node:fs";

const CLOCK_TICKS = 100; // Linux USER_HZ

/** User + system CPU seconds a process (or, with `/task/TID` in `pid`, one thread) has used. */
export function cpuSeconds(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(") ") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}

/** CPU seconds the process's threads have used, summed by thread name (as the kernel keeps it, 15 bytes). */
export function threadCpuSeconds(pid) {
  const byName = {};
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const name = readFileSync(`/proc/${pid}/task/${tid}/comm`, "utf8").trim();
      byName[name] = (byName[name] ?? 0) + cpuSeconds(`${pid}/task/${tid}`);
    } catch {
      // the thread ended meanwhile
    }
  }
  return byName;
}

/** The process's resident memory now (`rss`) and its peak (`peak`), in KiB. */
export function memoryKib(pid) {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kib = (field) => Number(status.match(new RegExp(`^${field}:\\s+(\\d+) kB$`, "m"))[1]);
  return { rss: kib("VmRSS"), peak: kib("VmHWM") };
}

/** Starts the peak (`memoryKib(pid).peak`) again from the current RSS, so a peak belongs to one phase. */
export function resetPeak(pid) {
  writeFileSync(`/proc/${pid}/clear_refs`, "5");
}

/** The machine's CPU time so far, in clock ticks: `{ busy, total }` over all cores. */
export function machineTicks() {
  // user nice system idle iowait irq softirq steal (guest time is in user already)
  const ticks = readFileSync("/proc/stat", "utf8").split("\n")[0].split(/\s+/).slice(1, 9).map(Number);
  const total = ticks.reduce((sum, n) => sum + n, 0);
  return { busy: total - ticks[3] - ticks[4], total }; // less idle and iowait
}

/** The 1, 5 and 15 minute load averages, as `uptime` prints them. */
export function loadAverage() {
  return readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");
}
