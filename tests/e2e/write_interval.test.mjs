// `server.min_write_interval_ms`: the events plugins emit are written to a
// WebSocket client at most once per interval. An event due for it sooner
// waits, and goes out in the next write with everything else due by then, in
// order and once each; a client not written to for an interval gets its next
// event at once; an ack does not wait, and one asked for while events wait
// ends the wait; a client the server disconnects while its events wait gets
// them, and the disconnect.
//
// Times are asserted against the interval: a write held back comes at least
// 0.9 of it after the one before (a busy machine makes it later, never
// earlier); one not held back, or written together, within half of it (1 s
// is far above a busy machine's round trip).

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import {
  closeAllSockets,
  collect,
  collectAll,
  connect,
  disconnected,
  emitAck,
  emitAckOk,
  manifestToml,
  metric,
  quiet,
  relayPlugin,
  startHost,
  stopCleanly,
  unique,
  waitFor,
} from "./harness.mjs";
import { HS256_AUTH, nowS, signToken } from "./tokens.mjs";

const INTERVAL_MS = 1000;
const LATER = 4;
const CLOCK_SKEW_S = 1;

let host;

before(async () => {
  host = await startHost({
    manifest:
      manifestToml({
        plugins: [relayPlugin()],
        server: { min_write_interval_ms: INTERVAL_MS },
        namespaces: { "/": { events_per_second: 1000, event_burst: 1000 } },
      }) + HS256_AUTH.replace("clock_skew_s = 5", `clock_skew_s = ${CLOCK_SKEW_S}`),
  });
});

after(async () => {
  closeAllSockets();
  if (host) await stopCleanly(host);
});

/**
 * A sender and a member in a new room, neither written to for an interval,
 * so the next write to either is not held back; `heard` collects the
 * member's messages.
 */
async function quietRoom(prefix, senderName, memberName) {
  const room = unique(prefix);
  const [sender, member] = await Promise.all([
    connect(host.url, { auth: { token: signToken({ sub: senderName }) } }),
    connect(host.url, { auth: { token: signToken({ sub: memberName }) } }),
  ]);
  await emitAckOk(sender, "join", { room });
  await emitAckOk(member, "join", { room });
  const heard = collect(member, "message");
  await quiet(INTERVAL_MS + 200);
  return { room, sender, member, heard };
}

test("events due sooner than the interval after a write wait and go out together, in order", async () => {
  const { room, sender, member, heard } = await quietRoom("paced", "ada", "bob");
  const arrivals = [];
  member.on("message", () => arrivals.push(performance.now()));
  const written = async () => ({
    writes: await metric(host.url, "switchboard_websocket_writes_total"),
    frames: await metric(host.url, "switchboard_websocket_frames_written_total"),
  });
  const before = await written();

  await emitAckOk(sender, "send_message", { room, text: "first" });
  await waitFor(() => heard.length === 1);
  // Due at once after the member's last write: these wait for the interval.
  const sent = Array.from({ length: LATER }, (_, index) =>
    sender.timeout(INTERVAL_MS * 5).emitWithAck("send_message", { room, text: `later ${index}` }),
  );
  await Promise.all(sent);
  await waitFor(() => heard.length === 1 + LATER, INTERVAL_MS * 5);
  await quiet();

  assert.deepEqual(
    heard.map(({ text }) => text),
    ["first", ...Array.from({ length: LATER }, (_, index) => `later ${index}`)],
  );
  const waited = arrivals[1] - arrivals[0];
  assert.ok(waited >= INTERVAL_MS * 0.9, `the second write came ${waited.toFixed(0)} ms after the first`);
  const spread = arrivals[LATER] - arrivals[1];
  assert.ok(spread < INTERVAL_MS / 2, `the waiting events came ${spread.toFixed(0)} ms apart, not in one write`);

  // Every write counts once with its frames: the member's second write alone
  // carried LATER frames, so the frames outnumber the writes by LATER - 1 at least.
  const after = await written();
  const writes = after.writes - before.writes;
  const frames = after.frames - before.frames;
  assert.ok(writes >= 2, `${writes} writes counted`);
  assert.ok(frames - writes >= LATER - 1, `${frames} frames counted in ${writes} writes`);
});

test("an ack is written at once, however recent the client's last write", async () => {
  const room = unique("acked");
  const socket = await connect(host.url, { auth: { token: signToken({ sub: "cy" }) } });
  await emitAckOk(socket, "join", { room });
  const heard = collect(socket, "message");
  await emitAckOk(socket, "send_message", { room, text: "to myself" });
  await waitFor(() => heard.length === 1);
  // The broadcast was just written: an ack now does not wait for the interval.
  const asked = performance.now();
  await emitAckOk(socket, "echo", { n: 1 });
  const took = performance.now() - asked;
  assert.ok(took < INTERVAL_MS / 2, `the ack took ${took.toFixed(0)} ms`);
});

test("an ack asked for while broadcasts wait ends the wait: the broadcasts come at once, then the ack", async () => {
  const { room, sender, member, heard } = await quietRoom("interrupted", "dee", "eve");
  await emitAckOk(sender, "send_message", { room, text: "first" });
  await waitFor(() => heard.length === 1);
  // Due at once after the member's last write: this one waits for the interval.
  sender.emit("send_message", { room, text: "waiting" }, () => {});
  await quiet(INTERVAL_MS / 5);
  assert.equal(heard.length, 1, "the second broadcast waits");

  const asked = performance.now();
  const reply = await emitAck(member, "echo", { n: 2 });
  const took = performance.now() - asked;
  const heardBeforeAck = heard.map(({ text }) => text);

  assert.deepEqual(reply, { echo: { n: 2 } });
  assert.ok(took < INTERVAL_MS / 2, `the ack took ${took.toFixed(0)} ms`);
  assert.deepEqual(heardBeforeAck, ["first", "waiting"], "the waiting broadcast came before the ack");
  await quiet();
  assert.equal(heard.length, 2, "the waiting broadcast came once");
});

test("a client disconnected by the server while its broadcasts wait gets what came before, then the disconnect", async () => {
  const room = unique("expiring");
  const exp = nowS(2);
  const [socket, sender] = await Promise.all([
    connect(host.url, { auth: { token: signToken({ sub: "expiring", exp }) } }),
    connect(host.url, { auth: { token: signToken({ sub: "sender" }) } }),
  ]);
  await emitAckOk(socket, "join", { room });
  await emitAckOk(sender, "join", { room });
  const received = collectAll(socket);
  const gone = disconnected(socket, 15000);
  // A message every 100 ms keeps the client's writes waiting on the interval when its token expires.
  let sent = 0;
  const messages = setInterval(() => sender.emit("send_message", { room, text: `${sent++}` }, () => {}), 100);
  try {
    assert.equal(await gone, "io server disconnect");
  } finally {
    clearInterval(messages);
  }
  assert.ok(Date.now() >= (exp + CLOCK_SKEW_S) * 1000, "not disconnected before exp + clock skew");
  const texts = received.named("message").map(({ text }) => text);
  assert.ok(texts.length > 0, "the client got messages before its token expired");
  assert.deepEqual(texts, texts.map((_, index) => `${index}`), "in order, none missing or repeated");
  assert.deepEqual(
    received.filter(({ event }) => event !== "message"),
    [
      {
        event: "error",
        data: { event: "", code: "token_expired", message: "token expired: get a new token and connect again" },
      },
    ],
  );
});
