// The demo page (examples/demo) in a real browser: headless Chromium, Alice's
// page served by one node and Bob's by another, one real Redis between them.
// Each sees the other's chat messages, auction bids and nudges, exactly once.
//
// With SWITCHBOARD_DEMO_SCREENSHOT=FILE it also saves Alice's page as a PNG
// at the end (scripts/screenshot.sh makes docs/demo.png so).

import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { isDeepStrictEqual } from "node:util";
import { chromium } from "playwright-core";

import { REPO, TIMEOUT_MS, quiet, startHost, waitFor, wasm } from "./harness.mjs";
import { startRedis } from "./redis.mjs";
import { SECRET, tokenFor } from "./tokens.mjs";

const DEMO = path.join(REPO, "examples/demo");
const SCREENSHOT = process.env.SWITCHBOARD_DEMO_SCREENSHOT;
/** Debian's Chromium (scripts/setup.sh installs it); playwright-core brings no browser. */
const CHROMIUM = "/usr/bin/chromium";
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  // Otherwise Chromium calls its own services in the background; on a machine
  // that reaches no network (CI's), its connections then get refused, the
  // page's to loopback too.
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
/**
 * A page's first load starts a renderer and three sockets: slow on a busy
 * machine (two cores, shared with another test file).
 */
const PAGE_LOAD_TIMEOUT_MS = 60000;

/** examples/demo/switchboard.toml, its plugins taken from WASM_DIR (where this run's builds are). */
function demoManifest() {
  return readFileSync(path.join(DEMO, "switchboard.toml"), "utf8").replace(
    /"\.\.\/\.\.\/target\/wasm32-wasip2\/release\/(\w+)\.wasm"/g,
    (_, name) => JSON.stringify(wasm(name)),
  );
}

/** Each `selector` match's spans, trimmed and joined by a space: "alice Hi Bob". */
function lines(page, selector) {
  return page.$$eval(selector, (items) =>
    items.map((item) => [...item.querySelectorAll("span")].map((span) => span.textContent.trim()).join(" ")),
  );
}

/** Waits until `read(page)` gives `expected`; fails saying what it gave. */
async function shows(page, read, expected, what, timeout = TIMEOUT_MS) {
  let last;
  await waitFor(
    async () => {
      last = await read(page);
      return isDeepStrictEqual(last, expected);
    },
    timeout,
    () => `${what} to be ${JSON.stringify(expected)}; it is ${JSON.stringify(last)}`,
  );
}

describe("the demo page on two nodes, in Chromium", () => {
  let redis;
  let nodes = [];
  let browser;
  let alice;
  let bob;
  const pageErrors = [];
  const userOf = new Map();

  /**
   * A browser context of its own (no shared cookies or storage) with the page
   * of `user` on `node`. Should the page not load, the error tells what the
   * browser and the node reported meanwhile.
   */
  async function openDemo(node, user) {
    const context = await browser.newContext({ viewport: { width: 1200, height: 480 } });
    const page = await context.newPage();
    userOf.set(page, user);
    page.on("pageerror", (error) => pageErrors.push(`${user}: ${error.message}`));
    const reported = [];
    page.on("console", (message) => reported.push(`console ${message.type()}: ${message.text()}`));
    page.on("requestfailed", (request) => reported.push(`${request.method()} ${request.url()} failed: ${request.failure()?.errorText}`));
    page.on("crash", () => reported.push("the page crashed"));
    const ready = (p) =>
      p.evaluate(() => [
        document.getElementById("message").disabled,
        document.getElementById("auction-status").textContent,
        document.getElementById("notifications-status").textContent,
      ]);
    try {
      await page.goto(`${node.url}/#user=${user}&token=${tokenFor(user)}`, { timeout: PAGE_LOAD_TIMEOUT_MS });
      await shows(page, ready, [false, "connected", "connected"], `${user}'s page (chat joined, sockets connected)`, PAGE_LOAD_TIMEOUT_MS);
    } catch (error) {
      error.message += `\n${user}'s browser reported:\n${reported.join("\n") || "nothing"}\nits node's stderr, the end:\n${node.stderr().slice(-3000)}`;
      throw error;
    }
    return page;
  }

  /**
   * Waits until each page lists its `expected` lines under `selector`; then,
   * after a quiet spell, checks that none came twice or late, and that no
   * page had a script error.
   */
  async function showExactly(selector, expectations) {
    for (const [page, expected] of expectations) {
      await shows(page, (p) => lines(p, selector), expected, `${selector} of ${userOf.get(page)}`);
    }
    await quiet();
    for (const [page, expected] of expectations) {
      assert.deepEqual(await lines(page, selector), expected);
    }
    assert.deepEqual(pageErrors, []);
  }

  async function say(page, text) {
    await page.fill("#message", text);
    await page.press("#message", "Enter");
  }

  async function nudge(page, to, text) {
    await page.fill("#to", to);
    await page.fill("#note", text);
    await page.click("#nudge button");
  }

  /**
   * `seller` sells `item`, auction `id`; `bidder`, on the other node, watches
   * it by the id the seller's page shows and bids the minimum it offers.
   */
  async function sellAndBid({ seller, bidder, id, item, start }) {
    const lot = (p) => p.textContent("#lot");
    const title = `#${id} ${item} (sold by ${userOf.get(seller)})`;
    await seller.fill("#item", item);
    await seller.fill("#start", String(start));
    await seller.click("#sell button");
    await shows(seller, lot, `${title}: starts at ${start}; 1 watching`, "the seller's lot");
    await bidder.fill("#auction-id", await seller.inputValue("#auction-id"));
    await bidder.click("#watch button");
    for (const page of [bidder, seller]) {
      await shows(page, lot, `${title}: starts at ${start}; 2 watching`, `${userOf.get(page)}'s lot`);
    }
    assert.equal(await bidder.inputValue("#amount"), String(start), "the minimum bid is offered");
    assert.equal(await seller.isDisabled("#place-bid"), true, "the seller cannot bid");
    await bidder.click("#place-bid");
    const bid = `#1 ${start} by ${userOf.get(bidder)}`;
    await showExactly("#bids .bid", [[seller, [bid]], [bidder, [bid]]]);
    await shows(seller, lot, `${title}: ${start} by ${userOf.get(bidder)}; 2 watching`, "the seller's lot after the bid");
  }

  before(async () => {
    assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: run scripts/setup.sh`);
    redis = await startRedis();
    const env = {
      SWITCHBOARD_REDIS_URL: redis.url,
      SWITCHBOARD_SERVER_STATIC_DIR: path.join(DEMO, "public"),
      SWITCHBOARD_JWT_SECRET: SECRET,
    };
    const manifest = demoManifest();
    nodes = await Promise.all([startHost({ manifest, env }), startHost({ manifest, env })]);
    const client = await fetch(`${nodes[0].url}/vendor/socket.io.min.js`);
    assert.equal(client.status, 200, "the page's socket.io client is missing: scripts/setup.sh copies it to examples/chat/public/vendor");
    // launch() gives the browser a fresh temporary profile, removed on close.
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
    [alice, bob] = await Promise.all([openDemo(nodes[0], "alice"), openDemo(nodes[1], "bob")]);
  });

  after(async () => {
    await browser?.close();
    await Promise.all(nodes.map((node) => node.stop()));
    await redis?.stop();
  });

  test("chat: each page shows both messages once, in the order they were sent", async () => {
    await say(alice, "Hi Bob, Alice here on node A");
    await shows(bob, (p) => lines(p, "#messages .message"), ["alice Hi Bob, Alice here on node A"], "bob's messages");
    await say(bob, "Hi Alice! Node B here");
    const both = ["alice Hi Bob, Alice here on node A", "bob Hi Alice! Node B here"];
    await showExactly("#messages .message", [[alice, both], [bob, both]]);
  });

  test("auction: each sells something, the other watches it by id and bids, and both see the bid once", async () => {
    await sellAndBid({ seller: bob, bidder: alice, id: 1, item: "a tube amp", start: 40 });
    await sellAndBid({ seller: alice, bidder: bob, id: 2, item: "a 1961 Gibson", start: 250 });
  });

  test("notifications: a nudge reaches the other user's page once, and marking it read clears the count", async () => {
    const unread = (p) => p.textContent("#unread");

    await nudge(alice, "bob", "Coffee at 4?");
    await shows(bob, unread, "1", "bob's unread count");
    await nudge(bob, "alice", "On my way");
    await showExactly("#inbox .notification", [[alice, ["bob On my way"]], [bob, ["alice Coffee at 4?"]]]);
    assert.deepEqual(await lines(alice, "#inbox .note"), ["Nudged bob."]);
    await shows(alice, unread, "1", "alice's unread count");

    await bob.click("#mark-read-button");
    await shows(bob, unread, "0", "bob's unread count after marking read");
    assert.equal(await bob.$$eval("#inbox .notification.read", (items) => items.length), 1);
    assert.equal(await unread(alice), "1", "what bob read is read for bob only");
  });

  test("README's screenshot", { skip: !SCREENSHOT && "set SWITCHBOARD_DEMO_SCREENSHOT=FILE to save it" }, async () => {
    await alice.screenshot({ path: SCREENSHOT });
  });
});
