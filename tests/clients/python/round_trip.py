"""A python-socketio client's round trip against a Switchboard node.

    round_trip.py URL TOKEN_A TOKEN_B

Two clients connect with the tokens, one calls `echo` (an ack), sends binary
through `relay` (an emit back to it), both join a room and one sends a chat
message the other receives; then a client with a forged token is refused.
Prints what each step got as one JSON object; exits 1 if a step timed out.
"""

import base64
import json
import sys
import threading

import socketio

TIMEOUT_S = 5


def main(url, token_a, token_b):
    alice = socketio.Client(reconnection=False)
    bob = socketio.Client(reconnection=False)
    relayed, messages = [], []
    got_relay, got_message = threading.Event(), threading.Event()

    # With connection-state recovery on, the server appends each event's
    # offset as a last argument: handlers take `*args`.
    @alice.on("relay")
    def on_relay(*args):
        relayed.append(args)
        got_relay.set()

    @bob.on("message")
    def on_message(*args):
        messages.append(args)
        got_message.set()

    results = {}
    alice.connect(url, auth={"token": token_a}, transports=["websocket"], wait_timeout=TIMEOUT_S)
    bob.connect(url, auth={"token": token_b}, transports=["websocket"], wait_timeout=TIMEOUT_S)
    results["echo"] = alice.call("echo", {"n": 1, "text": "héllo"}, timeout=TIMEOUT_S)

    alice.emit("relay", {"bytes": b"\x00\x01\xff", "n": 2})
    if not got_relay.wait(TIMEOUT_S):
        sys.exit("no relay came back")
    payload = relayed[0][0]
    results["relay"] = {
        "bytes": base64.b64encode(payload["bytes"]).decode(),
        "n": payload["n"],
        "arguments": len(relayed[0]),
    }

    results["joins"] = [
        client.call("join", {"room": "python"}, timeout=TIMEOUT_S) for client in (alice, bob)
    ]
    results["send"] = alice.call("send_message", {"room": "python", "text": "hi from python"}, timeout=TIMEOUT_S)
    if not got_message.wait(TIMEOUT_S):
        sys.exit("bob got no message")
    results["message"] = messages[0][0]

    forger = socketio.Client(reconnection=False)
    refusals = []
    forger.on("connect_error", refusals.append)
    try:
        forger.connect(url, auth={"token": "forged.token.value"}, transports=["websocket"], wait_timeout=TIMEOUT_S)
    except socketio.exceptions.ConnectionError:
        pass
    results["refused"] = refusals

    for client in (alice, bob, forger):
        client.disconnect()
    print(json.dumps(results))


if __name__ == "__main__":
    main(*sys.argv[1:4])
