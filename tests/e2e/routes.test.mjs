// Plugin HTTP routes: matched with their parameters, authenticated per route
// (a user's JWT, the API token, or nothing), handed to the plugin without the
// credentials, bounded in size, and rerouted live when the manifest changes.

import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
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

function manifest(routes) {
  return (
    manifestToml({
      server: { max_payload_bytes: 1000 },
      plugins: [faultyPlugin({ routes, limits: { time_ms: 300 } })],
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
