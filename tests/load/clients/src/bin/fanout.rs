//! The clients of `tests/load/fanout.mjs` on raw WebSocket (Engine.IO 4,
//! Socket.IO 5 text packets) in one single-threaded process: a Node process
//! of socket.io-client cannot take 200,000 deliveries a second, this can.
//!
//! `--subscribers` clients connect (from 127.0.0.2 on, round robin over
//! `--urls`, senders on the first), `join` the room `load`, and count every
//! `message` they get; the first `--senders` of them send `send_message` at
//! `--rate` a second for `--seconds`, acked. A client the server disconnects
//! reconnects after 100 ms asking to recover its session (`pid`, `offset`),
//! as socket.io-client does. Prints `sending` when the first message goes
//! out, `delivered` when deliveries stop (so the caller can measure the
//! servers' CPU in between), then one JSON object with what every
//! subscriber received.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::StreamExt;
use load_clients::{Socket, connect, next_packet, percentile_ms, send};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{sleep, sleep_until, timeout};
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser)]
struct Args {
    /// Servers' base URLs (`http://127.0.0.1:PORT`), comma separated.
    #[arg(long, value_delimiter = ',', required = true)]
    urls: Vec<String>,
    #[arg(long, default_value_t = 500)]
    subscribers: usize,
    #[arg(long, default_value_t = 5)]
    senders: usize,
    /// Messages a second, all senders together.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Clients connect from 127.0.0.2 .. 127.0.0.(N+1) in turn.
    #[arg(long, default_value_t = 8)]
    addresses: u8,
    /// Deliveries still missing after this long without one arriving are lost.
    #[arg(long, default_value_t = 15_000)]
    settle_ms: u64,
}

const ROOM: &str = "load";
const RECONNECT_DELAY: Duration = Duration::from_millis(100);
const JOIN_TIMEOUT: Duration = Duration::from_secs(5);
const JOIN_ATTEMPTS: u32 = 3;
const JOINING_AT_ONCE: usize = 20;
const ACK_TIMEOUT: Duration = Duration::from_secs(120);

/// What every client shares.
struct Run {
    started: Instant,
    total: usize,
    senders: usize,
    deliveries: AtomicU64,
    /// Ms since `started` of the last delivery.
    last_delivery: AtomicU64,
    /// Per message: 1 once its sender's ack came back a success.
    accepted: Vec<std::sync::atomic::AtomicU8>,
    /// Sends answered (success, error or given up).
    answered: AtomicUsize,
    refused: Mutex<HashMap<String, usize>>,
    unanswered_joins: AtomicUsize,
}

impl Run {
    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn refuse(&self, code: &str) {
        *self
            .refused
            .lock()
            .unwrap()
            .entry(code.to_owned())
            .or_default() += 1;
        self.answered.fetch_add(1, Ordering::Relaxed);
    }
}

/// What one subscriber received: message `index` was sent by sender `index % senders`.
struct Tally {
    counts: Vec<u8>,
    last_of_sender: Vec<Option<usize>>,
    last_offset: Option<(u64, u64)>,
    duplicates: u64,
    out_of_order: u64,
    disconnects: u64,
    new_sockets: u64,
    /// Send to delivery, µs.
    latencies: Vec<u32>,
}

impl Tally {
    fn new(run: &Run) -> Self {
        Self {
            counts: vec![0; run.total],
            last_of_sender: vec![None; run.senders],
            last_offset: None,
            duplicates: 0,
            out_of_order: 0,
            disconnects: 0,
            new_sockets: 0,
            latencies: Vec::new(),
        }
    }

    fn receive(&mut self, index: usize, offset: Option<&str>) {
        let Some(count) = self.counts.get_mut(index) else {
            return;
        };
        if *count > 0 {
            self.duplicates += 1;
        }
        *count = count.saturating_add(1);
        let senders = self.last_of_sender.len();
        let last = &mut self.last_of_sender[index % senders];
        if last.is_some_and(|last| index < last) {
            self.out_of_order += 1;
        }
        *last = Some(last.map_or(index, |last| last.max(index)));
        if let Some(offset) = offset.map(parse_offset) {
            if self.last_offset.is_some_and(|last| last >= offset) {
                self.out_of_order += 1;
            }
            self.last_offset = Some(offset);
        }
    }
}

/// A recovery offset: a stream id `ms-seq`, or one number on a node without Redis.
fn parse_offset(offset: &str) -> (u64, u64) {
    let mut parts = offset.split('-').map(|part| part.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

#[derive(Deserialize)]
struct Chat<'a> {
    #[serde(borrow)]
    text: std::borrow::Cow<'a, str>,
}

/// A `message` event's arguments: its name, the message, the recovery offset.
#[derive(Deserialize)]
struct Delivery<'a>(
    #[serde(borrow)] std::borrow::Cow<'a, str>,
    #[serde(borrow)] Chat<'a>,
    #[serde(default, borrow)] Option<std::borrow::Cow<'a, str>>,
);

/// A session to recover on reconnection.
#[derive(Default)]
struct Session {
    pid: Option<String>,
    offset: Option<String>,
}

/// Why a connection ended.
enum Ended {
    Stopped,
    Lost,
}

struct Client {
    index: usize,
    url: String,
    local: Ipv4Addr,
    run: Arc<Run>,
    tally: Tally,
    session: Session,
    /// Messages to send, for senders: (index, text).
    sends: Option<mpsc::UnboundedReceiver<(usize, String)>>,
    /// Sent and not acked yet.
    pending: Vec<usize>,
    stop: watch::Receiver<bool>,
}

impl Client {
    async fn connect(&mut self) -> Result<Socket, String> {
        let mut auth = json!({ "user": format!("user{}", self.index) });
        if let Some(pid) = &self.session.pid {
            auth["pid"] = json!(pid);
            auth["offset"] = json!(self.session.offset);
        }
        let (mut socket, reply) = connect(&self.url, self.local, &auth).await?;
        let pid = serde_json::from_str::<Value>(&reply)
            .ok()
            .and_then(|reply| reply.get("pid")?.as_str().map(str::to_owned));
        let recovered = pid.is_some() && pid == self.session.pid;
        self.session.pid = pid;
        if !recovered {
            self.session.offset = None;
            self.join(&mut socket).await?;
        }
        Ok(socket)
    }

    /// Joins the room, sending `join` again when it goes unanswered (a
    /// server may drop an event arriving right after its CONNECT reply).
    async fn join(&mut self, socket: &mut Socket) -> Result<(), String> {
        let join = format!(r#"420["join",{{"room":"{ROOM}"}}]"#);
        for attempt in 1..=JOIN_ATTEMPTS {
            send(socket, join.clone()).await?;
            let answered = timeout(JOIN_TIMEOUT, async {
                loop {
                    let text = next_packet(socket).await?;
                    if let Some(reply) = text.strip_prefix("430") {
                        return if reply.contains(r#""error""#) {
                            Err(format!("user{} could not join: {reply}", self.index))
                        } else {
                            Ok(())
                        };
                    }
                }
            })
            .await;
            match answered {
                Ok(joined) => return joined,
                Err(_) if attempt < JOIN_ATTEMPTS => {
                    self.run.unanswered_joins.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {}
            }
        }
        Err(format!(
            "user{}: join unanswered {JOIN_ATTEMPTS} times",
            self.index
        ))
    }

    /// Reads and sends until the run stops or the connection is lost.
    async fn serve(&mut self, socket: &mut Socket) -> Ended {
        loop {
            let sends = async {
                match self.sends.as_mut() {
                    Some(sends) => sends.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                frame = socket.next() => match frame {
                    Some(Ok(Message::Text(text))) => {
                        if let Some(reply) = self.packet(text.as_str())
                            && send(socket, reply).await.is_err()
                        {
                            return Ended::Lost;
                        }
                    }
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return Ended::Lost,
                    Some(Ok(_)) => {}
                },
                Some((index, text)) = sends => {
                    let packet = format!(
                        r#"42{index}["send_message",{{"room":"{ROOM}","text":"{text}"}}]"#
                    );
                    self.pending.push(index);
                    if send(socket, packet).await.is_err() {
                        return Ended::Lost;
                    }
                }
                _ = self.stop.changed() => return Ended::Stopped,
            }
        }
    }

    /// Handles one packet; returns the answer to send, if any.
    fn packet(&mut self, text: &str) -> Option<String> {
        if text == "2" {
            return Some("3".to_owned());
        }
        if let Some(event) = text.strip_prefix("42") {
            let Ok(Delivery(name, chat, offset)) = serde_json::from_str::<Delivery>(event) else {
                return None;
            };
            if name != "message" {
                return None;
            }
            let mut fields = chat.text.split(' ').map(|field| field.parse::<u128>());
            if let (Some(Ok(index)), Some(Ok(sent_ns))) = (fields.next(), fields.next()) {
                let index = usize::try_from(index).unwrap_or(usize::MAX);
                self.tally.receive(index, offset.as_deref());
                let latency = self
                    .run
                    .started
                    .elapsed()
                    .as_nanos()
                    .saturating_sub(sent_ns)
                    / 1_000;
                self.tally
                    .latencies
                    .push(u32::try_from(latency).unwrap_or(u32::MAX));
                self.run.deliveries.fetch_add(1, Ordering::Relaxed);
                self.run
                    .last_delivery
                    .store(self.run.elapsed_ms(), Ordering::Relaxed);
            }
            if let Some(offset) = offset {
                self.session.offset = Some(offset.into_owned());
            }
        } else if let Some(ack) = text.strip_prefix("43") {
            let digits = ack.find('[').unwrap_or(ack.len());
            let Ok(index) = ack[..digits].parse::<usize>() else {
                return None;
            };
            self.pending.retain(|pending| *pending != index);
            let reply: Value = serde_json::from_str(&ack[digits..]).unwrap_or(Value::Null);
            match reply[0]["error"]["code"].as_str() {
                Some(code) => self.run.refuse(code),
                None => {
                    self.run.accepted[index].store(1, Ordering::Relaxed);
                    self.run.answered.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        None
    }

    /// Connects, joins, then serves (reconnecting when the connection is
    /// lost) until the run stops. `joined` is told once, after the first join.
    async fn live(mut self, joined: oneshot::Sender<Result<(), String>>) -> Tally {
        let mut socket = match self.connect().await {
            Ok(socket) => {
                let _ = joined.send(Ok(()));
                socket
            }
            Err(error) => {
                let _ = joined.send(Err(error));
                return self.tally;
            }
        };
        loop {
            if let Ended::Stopped = self.serve(&mut socket).await {
                let _ = socket.close(None).await;
                return self.tally;
            }
            self.tally.disconnects += 1;
            // Sends in flight on a lost connection get no ack.
            for _ in self.pending.drain(..) {
                self.run.refuse("no ack");
            }
            socket = loop {
                tokio::select! {
                    _ = sleep(RECONNECT_DELAY) => {}
                    _ = self.stop.changed() => return self.tally,
                }
                let had = self.session.pid.clone();
                if let Ok(socket) = self.connect().await {
                    if had.is_none() || had != self.session.pid {
                        self.tally.new_sockets += 1;
                    }
                    break socket;
                }
            };
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    let total = (args.rate * args.seconds).round() as usize;
    let run = Arc::new(Run {
        started: Instant::now(),
        total,
        senders: args.senders,
        deliveries: AtomicU64::new(0),
        last_delivery: AtomicU64::new(0),
        accepted: (0..total).map(|_| Default::default()).collect(),
        answered: AtomicUsize::new(0),
        refused: Mutex::new(HashMap::new()),
        unanswered_joins: AtomicUsize::new(0),
    });
    let (stop, stopped) = watch::channel(false);
    let mut senders = Vec::new();
    let mut clients = Vec::new();
    for first in (0..args.subscribers).step_by(JOINING_AT_ONCE) {
        let mut joins = Vec::new();
        for index in first..args.subscribers.min(first + JOINING_AT_ONCE) {
            let url = if index < args.senders {
                &args.urls[0]
            } else {
                &args.urls[index % args.urls.len()]
            };
            let sends = (index < args.senders).then(|| {
                let (send, sends) = mpsc::unbounded_channel();
                senders.push(send);
                sends
            });
            let client = Client {
                index,
                url: url.clone(),
                local: Ipv4Addr::new(127, 0, 0, 2 + (index % usize::from(args.addresses)) as u8),
                run: run.clone(),
                tally: Tally::new(&run),
                session: Session::default(),
                sends,
                pending: Vec::new(),
                stop: stopped.clone(),
            };
            let (joined, join) = oneshot::channel();
            clients.push(tokio::spawn(client.live(joined)));
            joins.push(join);
        }
        for join in joins {
            join.await.map_err(|_| "a client ended before joining")??;
        }
    }

    println!("sending");
    let sending_from = tokio::time::Instant::now();
    for index in 0..total {
        let due = sending_from + Duration::from_secs_f64(index as f64 / args.rate);
        sleep_until(due).await;
        let text = format!("{index} {}", run.started.elapsed().as_nanos());
        if senders[index % args.senders].send((index, text)).is_err() {
            run.refuse("no ack");
        }
    }
    let _ = timeout(ACK_TIMEOUT, async {
        while run.answered.load(Ordering::Relaxed) < total {
            sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let accepted = run
        .accepted
        .iter()
        .filter(|ok| ok.load(Ordering::Relaxed) == 1)
        .count();
    let expected = (accepted * args.subscribers) as u64;
    let settle = |run: Arc<Run>| async move {
        run.last_delivery.store(run.elapsed_ms(), Ordering::Relaxed);
        while run.deliveries.load(Ordering::Relaxed) < expected
            && run.elapsed_ms() - run.last_delivery.load(Ordering::Relaxed) < args.settle_ms
        {
            sleep(Duration::from_millis(20)).await;
        }
    };
    settle(run.clone()).await;
    let elapsed = sending_from.elapsed().as_secs_f64();
    let deliveries = run.deliveries.load(Ordering::Relaxed);
    // Missing or only late? What still arrives in another window was in flight, not lost.
    let late = if deliveries < expected {
        settle(run.clone()).await;
        Some(run.deliveries.load(Ordering::Relaxed) - deliveries)
    } else {
        None
    };
    println!("delivered");
    let received = |tally: &Tally| {
        tally
            .counts
            .iter()
            .zip(&run.accepted)
            .filter(|(count, ok)| **count > 0 && ok.load(Ordering::Relaxed) == 1)
            .count() as u64
    };
    let _ = stop.send(true);
    let mut tallies = Vec::new();
    for client in clients {
        tallies.push(client.await.map_err(|error| error.to_string())?);
    }
    let lost = expected - tallies.iter().map(received).sum::<u64>();
    let mut latencies: Vec<u32> = tallies
        .iter_mut()
        .flat_map(|tally| std::mem::take(&mut tally.latencies))
        .collect();
    latencies.sort_unstable();
    let sum = |field: fn(&Tally) -> u64| tallies.iter().map(field).sum::<u64>();
    let per_subscriber = expected / args.subscribers as u64;
    let refused: Vec<String> = run
        .refused
        .lock()
        .unwrap()
        .iter()
        .map(|(code, count)| format!("{count} {code}"))
        .collect();
    let result = json!({
        "deliveries": deliveries,
        "expected": expected,
        "lost": lost,
        "lossy": tallies
            .iter()
            .filter(|tally| received(tally) < per_subscriber)
            .map(|tally| json!({ "disconnects": tally.disconnects, "newSockets": tally.new_sockets }))
            .collect::<Vec<_>>(),
        "refused": refused,
        "unansweredJoins": run.unanswered_joins.load(Ordering::Relaxed),
        "duplicates": sum(|tally| tally.duplicates),
        "outOfOrder": sum(|tally| tally.out_of_order),
        "disconnects": sum(|tally| tally.disconnects),
        "newSockets": sum(|tally| tally.new_sockets),
        "late": late,
        "perSecond": deliveries as f64 / elapsed,
        "elapsedSeconds": elapsed,
        "p50": percentile_ms(&latencies, 50),
        "p99": percentile_ms(&latencies, 99),
    });
    println!("{result}");
    Ok(())
}
