// A Socket.IO client on a raw WebSocket, for tests and load tools that open
// thousands of connections: it costs the client process far less than
// socket.io-client. Text packets only.
import WebSocket from "ws";

/**
 * Connects to `namespace` on 127.0.0.1:`port` (from `localAddress` if given)
 * and resolves once the namespace accepted the socket, to
 * `{ emitWithAck(event, data), close(), pause(), mute(), writeRaw(bytes), unsent(), closed, bufferedAmount(), events() }`.
 * Pings are answered until `mute()`; `pause()` stops reading (the kernel's buffers then fill,
 * and the server's writes block); `writeRaw` writes bytes to the TCP
 * connection as they are, past the WebSocket framing, and `unsent()` is how many of them wait in this
 * process for the kernel to take them; `closed` resolves when the connection ends;
 * `events()` counts the events received. `query` is added to the handshake's query string.
 */
export function openRawSocket(port, namespace, { auth, localAddress, query } = {}) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/socket.io/?EIO=4&transport=websocket${query ? `&${query}` : ""}`, {
    localAddress,
    perMessageDeflate: false,
  });
  const prefix = namespace === "/" ? "" : `${namespace},`;
  const acks = new Map();
  let lastId = 0;
  let events = 0;
  let muted = false;
  const closed = new Promise((resolve) => ws.on("close", resolve));
  return new Promise((resolve, reject) => {
    ws.on("error", reject);
    ws.on("close", () => reject(new Error("closed before the namespace accepted the socket")));
    ws.on("message", (data) => {
      const text = String(data);
      if (text === "2") return muted || ws.send("3");
      if (text.startsWith("0")) return ws.send(`40${prefix}${auth ? JSON.stringify(auth) : ""}`);
      if (text.startsWith(`40${prefix}`)) {
        return resolve({
          emitWithAck(event, payload) {
            lastId += 1;
            ws.send(`42${prefix}${lastId}${JSON.stringify([event, payload])}`);
            return new Promise((resolveAck) => acks.set(lastId, resolveAck));
          },
          close: () => ws.close(),
          pause: () => ws._socket.pause(),
          mute: () => (muted = true),
          writeRaw: (bytes) => ws._socket.write(bytes),
          unsent: () => ws._socket.writableLength,
          closed,
          bufferedAmount: () => ws.bufferedAmount,
          events: () => events,
        });
      }
      if (text.startsWith(`42${prefix}`)) {
        events += 1;
        return;
      }
      if (text.startsWith(`44${prefix}`)) return reject(new Error(`connect_error ${text.slice(2 + prefix.length)}`));
      if (text.startsWith(`43${prefix}`)) {
        const body = text.slice(2 + prefix.length);
        const bracket = body.indexOf("[");
        const id = Number(body.slice(0, bracket));
        acks.get(id)?.(JSON.parse(body.slice(bracket))[0]);
        acks.delete(id);
      }
    });
  });
}
