// The echo contract in JavaScript, for componentize-js and the `plugin-core`
// world of wit/plugin.wit (the same contract as plugins/testing/echo and
// plugins/python/echo):
//
//   join {room}        the socket joins the room; acks {room, members}
//   say {room, text}   counts the room's messages in state and emits
//                      `said` {from, text} to the room; acks {count}
//   echo <anything>    acks the payload unchanged, every argument
//
// A payload of the wrong shape fails with `invalid_payload`.

import { join as joinRoom, size as roomSize } from "switchboard:plugin/rooms@0.2.1";
import { toRoom } from "switchboard:plugin/emit@0.2.1";
import { incr } from "switchboard:plugin/state@0.2.1";

/** The `error` record of the WIT; thrown, it becomes the call's `err`. */
class PluginError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

/** A payload of one argument. */
function json(value) {
  return { args: [JSON.stringify(value)], attachments: [] };
}

/**
 * The payload's first argument as an object whose `fields` are all strings, or an
 * `invalid_payload` error naming the first field that is not.
 */
function stringFields(payload, fields) {
  const first = payload.args[0] ?? "null";
  const data = JSON.parse(first);
  if (data === null || typeof data !== "object" || Array.isArray(data)) {
    throw new PluginError("invalid_payload", `invalid payload: expected a JSON object, got ${first.slice(0, 40)}`);
  }
  for (const field of fields) {
    if (typeof data[field] !== "string") {
      throw new PluginError("invalid_payload", `invalid payload: \`${field}\` must be a string`);
    }
  }
  return data;
}

// A host call that fails throws a ComponentError whose `payload` is the
// host's error record: passed on as it is, so the client sees the host's code.
function hostCall(call) {
  try {
    return call();
  } catch (error) {
    if (error.payload) throw new PluginError(error.payload.code, error.payload.message);
    throw error;
  }
}

const events = {
  join(conn, payload) {
    const { room } = stringFields(payload, ["room"]);
    hostCall(() => joinRoom(conn.namespace, conn.socketId, room));
    return json({ room, members: hostCall(() => roomSize(conn.namespace, room)) });
  },
  say(conn, payload) {
    const { room, text } = stringFields(payload, ["room", "text"]);
    const count = hostCall(() => incr(`said:${room}`, 1n));
    hostCall(() => toRoom(conn.namespace, room, "said", json({ from: conn.socketId, text })));
    return json({ count: Number(count) });
  },
  echo(_conn, payload) {
    return payload;
  },
};

export const handler = {
  init(_config) {},
  onConnect(_conn) {},
  onEvent(conn, event, payload) {
    const handle = Object.hasOwn(events, event) ? events[event] : undefined;
    if (!handle) throw new PluginError("unknown_event", `no handler for \`${event}\``);
    return handle(conn, payload);
  },
  onDisconnect(_conn, _reason) {},
};
