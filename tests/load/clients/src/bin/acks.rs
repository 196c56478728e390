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

use std::cell::RefCell;
use std::net::Ipv4Addr;
use std::rc::Rc;
use std::time::Duration;

use clap::Parser;
use load_clients::{Socket, connect, next_packet, percentile_ms, send};
use serde::Deserialize;
use serde_json::json;
use tokio::task::LocalSet;
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

/// What the clients measure together.
#[derive(Default)]
struct Tally {
    /// Round trips, µs.
    latencies: Vec<u32>,
    wrong: u64,
}

/// Sends echoes one at a time until `until`, noting each round trip in
/// `tally` when `measured`.
async fn echo_until(
    socket: &mut Socket,
    next: &mut u64,
    until: Instant,
    tally: Option<&RefCell<Tally>>,
) -> Result<(), String> {
    while Instant::now() < until {
        *next += 1;
        let n = *next;
        let sent = Instant::now();
        send(socket, format!("42{n}[\"echo\",{{\"n\":{n}}}]")).await?;
        let reply = next_packet(socket).await?;
        let took = sent.elapsed();
        let Some(tally) = tally else { continue };
        let mut tally = tally.borrow_mut();
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

fn main() -> Result<(), String> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| error.to_string())?;
    LocalSet::new().block_on(&runtime, run(args))
}

async fn run(args: Args) -> Result<(), String> {
    let mut sockets = Vec::new();
    for index in 0..args.clients {
        let local = Ipv4Addr::new(127, 0, 0, 2 + (index % usize::from(args.addresses)) as u8);
        let (socket, _) = connect(&args.url, local, &json!({})).await?;
        sockets.push(socket);
    }
    let tally = Rc::new(RefCell::new(Tally::default()));
    let warm_until = Instant::now() + Duration::from_millis(args.warmup_ms);
    let measured_from = warm_until;
    let until = measured_from + Duration::from_secs_f64(args.seconds);
    let clients: Vec<_> = sockets
        .into_iter()
        .map(|mut socket| {
            let tally = tally.clone();
            tokio::task::spawn_local(async move {
                let mut next = 0;
                echo_until(&mut socket, &mut next, warm_until, None).await?;
                echo_until(&mut socket, &mut next, until, Some(&tally)).await
            })
        })
        .collect();
    tokio::time::sleep_until(measured_from).await;
    println!("measuring");
    tokio::time::sleep_until(until).await;
    for client in clients {
        client.await.map_err(|error| error.to_string())??;
    }
    println!("done");
    let elapsed = measured_from.elapsed().as_secs_f64();
    let mut tally = tally.borrow_mut();
    tally.latencies.sort_unstable();
    let acks = tally.latencies.len();
    let result = json!({
        "acks": acks,
        "wrong": tally.wrong,
        "perSecond": acks as f64 / elapsed,
        "p50": percentile_ms(&tally.latencies, 50),
        "p99": percentile_ms(&tally.latencies, 99),
    });
    println!("{result}");
    Ok(())
}
