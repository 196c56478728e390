// The seed applications as the tests deploy them: the auction and
// notifications plugins with their routes, on 1 to 3 nodes sharing a real
// redis-server, and an HTTP helper for their routes.

import { closeAllSockets, manifestToml, startHost, wasm } from "./harness.mjs";
import { startRedis } from "./redis.mjs";
import { HS256_AUTH } from "./tokens.mjs";

export const API_TOKEN = "apps-test-token";

export function auctionPlugin() {
  return {
    name: "auction",
    path: wasm("auction"),
    namespaces: ["/auction"],
    events: ["join_auction", "leave_auction", "place_bid"],
    routes: [
      { method: "POST", path: "/apps/auction/auctions" },
      { method: "GET", path: "/apps/auction/auctions/{id}" },
      { method: "POST", path: "/apps/auction/auctions/{id}/bids" },
    ],
    limits: { time_ms: 5000 },
  };
}

export function notificationsPlugin() {
  return {
    name: "notifications",
    path: wasm("notifications"),
    namespaces: ["/notifications"],
    events: ["mark_read", "unread_count", "unread", "who_is_online"],
    routes: [
      { method: "POST", path: "/apps/notifications/notify", auth: "api-token" },
      { method: "PUT", path: "/apps/notifications/contacts/{user_id}", auth: "api-token" },
      { method: "POST", path: "/apps/notifications/online", auth: "api-token" },
    ],
    config: { max_per_user: 50 },
  };
}

/**
 * Redis and `count` nodes serving `plugins` with `[auth]` (HS256), the API
 * token and the `[server]` settings `server`. Resolves to `{ redis, nodes, stop() }`.
 */
export async function startApps({ plugins, count = 2, prefix, server = {} }) {
  const redis = await startRedis();
  const manifest =
    manifestToml({ server, plugins }) +
    HS256_AUTH +
    `\n[api]\ntoken = "${API_TOKEN}"\n` +
    `\n[cluster]\nredis_url = "${redis.url}"\nprefix = "${prefix}"\nrequest_timeout_ms = 1000\n`;
  const nodes = await Promise.all(Array.from({ length: count }, () => startHost({ manifest })));
  return {
    redis,
    nodes,
    async stop() {
      closeAllSockets();
      await Promise.all(nodes.map((node) => node.stop()));
      await redis.stop();
    },
  };
}

/**
 * A recovery window short enough to pass within a test: a client that never
 * comes back (the test's clients do not reconnect) is seen to go once it is
 * over, by its plugins on whichever node is left.
 */
export const SHORT_RECOVERY = { "recovery.max_disconnection_ms": 1000 };

/** An HTTP call with a bearer token; resolves to `{ status, body }` (JSON). */
export async function call(node, method, path, { body, token } = {}) {
  const response = await fetch(`${node.url}${path}`, {
    method,
    headers: {
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      ...(body !== undefined ? { "content-type": "application/json" } : {}),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let json;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    throw new Error(`${method} ${path} answered ${response.status} with non-JSON: ${text}`);
  }
  return { status: response.status, body: json };
}
