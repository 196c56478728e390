// Plugin HTTP routes: matched with their parameters, authenticated per route
// (a user's JWT, the API token, or nothing), handed to the plugin without the
// credentials, bounded in size, and rerouted live when the manifest changes.

import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import http from "node:http";
import { after, before, describe, test } from "node:test";

import { faultyPlugin, manifestToml, startHost, waitFor } from "./harness.mjs";
import { API_TOKEN, call } from "./apps.mjs";
import { HS256_AUTH, nowS, signToken, tokenFor } from "./tokens.mjs";

const ROUTES = [
  { method: "POST", path: "/apps/echo/{thing}" },
  { method: "GET", path: "/apps/faults/{fault}", auth: "none" },
  { method: "GET", path: "/apps/public", auth: "none" },
  { method: "PUT", path: "/apps/backend", auth: "api-token" },
];

function manifest(routes, limits = {}) {
  return (
    manifestToml({
      server: { max_payload_bytes: 1000 },
      plugins: [faultyPlugin({ routes, limits: { time_ms: 300, ...limits } })],
    }) +
    HS256_AUTH +
    `\n[api]\ntoken = "${API_TOKEN}"\n`
  );
}

describe("plugin HTTP routes", () => {
  let host;

  before(async () => {
    host = await startHost({ manifest: manifest(ROUTES) });
  });

  after(() => host?.stop());

  test("a user route gets the parameters, query, body and verified user, but not the credentials", async () => {
    const response = await fetch(`${host.url}/apps/echo/widget?colour=red`, {
      method: "POST",
      headers: { authorization: `Bearer ${tokenFor("alice")}`, cookie: "session=secret", "x-trace": "1" },
      body: "hello",
    });
    assert.equal(response.status, 200);
    const echoed = await response.json();
    assert.deepEqual(
      { ...echoed, header_names: undefined },
      {
        method: "POST",
        path: "/apps/echo/widget",
        params: [["thing", "widget"]],
        query: "colour=red",
        body: "hello",
        user_id: "alice",
        header_names: undefined,
      },
    );
    assert.ok(echoed.header_names.includes("x-trace"));
    assert.ok(!echoed.header_names.includes("authorization") && !echoed.header_names.includes("cookie"));
  });

  test("each route's auth is enforced with a JSON reason", async () => {
    const cases = [
      [{ method: "POST", path: "/apps/echo/x" }, 401, "auth_required"],
      [{ method: "POST", path: "/apps/echo/x", token: signToken({ sub: "a", exp: nowS(-60) }) }, 401, "token_expired"],
      [{ method: "POST", path: "/apps/echo/x", token: signToken({ sub: "a" }, { key: "forged" }) }, 401, "token_invalid"],
      [{ method: "PUT", path: "/apps/backend", token: tokenFor("alice") }, 401, "bad_token"],
      [{ method: "PUT", path: "/apps/backend" }, 401, "missing_token"],
      [{ method: "GET", path: "/apps/echo/x", token: tokenFor("alice") }, 405, "method_not_allowed"],
      [{ method: "GET", path: "/apps/elsewhere" }, 404, "not_found"],
      [{ method: "POST", path: "/apps/echo/x", token: tokenFor("alice"), body: "x".repeat(1001) }, 413, "payload_too_large"],
    ];
    for (const [{ method, path, token, body }, status, code] of cases) {
      const response = await fetch(`${host.url}${path}`, {
        method,
        headers: token ? { authorization: `Bearer ${token}` } : {},
        body,
      });
      const reply = await response.json();
      assert.equal(response.status, status, `${method} ${path}: ${JSON.stringify(reply)}`);
      assert.equal(reply.error.code, code, `${method} ${path}`);
    }
    assert.equal((await call(host, "GET", "/apps/public")).body.user_id, null);
    assert.equal((await call(host, "PUT", "/apps/backend", { token: API_TOKEN })).status, 200);
  });

  test("a route whose plugin traps or loops answers 500 or 504, and the next request is served", async () => {
    const trapped = await call(host, "GET", "/apps/faults/trap");
    assert.equal(trapped.status, 500);
    assert.equal(trapped.body.error.code, "plugin_trapped");
    const spun = await call(host, "GET", "/apps/faults/spin");
    assert.equal(spun.status, 504);
    assert.equal(spun.body.error.code, "plugin_timeout");
    const fine = await call(host, "GET", "/apps/faults/none");
    assert.equal(fine.status, 200);
    assert.deepEqual(fine.body.params, [["fault", "none"]]);
  });

  test("a route added to the manifest is served without a restart", async () => {
    assert.equal((await call(host, "GET", "/apps/added")).status, 404);
    writeFileSync(host.manifestPath, manifest([...ROUTES, { method: "GET", path: "/apps/added", auth: "none" }]));
    const added = await waitFor(
      async () => {
        const response = await call(host, "GET", "/apps/added");
        return response.status === 200 && response.body;
      },
      10_000,
      "the new route",
    );
    assert.equal(added.path, "/apps/added");
  });
});

/**
 * A GET of `path` on `host` from the loopback address `from`, with `token`
 * as its bearer: resolves to `{ status, retryAfter, body }`.
 */
function getFrom(host, path, { from, token }) {
  return new Promise((resolve, reject) => {
    const headers = token ? { authorization: `Bearer ${token}` } : {};
    const request = http.get(`${host.url}${path}`, { localAddress: from, headers, agent: false }, (response) => {
      let text = "";
      response.on("data", (chunk) => (text += chunk));
      response.on("end", () =>
        resolve({ status: response.statusCode, retryAfter: response.headers["retry-after"], body: JSON.parse(text) }),
      );
    });
    request.on("error", reject);
  });
}

describe("each caller's rates on plugin routes", () => {
  const hosts = [];
  after(() => Promise.all(hosts.map((host) => host.stop())));
  async function start(limits) {
    const host = await startHost({ manifest: manifest(ROUTES, limits) });
    hosts.push(host);
    return host;
  }

  test("a caller over route_requests_per_second gets 429 rate_limited with Retry-After; other addresses and users are apart", async () => {
    const host = await start({ route_requests_per_second: 1, route_request_burst: 3 });
    /** Six requests at once: the burst of three is served, and (but for what refills meanwhile) no more. */
    const sixTimes = async (request) => {
      const replies = [];
      for (let n = 0; n < 6; n++) replies.push(await request());
      assert.deepEqual(replies.slice(0, 3).map((reply) => reply.status), [200, 200, 200]);
      const refused = replies.filter((reply) => reply.status === 429);
      assert.ok(refused.length >= 2, JSON.stringify(replies.map((reply) => reply.status)));
      return refused;
    };
    const refused = await sixTimes(() => getFrom(host, "/apps/public", { from: "127.0.0.1" }));
    for (const reply of refused) {
      assert.equal(reply.body.error.code, "rate_limited");
      assert.match(reply.body.error.message, /route_requests_per_second/);
      assert.equal(reply.retryAfter, "1");
    }
    assert.equal((await getFrom(host, "/apps/public", { from: "127.0.0.2" })).status, 200, "another address");
    assert.equal((await getFrom(host, "/apps/faults/none", { from: "127.0.0.3" })).status, 200, "another route, another address");
    // A user route counts the user, not the address: from 127.0.0.1, over its rate on `none` routes.
    const asAlice = await sixTimes(() =>
      fetch(`${host.url}/apps/echo/x`, { method: "POST", headers: { authorization: `Bearer ${tokenFor("alice")}` } }),
    );
    const bob = await fetch(`${host.url}/apps/echo/x`, { method: "POST", headers: { authorization: `Bearer ${tokenFor("bob")}` } });
    assert.equal(bob.status, 200, "another user");
    // The backend's API token is not limited.
    for (let n = 0; n < 6; n++) assert.equal((await call(host, "PUT", "/apps/backend", { token: API_TOKEN })).status, 200);
    // `/metrics` asks for the API token where there is one.
    const metrics = await (await fetch(`${host.url}/metrics`, { headers: { authorization: `Bearer ${API_TOKEN}` } })).text();
    const counted = new RegExp(`^switchboard_route_requests_rate_limited_total\\{plugin="faulty"\\} ${refused.length + asAlice.length}$`, "m");
    assert.match(metrics, counted);
  });

  test("a caller whose calls took more than route_plugin_ms_per_second allows waits until it is repaid; others are served", async () => {
    const host = await start({ route_requests_per_second: 0, route_plugin_ms_per_second: 10, route_plugin_burst_ms: 1000 });
    // Each spin runs to time_ms (300 ms): four put the caller 200 ms in debt.
    for (let n = 0; n < 4; n++) assert.equal((await getFrom(host, "/apps/faults/spin", { from: "127.0.0.1" })).status, 504);
    const refused = await getFrom(host, "/apps/public", { from: "127.0.0.1" });
    assert.equal(refused.status, 429);
    assert.match(refused.body.error.message, /route_plugin_ms_per_second/);
    // Nearly 200 ms (less what refilled meanwhile) at 10 ms a second.
    assert.ok(Number(refused.retryAfter) >= 15 && Number(refused.retryAfter) <= 30, `Retry-After: ${refused.retryAfter}`);
    assert.equal((await getFrom(host, "/apps/public", { from: "127.0.0.2" })).status, 200, "another address");
  });
});
