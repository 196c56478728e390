// The Origin policy at the Socket.IO path: a page the manifest does not allow
// is refused (403, JSON reason) on the polling handshake, on requests into an
// existing session, on the WebSocket upgrade and on preflights, before
// Socket.IO sees it; allowed exact and wildcard origins get CORS headers;
// clients without Origin pass; unset, only the same origin may connect.
// Browsers cannot be made to send a forged Origin, so these are raw HTTP
// (fetch) and raw WebSocket (`ws`) requests, which can.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import WebSocket from "ws";

import {
  TIMEOUT_MS,
  chatPlugin,
  closeAllSockets,
  connect,
  emitAckOk,
  lineOf,
  logged,
  manifestToml,
  quiet,
  runCheck,
  startHost,
  unique,
} from "./harness.mjs";

const HANDSHAKE = "/socket.io/?EIO=4&transport=polling";
const ALLOWED = ["https://app.example.com", "https://*.example.com"];

/** The Engine.IO polling handshake as a page of `origin` (none: no header). */
async function handshake(url, origin) {
  const response = await fetch(`${url}${HANDSHAKE}`, { headers: origin ? { origin } : {} });
  return { response, body: await response.text() };
}

/**
 * A raw WebSocket upgrade to the Socket.IO path as a page of `origin`.
 * Resolves to `{ opened: true, first }` (the Engine.IO open packet) or
 * `{ opened: false, status, body }`.
 */
function upgrade(url, origin) {
  const ws = new WebSocket(`${url.replace("http", "ws")}/socket.io/?EIO=4&transport=websocket`, origin ? { origin } : {});
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error(`no answer to the upgrade from ${origin} within ${TIMEOUT_MS} ms`));
    }, TIMEOUT_MS);
    ws.once("message", (data) => {
      clearTimeout(timer);
      ws.close();
      resolve({ opened: true, first: data.toString() });
    });
    ws.once("unexpected-response", (request, response) => {
      let body = "";
      response.setEncoding("utf8");
      response.on("data", (chunk) => {
        body += chunk;
      });
      response.on("end", () => {
        clearTimeout(timer);
        request.destroy();
        resolve({ opened: false, status: response.statusCode, body });
      });
    });
    ws.once("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}

function assertRefused(response, body, origin) {
  assert.equal(response.status, 403, `${origin}: ${body}`);
  const { error } = JSON.parse(body);
  assert.equal(error.code, "origin_not_allowed");
  assert.ok(error.message.includes(origin), error.message);
  assert.equal(response.headers.get("access-control-allow-origin"), null);
}

function assertCors(response, origin) {
  assert.equal(response.headers.get("access-control-allow-origin"), origin);
  assert.equal(response.headers.get("access-control-allow-credentials"), "true");
  assert.match(response.headers.get("vary") ?? "", /origin/i);
}

describe("allowed_origins with exact and wildcard origins", () => {
  let host;

  before(async () => {
    host = await startHost({ server: { allowed_origins: ALLOWED } });
  });

  after(async () => {
    closeAllSockets();
    await host?.stop();
  });

  test("a page not allowed is refused on the polling handshake, with a JSON reason", async () => {
    for (const origin of ["https://evil.example", "https://example.com", "http://app.example.com", "https://app.example.com:8443", "null"]) {
      const { response, body } = await handshake(host.url, origin);
      assertRefused(response, body, origin);
      assert.ok(!body.includes('"sid"'), `no session was opened for ${origin}`);
    }
    await logged(host, /refused a Socket\.IO request.*evil\.example/);
  });

  test("a page not allowed is refused on the WebSocket upgrade", async () => {
    for (const origin of ["https://evil.example", "https://example.com.evil.example"]) {
      const result = await upgrade(host.url, origin);
      assert.equal(result.opened, false, `${origin} opened a WebSocket`);
      assert.equal(result.status, 403);
      assert.equal(JSON.parse(result.body).error.code, "origin_not_allowed");
    }
  });

  test("a page not allowed cannot post into an open session", async () => {
    const victim = await connect(host.url, { auth: { user: "victim" }, transports: ["polling"] });
    const sid = victim.io.engine.id;
    // `1` is Engine.IO's close packet: had it reached the session, the victim would be gone.
    const response = await fetch(`${host.url}/socket.io/?EIO=4&transport=polling&sid=${encodeURIComponent(sid)}`, {
      method: "POST",
      headers: { origin: "https://evil.example", "content-type": "text/plain;charset=UTF-8" },
      body: "1",
    });
    assertRefused(response, await response.text(), "https://evil.example");
    await quiet();
    assert.equal(victim.connected, true);
    await emitAckOk(victim, "join", { room: unique("still-here") });
  });

  test("allowed exact and wildcard origins connect, with CORS headers", async () => {
    for (const origin of ["https://app.example.com", "https://eu.chat.example.com"]) {
      const { response, body } = await handshake(host.url, origin);
      assert.equal(response.status, 200, `${origin}: ${body}`);
      assert.match(body, /^0\{"sid":/);
      assertCors(response, origin);
      const ws = await upgrade(host.url, origin);
      assert.equal(ws.opened, true, `${origin} was refused the upgrade: ${ws.status} ${ws.body}`);
      assert.match(ws.first, /^0\{"sid":/);
    }
  });

  test("preflights are answered for allowed origins and refused for others", async () => {
    const preflight = (origin) =>
      fetch(`${host.url}${HANDSHAKE}`, {
        method: "OPTIONS",
        headers: { origin, "access-control-request-method": "POST", "access-control-request-headers": "content-type,x-app" },
      });
    const allowed = await preflight("https://app.example.com");
    assert.equal(allowed.status, 200);
    assertCors(allowed, "https://app.example.com");
    assert.match(allowed.headers.get("access-control-allow-methods"), /POST/);
    assert.match(allowed.headers.get("access-control-allow-headers"), /content-type,x-app/);
    const refused = await preflight("https://evil.example");
    assertRefused(refused, await refused.text(), "https://evil.example");
  });

  test("clients that send no Origin are not checked", async () => {
    const { response, body } = await handshake(host.url);
    assert.equal(response.status, 200, body);
    assert.equal(response.headers.get("access-control-allow-origin"), null);
    assert.equal((await upgrade(host.url)).opened, true);
    for (const transports of [["polling"], ["websocket"]]) {
      const socket = await connect(host.url, { auth: { user: "server-side" }, transports });
      await emitAckOk(socket, "join", { room: unique("no-origin") });
      socket.close();
    }
  });

  test("paths outside Socket.IO are not under the policy", async () => {
    const response = await fetch(`${host.url}/healthz`, { headers: { origin: "https://evil.example" } });
    assert.equal(response.status, 200);
    assert.equal(response.headers.get("access-control-allow-origin"), null);
  });
});

describe("allowed_origins unset: the same origin only", () => {
  let host;

  before(async () => {
    host = await startHost();
  });

  after(() => host?.stop());

  test("a page of the host and port the request was sent to connects; any other is refused", async () => {
    const same = `http://127.0.0.1:${host.port}`;
    const { response, body } = await handshake(host.url, same);
    assert.equal(response.status, 200, body);
    assertCors(response, same);
    assert.equal((await upgrade(host.url, same)).opened, true);
    for (const origin of [`http://localhost:${host.port}`, `http://127.0.0.1:${host.port + 1}`, "https://evil.example"]) {
      const refused = await handshake(host.url, origin);
      assertRefused(refused.response, refused.body, origin);
      const ws = await upgrade(host.url, origin);
      assert.equal(ws.status, 403, `${origin} upgraded`);
    }
  });
});

describe("allowed_origins in the manifest", () => {
  test("check warns about `*`", async () => {
    const result = await runCheck(manifestToml({ server: { allowed_origins: ["*"] }, plugins: [chatPlugin()] }));
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /origins: \*/);
    assert.match(result.stderr, /warning: `\[server\] allowed_origins` lists `\*`: any web page can open a socket/);
    const listed = await runCheck(manifestToml({ server: { allowed_origins: ALLOWED }, plugins: [chatPlugin()] }));
    assert.equal(listed.code, 0, listed.stderr);
    assert.match(listed.stdout, /origins: https:\/\/app\.example\.com, https:\/\/\*\.example\.com/);
    assert.doesNotMatch(listed.stderr, /warning/);
  });

  test("a malformed origin is an error at its line and column", async () => {
    const text = manifestToml({ server: { allowed_origins: ["http://localhost:3000", "https://app.example.com/"] }, plugins: [chatPlugin()] });
    const result = await runCheck(text);
    assert.equal(result.code, 1);
    const line = lineOf(text, "allowed_origins");
    const column = text.split("\n")[line - 1].indexOf('"https://app') + 1;
    assert.ok(
      result.stderr.includes(`${result.manifestPath}:${line}:${column}: \`https://app.example.com/\`: an origin has no path`),
      result.stderr,
    );
  });
});
