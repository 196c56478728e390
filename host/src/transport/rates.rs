//! A socket's rates: the events it may send (`events_per_second`,
//! `event_burst`) and what they may cost ([`CostBudget`]).
//!
//! They are its connection's, per namespace: a client that leaves a
//! namespace and connects to it again on the same connection gets the rates
//! its last socket there left, and each connect counts as an event. With
//! rates of its own, every new socket started with a full burst: a client
//! allowed one event a second had 1,000 handled in 0.65 s by connecting to
//! the namespace 200 times. New connections are bounded per address
//! (`connections_per_second_per_ip`).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::request::Parts;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::budget::CostBudget;
use crate::manifest::EventRate;
use crate::runtime::Meter;

/// A socket that has `event_burst` events (or connects) refused within this
/// window is disconnected: it ignores the `rate_limited` errors it is sent.
const REFUSAL_WINDOW: Duration = Duration::from_secs(10);

pub struct SocketRates {
    events: DefaultDirectRateLimiter,
    refusals: Mutex<Refusals>,
    /// Refusals within [`REFUSAL_WINDOW`] that make them persistent.
    max_refusals: u32,
    pub costs: CostBudget,
}

/// Events refused for their rate since `since`.
struct Refusals {
    since: Instant,
    count: u32,
}

/// An event or connect over the rate.
pub struct OverRate {
    /// The client kept going over it, ignoring its refusals.
    pub persistently: bool,
}

impl SocketRates {
    fn new(rate: &EventRate) -> Self {
        Self {
            events: RateLimiter::direct(Quota::per_second(rate.per_second).allow_burst(rate.burst)),
            refusals: Mutex::new(Refusals {
                since: Instant::now(),
                count: 0,
            }),
            max_refusals: rate.burst.get(),
            costs: CostBudget::new(rate),
        }
    }

    /// Takes one event, or connect, from the rate; one refused is counted.
    pub fn take_event(&self) -> Result<(), OverRate> {
        if self.events.check().is_ok() {
            return Ok(());
        }
        let mut refusals = self.refusals.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if now.duration_since(refusals.since) > REFUSAL_WINDOW {
            *refusals = Refusals {
                since: now,
                count: 0,
            };
        }
        refusals.count = refusals.count.saturating_add(1);
        Err(OverRate {
            persistently: refusals.count >= self.max_refusals,
        })
    }
}

impl Meter for SocketRates {
    fn plugin_time(&self, took: Duration) {
        self.costs.plugin_time(took);
    }

    fn output_bytes(&self, bytes: usize) {
        self.costs.output_bytes(bytes);
    }
}

/// Each namespace's [`SocketRates`] on one connection, carried in the
/// extensions of the request that opened it ([`super::own_request_head`]
/// puts them there), which the connection keeps for as long as it lives.
#[derive(Clone, Default)]
pub struct ConnectionRates(Arc<Mutex<Vec<NamespaceRates>>>);

type NamespaceRates = (Box<str>, Arc<SocketRates>);

/// The rates of a socket connecting to `namespace`: those its connection
/// has there, made from `rate` for its first socket there.
pub fn socket_rates(request: &Parts, namespace: &str, rate: &EventRate) -> Arc<SocketRates> {
    let Some(ConnectionRates(namespaces)) = request.extensions.get::<ConnectionRates>() else {
        // A session not opened over HTTP: the dispatch benchmark's.
        return Arc::new(SocketRates::new(rate));
    };
    let mut namespaces = namespaces.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, rates)) = namespaces.iter().find(|(name, _)| **name == *namespace) {
        return rates.clone();
    }
    let rates = Arc::new(SocketRates::new(rate));
    // Most connections use one namespace: room for it alone.
    namespaces.reserve_exact(1);
    namespaces.push((namespace.into(), rates.clone()));
    rates
}
