// Every handler call is a transaction: its state writes and emits take effect
// together when it succeeds and not at all when it fails, and concurrent calls
// are serializable, on one node in memory and on two nodes sharing a real
// redis-server. Uses the test-only `ledger` plugin (plugins/testing/ledger).

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { closeAllSockets, collect, connect, emitAck, emitAckError, emitAckOk, manifestToml, metric, startHost, unique, waitFor, wasm } from "./harness.mjs";
import { startRedis } from "./redis.mjs";

const LEDGER_EVENTS = ["vote", "tally", "count", "write", "write_then_trap", "write_then_fail", "wait_then_bump", "bump", "open", "hatch_then_trap", "read"];

function ledgerPlugin() {
  return {
    name: "ledger",
    path: wasm("ledger"),
    namespaces: ["/ledger"],
    events: LEDGER_EVENTS,
    // A burst of 600 calls queues behind the concurrency limit.
    limits: { time_ms: 10_000, queue_ms: 60_000 },
  };
}

const NAMESPACES = { "/ledger": { events_per_second: 10_000, event_burst: 10_000 } };
// Hundreds of sockets from one loopback address.
const SERVER = { connections_per_second_per_ip: 10_000, connection_burst_per_ip: 10_000 };

const BACKENDS = {
  async "one node in memory"() {
    const host = await startHost({ plugins: [ledgerPlugin()], namespaces: NAMESPACES, server: SERVER });
    return { nodes: [host, host], stop: () => host.stop() };
  },
  async "two nodes on Redis"() {
    const redis = await startRedis();
    const manifest =
      manifestToml({ plugins: [ledgerPlugin()], namespaces: NAMESPACES, server: SERVER }) +
      `\n[cluster]\nredis_url = "${redis.url}"\nprefix = "${unique("ledger")}"\n`;
    const nodes = await Promise.all([startHost({ manifest }), startHost({ manifest })]);
    return {
      nodes,
      async stop() {
        await Promise.all(nodes.map((node) => node.stop()));
        await redis.stop();
      },
    };
  },
};

const ledger = (node, auth) => connect(node.url, { namespace: "/ledger", auth });

for (const [backend, start] of Object.entries(BACKENDS)) {
  describe(`transactions, ${backend}`, () => {
    let cluster;
    let nodeA;
    let nodeB;

    before(async () => {
      cluster = await start();
      [nodeA, nodeB] = cluster.nodes;
    });

    after(async () => {
      closeAllSockets();
      await cluster?.stop();
    });

    test("a handler that writes, then traps or fails, leaves nothing and emits nothing", async () => {
      const watcher = await ledger(nodeA);
      const written = collect(watcher, "written");
      const caller = await ledger(nodeA);
      const trapped = unique("trapped");
      const failed = unique("failed");
      assert.equal((await emitAckError(caller, "write_then_trap", { key: trapped })).code, "plugin_trapped");
      assert.equal((await emitAckError(caller, "write_then_fail", { key: failed })).code, "failed_on_purpose");
      const kept = unique("kept");
      assert.deepEqual(await emitAckOk(caller, "write", { key: kept }), { written: kept });

      // Sent from the same node after the failed calls returned: by the time
      // the committed call's emit arrives, theirs would have.
      await waitFor(() => written.length >= 1, 5000, "the committed call's emit");
      assert.deepEqual(written, [{ key: kept }]);
      for (const node of [nodeA, nodeB]) {
        const reader = await ledger(node);
        for (const key of [trapped, failed, `${trapped}:set`, `${failed}:set`]) {
          assert.deepEqual(await emitAckOk(reader, "read", { key }), { value: null }, `${key} on ${node.url}`);
        }
        assert.deepEqual(await emitAckOk(reader, "read", { key: kept }), { value: "written" });
      }
    });

    test("600 votes in one burst over two nodes: each user counted once, every count matches a vote", async () => {
      const poll = unique("poll");
      const SOCKETS_PER_NODE = 100;
      const VOTES_PER_SOCKET = 3;
      const sockets = await Promise.all(
        Array.from({ length: 2 * SOCKETS_PER_NODE }, (_, index) => ledger(index % 2 ? nodeB : nodeA)),
      );
      // Socket pair k (one per node) votes for the same users with different
      // options, at the same moment: each user votes twice, once per node.
      const votes = sockets.flatMap((socket, index) => {
        const pair = Math.floor(index / 2);
        const option = index % 2 ? "b" : "a";
        return Array.from({ length: VOTES_PER_SOCKET }, (_, k) => ({ socket, user: `user-${pair * VOTES_PER_SOCKET + k}`, option }));
      });
      assert.equal(votes.length, 600);
      const acks = await Promise.all(
        votes.map(async ({ socket, user, option }) => ({
          user,
          option,
          ack: await emitAck(socket, "vote", { poll, user, option }, { timeout: 60_000 }),
        })),
      );
      const counted = new Map();
      const perOption = { a: 0, b: 0 };
      for (const { user, option, ack } of acks) {
        assert.ok(!ack.error, `vote of ${user} failed: ${JSON.stringify(ack.error)}`);
        if (ack.counted) {
          assert.ok(!counted.has(user), `${user} was counted twice`);
          counted.set(user, option);
          perOption[option] += 1;
        }
      }
      const users = votes.length / 2;
      assert.equal(counted.size, users, "every user counted once");
      for (const node of [nodeA, nodeB]) {
        const tally = await emitAckOk(await ledger(node), "tally", { poll });
        assert.equal(tally.voters, users);
        assert.deepEqual(
          Object.fromEntries(Object.entries(tally.counts).sort()),
          Object.fromEntries(Object.entries(perOption).filter(([, n]) => n > 0).sort()),
          "the counts are exactly the counted votes",
        );
      }
    });

    test("a call whose read is changed before it commits runs again on fresh state", async () => {
      const key = unique("counter");
      const gate = unique("gate");
      const waiting = await ledger(nodeA);
      const other = await ledger(nodeB);
      const slow = emitAck(waiting, "wait_then_bump", { key, gate }, { timeout: 20_000 });
      // The slow call has read `key` (0) and waits at the gate.
      await waitFor(
        async () => (await emitAckOk(other, "read", { key: `reading:${key}` })).value === "1",
        10_000,
        "the slow call to read its key",
      );
      assert.deepEqual(await emitAckOk(other, "bump", { key }), { value: 1 });
      await emitAckOk(other, "open", { gate });
      assert.deepEqual(await slow, { value: 2, attempts: 2 }, "run again after the conflict, on the bumped value");
      assert.deepEqual(await emitAckOk(other, "read", { key }), { value: "2" });
      const conflicts = await metric(nodeA.url, "switchboard_plugin_conflicts_total", { plugin: "ledger" });
      assert.ok(conflicts >= 1, "the conflict is counted");
    });

    test("calls of one node that keep writing one key take turns on it instead of conflicting", async () => {
      const key = unique("hot");
      const SOCKETS = 10;
      const BUMPS_PER_SOCKET = 40;
      const sockets = await Promise.all(Array.from({ length: SOCKETS }, () => ledger(nodeA)));
      const conflictsBefore = await metric(nodeA.url, "switchboard_plugin_conflicts_total", { plugin: "ledger" });
      // Each socket bumps as soon as its last bump is acked: ten calls on the key at once, all the time.
      const values = (
        await Promise.all(
          sockets.map(async (socket) => {
            const seen = [];
            for (let bump = 0; bump < BUMPS_PER_SOCKET; bump += 1) {
              seen.push((await emitAckOk(socket, "bump", { key }, { timeout: 20_000 })).value);
            }
            return seen;
          }),
        )
      ).flat();
      const total = SOCKETS * BUMPS_PER_SOCKET;
      assert.deepEqual(
        values.sort((a, b) => a - b),
        Array.from({ length: total }, (_, index) => index + 1),
        "each bump counted once",
      );
      assert.deepEqual(await emitAckOk(sockets[0], "read", { key }), { value: String(total) });
      // The calls that read the key before its first conflict conflict (at
      // most one per socket: 9 on Redis here), then the key is hot; a call
      // that waits too long for its turn goes on and may conflict. Without
      // turns, on Redis: 285 conflicts.
      const conflicts = (await metric(nodeA.url, "switchboard_plugin_conflicts_total", { plugin: "ledger" })) - conflictsBefore;
      assert.ok(conflicts <= total / 4, `${conflicts} conflicts for ${total} bumps from ${SOCKETS} sockets of one node`);
    });

    test("the escape hatch goes out even when the call fails; what the call buffered does not", async () => {
      const watcher = await ledger(nodeA, { user: "watcher" });
      const hatched = collect(watcher, "hatched");
      const buffered = collect(watcher, "buffered");
      const written = collect(watcher, "written");
      const caller = await ledger(nodeA);
      const key = unique("hatch");
      assert.equal((await emitAckError(caller, "hatch_then_trap", { key })).code, "plugin_trapped");
      const after = unique("after");
      await emitAckOk(caller, "write", { key: after });
      await waitFor(() => written.some((event) => event.key === after), 5000, "a later committed emit");
      assert.deepEqual(hatched, [{ key }]);
      assert.deepEqual(buffered, []);
      assert.deepEqual(await emitAckOk(await ledger(nodeB), "read", { key }), { value: "1" }, "the immediate counter stayed");
    });
  });
}
