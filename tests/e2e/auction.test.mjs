// The auction plugin on 2 and 3 real nodes sharing Redis: concurrent bids stay
// atomic, HTTP bids and watcher counts cross nodes, and each auction closes
// exactly once, even when the node that scheduled the close has died.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { collect, connect, emitAck, emitAckOk, manifestToml, quiet, startHost, waitFor } from "./harness.mjs";
import { SHORT_RECOVERY, auctionPlugin, call, startApps } from "./apps.mjs";
import { HS256_AUTH, tokenFor } from "./tokens.mjs";

const BID_ERRORS = ["bid_too_low", "auction_closed", "conflict"];

function bidder(node, user) {
  return connect(node.url, { namespace: "/auction", auth: { token: tokenFor(user) } });
}

async function createAuction(node, seller, fields = {}) {
  const created = await call(node, "POST", "/apps/auction/auctions", {
    token: tokenFor(seller),
    body: { item: "a 1961 Gibson", starting_price: 100, min_increment: 1, duration_ms: 600_000, ...fields },
  });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  return created.body;
}

/** Asserts `events` (bid_placed payloads) are seqs 1..n once each, amounts rising with seq. */
function assertCompleteAndRising(events, accepted, who) {
  const bySeq = [...events].sort((a, b) => a.seq - b.seq);
  assert.deepEqual(
    bySeq.map((event) => event.seq),
    accepted.map((_, index) => index + 1),
    `${who} got every accepted bid exactly once`,
  );
  for (const [index, event] of bySeq.entries()) {
    assert.equal(event.amount, accepted[index].amount, `${who}: amount of bid ${event.seq}`);
    if (index > 0) assert.ok(event.amount > bySeq[index - 1].amount, `${who}: amounts strictly increase`);
  }
}

/**
 * Two bidders, one per node, each bidding 500 times (over 10 sockets each,
 * to stay under the namespace's event rate) as fast as acks come: the
 * auction ends at the highest accepted bid, and each bidder is told
 * `outbid` exactly once per accepted bid of theirs the other overtook.
 */
async function raceTwoBidders(nodeA, nodeB) {
  const auction = await createAuction(nodeA, "seller");
  const names = ["racer-a", "racer-b"];
  const SOCKETS = 10;
  const sockets = await Promise.all(
    names.flatMap((name, index) => Array.from({ length: SOCKETS }, () => bidder(index ? nodeB : nodeA, name))),
  );
  // Every socket of a user gets the user's `outbid`: count them on its first.
  const outbid = names.map((_, index) => collect(sockets[index * SOCKETS], "outbid"));
  const accepted = [];
  await Promise.all(
    sockets.map(async (socket, position) => {
      const index = Math.floor(position / SOCKETS);
      for (let k = 0; k < 500 / SOCKETS; k += 1) {
        // Unique amounts, interleaved: racer-a bids even amounts, racer-b odd.
        const amount = 100 + 2 * (k * SOCKETS + (position % SOCKETS)) + index;
        const ack = await emitAck(socket, "place_bid", { id: auction.id, amount }, { timeout: 30_000 });
        if (ack.error) {
          assert.ok(BID_ERRORS.includes(ack.error.code), `unexpected rejection ${JSON.stringify(ack.error)}`);
        } else {
          accepted.push({ seq: ack.seq, amount, bidder: names[index] });
        }
      }
    }),
  );
  accepted.sort((a, b) => a.seq - b.seq);
  assert.deepEqual(
    accepted.map((bid) => bid.seq),
    accepted.map((_, index) => index + 1),
    "accepted bids are numbered 1..n without gaps",
  );
  const overtaken = new Map(names.map((name) => [name, 0]));
  for (let index = 1; index < accepted.length; index += 1) {
    assert.ok(accepted[index].amount > accepted[index - 1].amount, "accepted amounts strictly rise");
    if (accepted[index].bidder !== accepted[index - 1].bidder) {
      overtaken.set(accepted[index - 1].bidder, overtaken.get(accepted[index - 1].bidder) + 1);
    }
  }
  const expected = names.map((name) => overtaken.get(name));
  await waitFor(() => outbid.every((events, index) => events.length >= expected[index]), 10_000, "every outbid notice");
  await quiet(300);
  assert.deepEqual(outbid.map((events) => events.length), expected, "one outbid per overtaken bid");
  const state = await call(nodeB, "GET", `/apps/auction/auctions/${auction.id}`, { token: tokenFor("viewer") });
  assert.equal(state.body.highest_bid, accepted.at(-1).amount);
  assert.equal(state.body.highest_bidder, accepted.at(-1).bidder);
  assert.equal(state.body.bids, accepted.length);
  for (const socket of sockets) socket.close();
}

test("on one node in memory, two bidders racing 1,000 times end consistent, one outbid per overtaken bid", async (t) => {
  const host = await startHost({ manifest: manifestToml({ plugins: [auctionPlugin()] }) + HS256_AUTH });
  t.after(() => host.stop());
  await raceTwoBidders(host, host);
});

describe("auction on two nodes", () => {
  let apps;
  let nodeA;
  let nodeB;

  before(async () => {
    apps = await startApps({ plugins: [auctionPlugin()], prefix: "auction2" });
    [nodeA, nodeB] = apps.nodes;
  });

  after(() => apps?.stop());

  test("40 bidders on two nodes place 2,000 concurrent bids; all end with the same state", async () => {
    const auction = await createAuction(nodeA, "seller");
    const bidders = await Promise.all(
      Array.from({ length: 40 }, (_, index) => bidder(index % 2 ? nodeB : nodeA, `bidder-${index}`)),
    );
    for (const socket of bidders) {
      await emitAckOk(socket, "join_auction", { id: auction.id });
    }
    const placed = bidders.map((socket) => collect(socket, "bid_placed"));
    const outbid = bidders.map((socket) => collect(socket, "outbid"));
    // Unique amounts 100..2099: bidder i's k-th bid is 100 + 40k + i.
    const acks = await Promise.all(
      bidders.flatMap((socket, index) =>
        Array.from({ length: 50 }, async (_, k) => {
          const amount = 100 + 40 * k + index;
          return { bidder: `bidder-${index}`, amount, ack: await emitAck(socket, "place_bid", { id: auction.id, amount }, { timeout: 30_000 }) };
        }),
      ),
    );
    const accepted = [];
    for (const { bidder: user, amount, ack } of acks) {
      if (ack.error) {
        assert.ok(BID_ERRORS.includes(ack.error.code), `unexpected rejection ${JSON.stringify(ack.error)}`);
        assert.ok(ack.error.message.length > 10, "a rejection says why");
      } else {
        assert.equal(ack.accepted, true);
        assert.equal(ack.amount, amount);
        accepted.push({ seq: ack.seq, amount, bidder: user });
      }
    }
    accepted.sort((a, b) => a.seq - b.seq);
    assert.ok(accepted.length > 40, `only ${accepted.length} bids accepted`);
    assert.equal(accepted.at(-1).seq, accepted.length);
    await waitFor(
      () => placed.every((events) => events.length >= accepted.length),
      15_000,
      () => `every bidder to get ${accepted.length} bid_placed (least: ${Math.min(...placed.map((e) => e.length))})`,
    );
    // Whoever led before each accepted bid (and was not its bidder) is told, on its node.
    const expectedOutbid = new Map();
    for (let index = 1; index < accepted.length; index += 1) {
      const previous = accepted[index - 1].bidder;
      if (previous !== accepted[index].bidder) {
        expectedOutbid.set(previous, (expectedOutbid.get(previous) ?? 0) + 1);
      }
    }
    await waitFor(
      () => outbid.reduce((sum, events) => sum + events.length, 0) >= [...expectedOutbid.values()].reduce((a, b) => a + b, 0),
      10_000,
      "every outbid notice",
    );
    await quiet(300);
    for (const [index, events] of placed.entries()) {
      assertCompleteAndRising(events, accepted, `bidder-${index}`);
      assert.equal(outbid[index].length, expectedOutbid.get(`bidder-${index}`) ?? 0, `outbid notices of bidder-${index}`);
    }
    const final = accepted.at(-1);
    for (const node of [nodeA, nodeB]) {
      const state = await call(node, "GET", `/apps/auction/auctions/${auction.id}`, { token: tokenFor("viewer") });
      assert.equal(state.status, 200);
      assert.equal(state.body.highest_bid, final.amount);
      assert.equal(state.body.highest_bidder, final.bidder);
      assert.equal(state.body.bids, accepted.length);
      assert.equal(state.body.watchers, 40);
    }
  });

  test("two bidders, one per node, racing 1,000 times end consistent, one outbid per overtaken bid", async () => {
    await raceTwoBidders(nodeA, nodeB);
  });

  test("an HTTP bid on node B reaches watchers on node A; watcher counts span both nodes", async () => {
    const auction = await createAuction(nodeB, "seller");
    const watcherA = await bidder(nodeA, "watcher-a");
    const watchers = collect(watcherA, "watchers");
    const placed = collect(watcherA, "bid_placed");
    assert.equal((await emitAckOk(watcherA, "join_auction", { id: auction.id })).watchers, 1);
    const watcherB = await bidder(nodeB, "watcher-b");
    const joined = await emitAckOk(watcherB, "join_auction", { id: auction.id });
    assert.equal(joined.watchers, 2);
    assert.equal(joined.highest_bid, null);

    const bid = await call(nodeB, "POST", `/apps/auction/auctions/${auction.id}/bids`, {
      token: tokenFor("http-bidder"),
      body: { amount: 150 },
    });
    assert.equal(bid.status, 200, JSON.stringify(bid.body));
    assert.deepEqual({ accepted: bid.body.accepted, amount: bid.body.amount, seq: bid.body.seq }, { accepted: true, amount: 150, seq: 1 });
    await waitFor(() => placed.length === 1, 5000, "the HTTP bid on node A");
    assert.equal(placed[0].bidder, "http-bidder");
    assert.equal(placed[0].amount, 150);

    await emitAckOk(watcherB, "leave_auction", { id: auction.id });
    const watcherC = await bidder(nodeB, "watcher-c");
    await emitAckOk(watcherC, "join_auction", { id: auction.id });
    watcherC.close();
    await waitFor(
      () => watchers.length >= 5,
      5000,
      () => `watchers back to 1, got ${JSON.stringify(watchers)}; node B said:\n${nodeB.stderr().slice(-3000)}`,
    );
    assert.deepEqual(
      watchers.map((update) => update.count),
      [1, 2, 1, 2, 1],
      "join A, join B, leave B, join C, C disconnects",
    );
  });

  test("rejected bids and bad requests get a reason, over sockets and HTTP", async () => {
    const auction = await createAuction(nodeA, "seller", { starting_price: 500, min_increment: 10 });
    const socket = await bidder(nodeB, "eve");
    const seller = await bidder(nodeA, "seller");
    const tooLow = (await emitAck(socket, "place_bid", { id: auction.id, amount: 499 })).error;
    assert.equal(tooLow.code, "bid_too_low");
    assert.match(tooLow.message, /500/);
    assert.equal((await emitAck(seller, "place_bid", { id: auction.id, amount: 900 })).error.code, "seller_cannot_bid");
    assert.equal((await emitAck(socket, "place_bid", { id: "nope", amount: 900 })).error.code, "auction_not_found");
    assert.equal((await emitAck(socket, "place_bid", { id: auction.id })).error.code, "invalid_payload");
    await emitAckOk(socket, "place_bid", { id: auction.id, amount: 500 });
    const belowIncrement = await call(nodeA, "POST", `/apps/auction/auctions/${auction.id}/bids`, {
      token: tokenFor("frank"),
      body: { amount: 505 },
    });
    assert.equal(belowIncrement.status, 422);
    assert.equal(belowIncrement.body.error.code, "bid_too_low");
    assert.match(belowIncrement.body.error.message, /510/);

    const cases = [
      [{ method: "POST", path: `/apps/auction/auctions/${auction.id}/bids`, body: { amount: 999 } }, 401, "auth_required"],
      [{ method: "POST", path: `/apps/auction/auctions/${auction.id}/bids`, body: { amount: 999 }, token: "forged.token.x" }, 401, "token_malformed"],
      [{ method: "POST", path: "/apps/auction/auctions", body: { item: "" }, token: tokenFor("frank") }, 400, "invalid_body"],
      [{ method: "GET", path: "/apps/auction/auctions/404", token: tokenFor("frank") }, 404, "auction_not_found"],
      [{ method: "DELETE", path: "/apps/auction/auctions/1", token: tokenFor("frank") }, 405, "method_not_allowed"],
      [{ method: "GET", path: "/apps/nothing-here" }, 404, "not_found"],
    ];
    for (const [{ method, path, body, token }, status, code] of cases) {
      const response = await call(nodeB, method, path, { body, token });
      assert.equal(response.status, status, `${method} ${path}: ${JSON.stringify(response.body)}`);
      assert.equal(response.body.error.code, code, `${method} ${path}`);
      assert.ok(response.body.error.message, `${method} ${path} says why`);
    }
  });
});

describe("auction on three nodes", () => {
  let apps;

  before(async () => {
    apps = await startApps({ plugins: [auctionPlugin()], count: 3, prefix: "auction3", server: SHORT_RECOVERY });
  });

  after(() => apps?.stop());

  /** Watchers on `nodes` (one each) joined to `auction`, collecting `auction_closed`. */
  async function watch(nodes, auction) {
    return Promise.all(
      nodes.map(async (node, index) => {
        const socket = await bidder(node, `closer-watcher-${auction.id}-${index}`);
        const closed = collect(socket, "auction_closed");
        await emitAckOk(socket, "join_auction", { id: auction.id });
        return { socket, closed };
      }),
    );
  }

  test("auction_closed reaches every watcher exactly once; later bids are refused", async () => {
    const [nodeA, nodeB, nodeC] = apps.nodes;
    const auction = await createAuction(nodeA, "seller", { duration_ms: 1500 });
    const watchers = await watch([nodeA, nodeB, nodeC], auction);
    await emitAckOk(watchers[1].socket, "place_bid", { id: auction.id, amount: 120 });
    await waitFor(() => watchers.every(({ closed }) => closed.length >= 1), 10_000, "auction_closed everywhere");
    await quiet(500);
    for (const { closed } of watchers) {
      assert.deepEqual(closed, [{ id: auction.id, winner: `closer-watcher-${auction.id}-1`, amount: 120 }]);
    }
    const late = await emitAck(watchers[0].socket, "place_bid", { id: auction.id, amount: 500 });
    assert.equal(late.error.code, "auction_closed");
  });

  test("an auction still closes once when the node that scheduled it was killed; its watchers stop counting", async () => {
    const [nodeA, nodeB, nodeC] = apps.nodes;
    const auction = await createAuction(nodeC, "seller", { duration_ms: 1500 });
    const watchers = await watch([nodeA, nodeB, nodeC], auction);
    const counts = collect(watchers[0].socket, "watchers");
    await nodeC.stop("SIGKILL");
    await waitFor(() => watchers.slice(0, 2).every(({ closed }) => closed.length >= 1), 10_000, "auction_closed after the scheduler died");
    // A surviving node disconnects the dead node's watcher once its heartbeat stops.
    await waitFor(() => counts.at(-1)?.count === 2, 15_000, () => `watchers back to 2, got ${JSON.stringify(counts)}`);
    await quiet(500);
    for (const { closed } of watchers.slice(0, 2)) {
      assert.deepEqual(closed, [{ id: auction.id, winner: null, amount: null }]);
    }
    assert.equal(counts.at(-1).count, 2);
  });
});
