"""The echo contract in Python, for componentize-py and the `plugin-core`
world of wit/plugin.wit (the same contract as plugins/testing/echo and
plugins/js/echo):

  join {room}        the socket joins the room; acks {room, members}
  say {room, text}   counts the room's messages in state and emits
                     `said` {from, text} to the room; acks {count}
  echo <anything>    acks the payload unchanged

A payload of the wrong shape fails with `invalid_payload`. A host call that
fails raises `Err` with the host's error, which is passed on unchanged.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import emit, rooms, state
from wit_world.imports.types import Conn, Error, Payload


def as_payload(value) -> Payload:
    """A payload of one argument."""
    return Payload(args=[json.dumps(value)], attachments=[])


def string_fields(payload: Payload, fields: list[str]) -> dict:
    """The payload's first argument as an object whose `fields` are all
    strings, or an `invalid_payload` error naming the first field that is not."""
    first = payload.args[0] if payload.args else "null"
    data = json.loads(first)
    if not isinstance(data, dict):
        raise Err(Error(code="invalid_payload", message=f"invalid payload: expected a JSON object, got {first[:40]}"))
    for field in fields:
        if not isinstance(data.get(field), str):
            raise Err(Error(code="invalid_payload", message=f"invalid payload: `{field}` must be a string"))
    return data


def join(conn: Conn, payload: Payload) -> Payload:
    room = string_fields(payload, ["room"])["room"]
    rooms.join(conn.namespace, conn.socket_id, room)
    return as_payload({"room": room, "members": rooms.size(conn.namespace, room)})


def say(conn: Conn, payload: Payload) -> Payload:
    data = string_fields(payload, ["room", "text"])
    count = state.incr(f"said:{data['room']}", 1)
    emit.to_room(conn.namespace, data["room"], "said", as_payload({"from": conn.socket_id, "text": data["text"]}))
    return as_payload({"count": count})


def echo(_conn: Conn, payload: Payload) -> Payload:
    return payload


EVENTS = {"join": join, "say": say, "echo": echo}


class Handler(exports.Handler):
    def init(self, config: str) -> None:
        pass

    def on_connect(self, conn: Conn) -> None:
        pass

    def on_event(self, conn: Conn, event: str, payload: Payload) -> Payload | None:
        handle = EVENTS.get(event)
        if handle is None:
            raise Err(Error(code="unknown_event", message=f"no handler for `{event}`"))
        return handle(conn, payload)

    def on_disconnect(self, conn: Conn, reason: str) -> None:
        pass
