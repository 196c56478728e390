//! Per-event dispatch cost without the network: a Socket.IO event packet goes
//! into socketioxide through an in-memory socket, through Switchboard's
//! per-socket queue into a plugin, and the plugin's emit comes out as a packet.
//!
//! Run: `cargo bench -p switchboard --bench dispatch` (after `scripts/setup.sh`
//! has built the plugins). Prints one line per scenario.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use std::sync::Arc;

use engineioxide::Packet;
use socketioxide::SocketIo;
use switchboard::cluster::MemoryStore;
use switchboard::cluster::timers::MemoryTimers;
use switchboard::host_api::HostServices;
use switchboard::{Manifest, server, transport};
use tokio::sync::mpsc;

/// Events in flight at once: below the per-socket queue (256) and the socket's
/// outgoing buffer, as a well-behaved client would keep it.
const WINDOW: usize = 64;
const WARMUP_EVENTS: usize = 2_000;
const MEASURED_EVENTS: usize = 50_000;
const LATENCY_SAMPLES: usize = 5_000;

fn plugin(name: &str) -> PathBuf {
    let dir = std::env::var_os("SWITCHBOARD_PLUGIN_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-wasip2/release"),
        PathBuf::from,
    );
    let path = dir.join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup.sh first",
        path.display()
    );
    path
}

/// One in-memory client connected to `/` of a fresh host.
struct Client {
    packets_in: mpsc::Sender<Packet>,
    packets_out: mpsc::Receiver<Packet>,
}

async fn send(packets_in: &mpsc::Sender<Packet>, socket_io_packet: &str) {
    packets_in
        .send(Packet::Message(socket_io_packet.to_owned().into()))
        .await
        .expect("socket open");
}

impl Client {
    /// Disconnects and drains until the server side is done with the socket
    /// (the test socket panics if its receiver goes away first).
    async fn close(mut self) {
        let _ = self.packets_in.send(Packet::Close).await;
        while let Ok(Some(_)) =
            tokio::time::timeout(Duration::from_millis(200), self.packets_out.recv()).await
        {
        }
    }

    /// Waits for the next packet whose text starts with `prefix`.
    async fn next(&mut self, prefix: &str) -> String {
        loop {
            let packet = tokio::time::timeout(Duration::from_secs(5), self.packets_out.recv())
                .await
                .expect("a reply within 5 s")
                .expect("socket open");
            if let Packet::Message(text) = packet
                && text.starts_with(prefix)
            {
                return text.to_string();
            }
        }
    }
}

async fn host(manifest: &str) -> SocketIo {
    let manifest = Manifest::parse(&std::env::temp_dir().join("bench.toml"), manifest)
        .expect("bench manifest");
    let (_layer, io) = transport::socket_io(SocketIo::builder(), &manifest.server);
    let services = HostServices::new(
        server::in_memory(io.clone(), None).1,
        Arc::new(MemoryStore::new()),
        Arc::new(MemoryTimers::new()),
        &manifest.server,
    );
    let routes = server::load_plugins(&manifest, services)
        .await
        .expect("plugins load")
        .routes;
    transport::Namespaces::serve(
        &io,
        &routes,
        transport::SocketLimits::new(&manifest.server),
        None,
        None,
        None,
    )
    .await;
    io
}

async fn connect(io: &SocketIo, user: &str) -> Client {
    let (packets_in, packets_out) = io
        .new_dummy_sock("/", serde_json::json!({ "user": user }))
        .await;
    let mut client = Client {
        packets_in,
        packets_out,
    };
    client.next("0").await; // the CONNECT reply
    client
}

/// `events` events from `sender`, at most WINDOW in flight; returns the time
/// until `receiver` has seen every resulting emit.
async fn pipeline(
    sender: &mpsc::Sender<Packet>,
    receiver: &mut Client,
    event: &str,
    expect: &str,
    events: usize,
) -> Duration {
    let started = Instant::now();
    let mut sent = 0;
    let mut received = 0;
    while received < events {
        while sent < events && sent - received < WINDOW {
            send(sender, event).await;
            sent += 1;
        }
        receiver.next(expect).await;
        received += 1;
    }
    started.elapsed()
}

struct Scenario {
    name: &'static str,
    manifest: String,
    setup: &'static [&'static str],
    event: &'static str,
    expect: &'static str,
    /// Whether the emit goes to a second client rather than back to the sender.
    to_other: bool,
}

async fn run(scenario: &Scenario) {
    let io = host(&scenario.manifest).await;
    let mut sender = connect(&io, "alice").await;
    let mut other = connect(&io, "bob").await;
    for packet in scenario.setup {
        for client in [&mut sender, &mut other] {
            send(&client.packets_in, packet).await;
            client.next("3").await; // its ack
        }
    }
    let sender_in = sender.packets_in.clone();
    let receiver = if scenario.to_other {
        &mut other
    } else {
        &mut sender
    };
    pipeline(
        &sender_in,
        receiver,
        scenario.event,
        scenario.expect,
        WARMUP_EVENTS,
    )
    .await;
    let elapsed = pipeline(
        &sender_in,
        receiver,
        scenario.event,
        scenario.expect,
        MEASURED_EVENTS,
    )
    .await;
    let per_event = elapsed / u32::try_from(MEASURED_EVENTS).unwrap_or(u32::MAX);

    let mut latencies = Vec::with_capacity(LATENCY_SAMPLES);
    for _ in 0..LATENCY_SAMPLES {
        let started = Instant::now();
        send(&sender_in, scenario.event).await;
        receiver.next(scenario.expect).await;
        latencies.push(started.elapsed());
    }
    sender.close().await;
    other.close().await;
    latencies.sort();
    let percentile = |p: usize| latencies[(latencies.len() * p / 100).min(latencies.len() - 1)];
    println!(
        "{:<34} {:>8.2} µs/event  {:>9.0} events/s  round trip p50 {:>6.1} µs  p99 {:>6.1} µs",
        scenario.name,
        per_event.as_secs_f64() * 1e6,
        1.0 / per_event.as_secs_f64(),
        percentile(50).as_secs_f64() * 1e6,
        percentile(99).as_secs_f64() * 1e6,
    );
}

/// The bench's one client sends as fast as the host answers: far over the
/// default event rate, which is not what is measured.
const UNLIMITED_RATE: &str = r#"
[namespaces."/"]
events_per_second = 1000000000
event_burst = 1000000000
"#;

fn relay_manifest(instances: &str) -> String {
    format!(
        r#"version = 1
{UNLIMITED_RATE}
[[plugins]]
name = "faulty"
path = "{}"
events = ["relay"]
instances = "{instances}"
"#,
        plugin("faulty").display()
    )
}

fn main() {
    let chat_manifest = format!(
        r#"version = 1
{UNLIMITED_RATE}
[[plugins]]
name = "chat"
path = "{}"
events = ["join", "send_message"]
"#,
        plugin("chat").display()
    );
    let scenarios = [
        Scenario {
            name: "relay, pooled warm instances",
            manifest: relay_manifest("pooled"),
            setup: &[],
            event: r#"2["relay",{"n":1}]"#,
            expect: r#"2["relay""#,
            to_other: false,
        },
        Scenario {
            name: "relay, fresh instance per event",
            manifest: relay_manifest("per-event"),
            setup: &[],
            event: r#"2["relay",{"n":1}]"#,
            expect: r#"2["relay""#,
            to_other: false,
        },
        Scenario {
            name: "chat send_message to a room of 2",
            manifest: chat_manifest,
            setup: &[r#"20["join",{"room":"bench"}]"#],
            event: r#"2["send_message",{"room":"bench","text":"hello"}]"#,
            expect: r#"2["message""#,
            to_other: true,
        },
    ];
    println!(
        "{MEASURED_EVENTS} events per scenario, {WINDOW} in flight; {LATENCY_SAMPLES} sequential round trips"
    );
    // One thread: the CPU cost of an event on one core. Two threads: what the
    // server's multi-threaded runtime does with both cores of this machine.
    let runtimes = [
        (
            "1 thread",
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build(),
        ),
        (
            "2 threads",
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build(),
        ),
    ];
    for (threads, runtime) in runtimes {
        let runtime = runtime.expect("tokio runtime");
        for scenario in &scenarios {
            print!("{threads:<10} ");
            runtime.block_on(run(scenario));
        }
    }
}
