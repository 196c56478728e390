// The `[api]` token: `/metrics` is behind it when one is configured (unless
// `metrics = "public"`), and `/api/v1/emit` checks it before reading the
// body, so a caller without it cannot make the server parse, or even wait
// for, what it sends.

import assert from "node:assert/strict";
import { connect as connectTcp } from "node:net";
import { after, before, describe, test } from "node:test";

import { TIMEOUT_MS, chatPlugin, closeAllSockets, manifestToml, startHost } from "./harness.mjs";

const TOKEN = "api-token-test-token";

function manifest(api = "") {
  return manifestToml({ plugins: [chatPlugin()] }) + (api ? `\n[api]\n${api}` : "");
}

async function get(url, token) {
  const response = await fetch(url, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  return { status: response.status, text: await response.text() };
}

/**
 * Sends `head` and the first bytes of a body that never ends on a raw TCP
 * connection, and resolves to the response `{ status, body }`; rejects if
 * none comes within TIMEOUT_MS, that is, if the server waits for the body.
 */
function requestWithEndlessBody(port, head, bodyStart) {
  return new Promise((resolve, reject) => {
    const socket = connectTcp(port, "127.0.0.1");
    let received = "";
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no response within ${TIMEOUT_MS} ms: the server waits for the body (got ${JSON.stringify(received)})`));
    }, TIMEOUT_MS);
    socket.setEncoding("utf8");
    socket.on("error", () => {}); // the server may close while we still write
    socket.on("data", (chunk) => {
      received += chunk;
      const end = received.indexOf("\r\n\r\n");
      if (end < 0) return;
      const length = Number(/^content-length:\s*(\d+)/im.exec(received.slice(0, end))?.[1] ?? NaN);
      const body = received.slice(end + 4);
      if (body.length < length) return;
      clearTimeout(timer);
      socket.destroy();
      resolve({ status: Number(received.split(" ")[1]), body });
    });
    socket.write(head);
    socket.write(bodyStart);
  });
}

describe("the API token", () => {
  let host;
  let open;
  let tokenless;

  before(async () => {
    [host, open, tokenless] = await Promise.all([
      startHost({ manifest: manifest(`token = "${TOKEN}"\n`) }),
      startHost({ manifest: manifest(`token = "${TOKEN}"\nmetrics = "public"\n`) }),
      startHost({ manifest: manifest() }),
    ]);
  });

  after(async () => {
    closeAllSockets();
    await Promise.all([host, open, tokenless].map((node) => node?.stop()));
  });

  test("/metrics needs the token when one is configured", async () => {
    const cases = [
      [undefined, "missing_token"],
      ["wrong", "bad_token"],
      [`${TOKEN}x`, "bad_token"],
      [TOKEN.slice(0, -1), "bad_token"],
    ];
    for (const [token, code] of cases) {
      const { status, text } = await get(`${host.url}/metrics`, token);
      assert.equal(status, 401, `${token}: ${text}`);
      assert.equal(JSON.parse(text).error.code, code);
      assert.doesNotMatch(text, /switchboard_plugin/);
    }
    const { status, text } = await get(`${host.url}/metrics`, TOKEN);
    assert.equal(status, 200, text);
    assert.match(text, /^switchboard_plugin_info\{plugin="chat",version="[0-9a-f]{64}"\} 1$/m);
  });

  test('/metrics is public with `metrics = "public"`, and when no token is configured', async () => {
    for (const node of [open, tokenless]) {
      const { status, text } = await get(`${node.url}/metrics`);
      assert.equal(status, 200, text);
      assert.match(text, /^switchboard_plugin_reloads_total 0$/m);
    }
  });

  test("emit with a wrong or missing token is refused without parsing the body", async () => {
    for (const [token, code] of [["wrong", "bad_token"], [undefined, "missing_token"]]) {
      const response = await fetch(`${host.url}/api/v1/emit`, {
        method: "POST",
        headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
        body: '{"namespace": "/", "to": {"room": "x"}, "event": ',
      });
      assert.equal(response.status, 401);
      assert.equal((await response.json()).error.code, code);
    }
    // Authorized, the same junk is parsed and refused for what it is.
    const parsed = await fetch(`${host.url}/api/v1/emit`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${TOKEN}` },
      body: '{"namespace": "/", "to": {"room": "x"}, "event": ',
    });
    assert.equal(parsed.status, 400);
    assert.equal((await parsed.json()).error.code, "bad_request");
  });

  test("emit with a wrong token is refused before a huge body is read", async () => {
    const head =
      "POST /api/v1/emit HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n" +
      "authorization: Bearer wrong\r\ncontent-length: 10000000000\r\n\r\n";
    const { status, body } = await requestWithEndlessBody(host.port, head, `{"data": "${"x".repeat(64 * 1024)}`);
    assert.equal(status, 401, body);
    assert.equal(JSON.parse(body).error.code, "bad_token");
  });
});
