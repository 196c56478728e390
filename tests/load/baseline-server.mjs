// Baseline for the load run: the same chat fanout written directly on Node's
// socket.io server (no plugins, no sandbox), as teams usually do it.
// Prints the same ready line as switchboard so the load tool can drive both.
import { createServer } from "node:http";
import { Server } from "socket.io";

const http = createServer();
const io = new Server(http, { maxHttpBufferSize: 1e6 });
let sequence = 0;

io.on("connection", (socket) => {
  const user = socket.handshake.auth?.user ?? socket.id;
  socket.on("join", ({ room }, ack) => {
    socket.join(room);
    ack?.({ room, history: [], members: io.sockets.adapter.rooms.get(room)?.size ?? 0 });
  });
  socket.on("send_message", ({ room, text }, ack) => {
    if (!socket.rooms.has(room)) return ack?.({ error: { code: "not_in_room", message: room } });
    const message = { id: ++sequence, room, from: user, text, ts: Date.now() };
    io.to(room).emit("message", message);
    ack?.({ id: message.id });
  });
  socket.on("echo", (data, ack) => ack?.({ echo: data }));
});

http.listen(0, "127.0.0.1", () => {
  console.log(`switchboard listening on http://127.0.0.1:${http.address().port}`);
});
process.on("SIGTERM", () => io.close(() => process.exit(0)));
