//! The clients of `tests/load/acks.mjs --client rust`: `--clients` sockets
//! (from 127.0.0.2 on) in one single-threaded process, each sending `echo`
//! `{n}` and waiting for its ack before sending the next. A Node process
//! doing the same stalls for milliseconds now and then (its garbage
//! collector, its one thread), which every server's p99 then shows.
//!
//! Warms up for `--warmup-ms`, prints `measuring`, runs for `--seconds`,
//! prints `done` (so the caller can measure the server's CPU in between),
//! then one JSON object: `acks`, `wrong` (acks that did not echo their
//! `n`), `perSecond`, `p50` and `p99` round trips in ms.

use std::net::Ipv4Addr;
use std::time::Duration;

use clap::Parser;
use load_clients::{Socket, connect, next_packet, percentile_ms, send};
use serde::Deserialize;
use serde_json::json;
use tokio::time::Instant;

#[derive(Parser)]
struct Args {
    /// The server's base URL (`http://127.0.0.1:PORT`).
    #[arg(long)]
    url: String,
    #[arg(long, default_value_t = 50)]
    clients: usize,
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    #[arg(long, default_value_t = 1_000)]
    warmup_ms: u64,
    /// Clients connect from 127.0.0.2 .. 127.0.0.(N+1) in turn.
    #[arg(long, default_value_t = 8)]
    addresses: u8,
}

#[derive(Deserialize)]
struct Echoed {
    echo: Sent,
}

#[derive(Deserialize)]
struct Sent {
    n: u64,
}

/// What a client measured.
#[derive(Default)]
struct Tally {
    /// Round trips, µs.
    latencies: Vec<u32>,
    wrong: u64,
}

/// Sends echoes one at a time until `until`, noting each round trip in
/// `tally` when one is given.
async fn echo_until(
    socket: &mut Socket,
    next: &mut u64,
    until: Instant,
    mut tally: Option<&mut Tally>,
) -> Result<(), String> {
    while Instant::now() < until {
        *next += 1;
        let n = *next;
        let sent = Instant::now();
        send(socket, format!("42{n}[\"echo\",{{\"n\":{n}}}]")).await?;
        let reply = next_packet(socket).await?;
        let took = sent.elapsed();
        let Some(tally) = tally.as_deref_mut() else {
            continue;
        };
        tally
            .latencies
            .push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
        let echoed = reply
            .strip_prefix(&format!("43{n}["))
            .and_then(|args| args.strip_suffix(']'))
            .and_then(|arg| serde_json::from_str::<Echoed>(arg).ok());
        if echoed.is_none_or(|echoed| echoed.echo.n != n) {
            tally.wrong += 1;
        }
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    let mut sockets = Vec::new();
    for index in 0..args.clients {
        let local = Ipv4Addr::new(127, 0, 0, 2 + (index % usize::from(args.addresses)) as u8);
        let (socket, _) = connect(&args.url, local, &json!({})).await?;
        sockets.push(socket);
    }
    let measured_from = Instant::now() + Duration::from_millis(args.warmup_ms);
    let until = measured_from + Duration::from_secs_f64(args.seconds);
    let clients: Vec<_> = sockets
        .into_iter()
        .map(|mut socket| {
            tokio::spawn(async move {
                let mut next = 0;
                let mut tally = Tally::default();
                echo_until(&mut socket, &mut next, measured_from, None).await?;
                echo_until(&mut socket, &mut next, until, Some(&mut tally)).await?;
                Ok::<_, String>(tally)
            })
        })
        .collect();
    tokio::time::sleep_until(measured_from).await;
    println!("measuring");
    let mut latencies = Vec::new();
    let mut wrong = 0;
    for client in clients {
        let tally = client.await.map_err(|error| error.to_string())??;
        latencies.extend(tally.latencies);
        wrong += tally.wrong;
    }
    println!("done");
    let elapsed = measured_from.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let acks = latencies.len();
    let result = json!({
        "acks": acks,
        "wrong": wrong,
        "perSecond": acks as f64 / elapsed,
        "p50": percentile_ms(&latencies, 50),
        "p99": percentile_ms(&latencies, 99),
    });
    println!("{result}");
    Ok(())
}
