//! Which connections are served: at most `max_connections` at once, and new
//! ones from one client address at a limited rate and up to a number open. A connection over a limit
//! is still read briefly, from a small reserve, so it can be told why (and,
//! over `max_connections`, so probes keep answering, see [`super::reserve`]);
//! a connection over the rate once its reserve is taken is closed at once.
//!
//! Engine.IO sessions are admitted under the same limits, apart from the
//! connections that carry them ([`Admission::admit_session`]): a long-polling
//! handshake is a request like any other, and one keep-alive connection
//! opened 7,000 sessions a second, each held until its connect timeout.

use std::collections::HashMap;
use std::fmt::Write;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use governor::{DefaultKeyedRateLimiter, Quota};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::fd_limit::connection_capacity;
use super::reserve::{Reserve, Seat};
use crate::http_api::ApiError;
use crate::manifest::{ConnectionLimits, Rate};

/// Connections over `max_connections` that are still read: `/healthz`,
/// `/readyz` and `/metrics` are answered on them, anything else gets a 503.
pub const PROBE_RESERVE: usize = 32;
/// Connections over the per-address rate that get a 429 before they close.
/// Kept apart from the probe reserve so that one address cannot take it.
pub const RATE_RESERVE: usize = 16;

/// Why a connection is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The node holds `max_connections` already.
    TooManyConnections,
    /// Its address opened connections faster than `connections_per_second_per_ip`.
    RateLimited,
    /// Its address holds `max_connections_per_ip` open already.
    TooManyFromAddress,
}

impl Refusal {
    /// What the client is told, when it sends a request in time.
    pub fn response(self) -> Response {
        let (status, code, message) = match self {
            Self::TooManyConnections => (
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_connections",
                "this node holds as many connections as it allows; retry later or on another node",
            ),
            Self::RateLimited => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many new connections from your address; retry later",
            ),
            Self::TooManyFromAddress => (
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_connections_from_address",
                "your address holds as many connections as one address may; close some first",
            ),
        };
        let mut response = ApiError::new(status, code, message).into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        response
    }

    /// Whether a request for `path` is served anyway.
    pub fn lets_through(self, path: &str) -> bool {
        self == Self::TooManyConnections && matches!(path, "/healthz" | "/readyz" | "/metrics")
    }
}

/// A connection let in. Held as long as its socket is open (an upgraded
/// WebSocket's too), it counts against the limit it was admitted under.
pub struct Ticket {
    place: Place,
    /// `Some`: the connection is over a limit and gets one answer at most.
    pub refusal: Option<Refusal>,
}

enum Place {
    Permit {
        _permit: OwnedSemaphorePermit,
        _address: Option<AddressSlot>,
    },
    Seat(Arc<Seat>),
}

/// How many connections (or sessions) each address holds open, at most `limit`.
struct OpenByAddress {
    limit: NonZeroUsize,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// An Engine.IO session let in ([`Admission::admit_session`]), in the
/// extensions of the request that opened it, which the session keeps until
/// it closes: its seat is given back with them.
#[derive(Clone)]
pub struct SessionSeat {
    _place: Arc<Place>,
}

/// One connection's count against its address, given back when it closes.
struct AddressSlot {
    held_by: Arc<OpenByAddress>,
    address: IpAddr,
}

impl OpenByAddress {
    fn new(limit: NonZeroUsize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            counts: Mutex::default(),
        })
    }

    /// A slot for a connection from `address`, unless it holds `limit` already.
    fn take(self: &Arc<Self>, address: IpAddr) -> Option<AddressSlot> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let open = counts.entry(address).or_default();
        if *open >= self.limit.get() {
            return None;
        }
        *open += 1;
        Some(AddressSlot {
            held_by: self.clone(),
            address,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut counts = self
            .held_by
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(open) = counts.get_mut(&self.address) {
            *open -= 1;
            if *open == 0 {
                counts.remove(&self.address);
            }
        }
    }
}

impl Ticket {
    /// Its place in the reserve of connections over `max_connections`.
    pub fn seat(&self) -> Option<Arc<Seat>> {
        match &self.place {
            Place::Seat(seat) => Some(seat.clone()),
            Place::Permit { .. } => None,
        }
    }
}

/// Connection admission for one listener, with its counters.
pub struct Admission {
    max_connections: usize,
    open: Arc<Semaphore>,
    probe_reserve: Arc<Reserve>,
    rate_reserve: Arc<Semaphore>,
    per_address: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// With `max_connections_per_ip`: the connections each address holds.
    open_per_address: Option<Arc<OpenByAddress>>,
    /// Sessions open, at most `max_connections`.
    sessions: Arc<Semaphore>,
    /// With `max_connections_per_ip`: the sessions each address holds.
    sessions_per_address: Option<Arc<OpenByAddress>>,
    over_max: AtomicU64,
    over_rate: AtomicU64,
    over_address: AtomicU64,
    header_timeouts: AtomicU64,
    write_timeouts: AtomicU64,
    heads_too_large: AtomicU64,
    failed_accepts: AtomicU64,
    last_accept_error: Mutex<Option<String>>,
    /// The counts as last logged (the start-up responder logs first).
    reported: Mutex<Counts>,
}

impl Admission {
    /// Admission as `limits` say, `max_connections` lowered to what the
    /// file descriptors allow.
    pub fn new(limits: &ConnectionLimits) -> Self {
        Self::with_capacity(
            connection_capacity(limits.max_connections),
            limits.per_address,
            limits.open_per_address,
        )
    }

    fn with_capacity(
        max_connections: usize,
        per_address: Option<Rate>,
        open_per_address: Option<NonZeroUsize>,
    ) -> Self {
        Self {
            max_connections,
            open: Arc::new(Semaphore::new(max_connections)),
            probe_reserve: Reserve::new(PROBE_RESERVE),
            rate_reserve: Arc::new(Semaphore::new(RATE_RESERVE)),
            per_address: per_address.map(|rate| {
                DefaultKeyedRateLimiter::dashmap(
                    Quota::per_second(rate.per_second).allow_burst(rate.burst),
                )
            }),
            open_per_address: open_per_address.map(OpenByAddress::new),
            sessions: Arc::new(Semaphore::new(max_connections)),
            sessions_per_address: open_per_address.map(OpenByAddress::new),
            over_max: AtomicU64::new(0),
            over_rate: AtomicU64::new(0),
            over_address: AtomicU64::new(0),
            header_timeouts: AtomicU64::new(0),
            write_timeouts: AtomicU64::new(0),
            heads_too_large: AtomicU64::new(0),
            failed_accepts: AtomicU64::new(0),
            last_accept_error: Mutex::new(None),
            reported: Mutex::new(Counts::default()),
        }
    }

    /// Admits a connection from `address`, or `None`: close it at once.
    pub fn admit(&self, address: IpAddr) -> Option<Ticket> {
        let over_rate = self
            .per_address
            .as_ref()
            .is_some_and(|limiter| limiter.check_key(&address_key(address)).is_err());
        let address_slot = match &self.open_per_address {
            Some(counts) => match counts.take(address_key(address)) {
                Some(slot) => Some(slot),
                None => return self.refuse_for_address(Refusal::TooManyFromAddress),
            },
            None => None,
        };
        if over_rate {
            return self.refuse_for_address(Refusal::RateLimited);
        }
        match self.open.clone().try_acquire_owned() {
            Ok(permit) => Some(Ticket {
                place: Place::Permit {
                    _permit: permit,
                    _address: address_slot,
                },
                refusal: None,
            }),
            Err(_) => {
                self.over_max.fetch_add(1, Ordering::Relaxed);
                Some(Ticket {
                    place: Place::Seat(self.probe_reserve.seat()),
                    refusal: Some(Refusal::TooManyConnections),
                })
            }
        }
    }

    /// Admits an Engine.IO session opened from `address`: at most
    /// `max_connections` sessions and `max_connections_per_ip` from one
    /// address, whichever transport they use. One opened on a connection
    /// that served a request before (a connection is charged to its
    /// address's rate once, when accepted) is also charged to the rate.
    /// The seat is held as long as the session.
    pub fn admit_session(
        &self,
        address: IpAddr,
        on_reused_connection: bool,
    ) -> Result<SessionSeat, Refusal> {
        let address = address_key(address);
        let over_rate = on_reused_connection
            && self
                .per_address
                .as_ref()
                .is_some_and(|limiter| limiter.check_key(&address).is_err());
        if over_rate {
            self.over_rate.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::RateLimited);
        }
        let address_slot = match &self.sessions_per_address {
            Some(counts) => match counts.take(address) {
                Some(slot) => Some(slot),
                None => {
                    self.over_address.fetch_add(1, Ordering::Relaxed);
                    return Err(Refusal::TooManyFromAddress);
                }
            },
            None => None,
        };
        let Ok(permit) = self.sessions.clone().try_acquire_owned() else {
            self.over_max.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::TooManyConnections);
        };
        Ok(SessionSeat {
            _place: Arc::new(Place::Permit {
                _permit: permit,
                _address: address_slot,
            }),
        })
    }

    /// Sessions admitted and still open.
    pub fn sessions_open(&self) -> usize {
        self.max_connections - self.sessions.available_permits()
    }

    /// A connection over its address's limits: it gets a 429 from the rate
    /// reserve, or is closed at once when that is full too.
    fn refuse_for_address(&self, refusal: Refusal) -> Option<Ticket> {
        let counter = match refusal {
            Refusal::TooManyFromAddress => &self.over_address,
            _ => &self.over_rate,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let permit = self.rate_reserve.clone().try_acquire_owned().ok()?;
        Some(Ticket {
            place: Place::Permit {
                _permit: permit,
                _address: None,
            },
            refusal: Some(refusal),
        })
    }

    /// Connections admitted and still open, those over a limit not counted.
    pub fn open(&self) -> usize {
        self.max_connections - self.open.available_permits()
    }

    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    pub fn header_timed_out(&self) {
        self.header_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    pub fn write_timed_out(&self) {
        self.write_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    pub fn head_too_large(&self) {
        self.heads_too_large.fetch_add(1, Ordering::Relaxed);
    }

    pub fn accept_failed(&self, error: &std::io::Error) {
        self.failed_accepts.fetch_add(1, Ordering::Relaxed);
        *self
            .last_accept_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(error.to_string());
    }

    /// Every `period`: one warning with how many connections were refused
    /// since the last (never one line per connection, which a flood would
    /// turn into a flood of logs), and forgets addresses seen long ago.
    pub async fn report(self: Arc<Self>, period: Duration) {
        let mut ticks = tokio::time::interval(period);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let now = self.counts();
            let since = {
                let mut reported = self.reported.lock().unwrap_or_else(PoisonError::into_inner);
                let since = now.since(&reported);
                *reported = now;
                since
            };
            let refused = since.over_max + since.over_rate + since.over_address;
            if refused > 0 {
                tracing::warn!(
                    "refused {refused} connections in the last {period:?}: {} over `max_connections` ({} open), \
                     {} over `connections_per_second_per_ip`, {} over `max_connections_per_ip`",
                    since.over_max,
                    self.open(),
                    since.over_rate,
                    since.over_address,
                );
            }
            if since.failed_accepts > 0 {
                let last = self
                    .last_accept_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone()
                    .unwrap_or_default();
                tracing::warn!(
                    "could not accept {} connections in the last {period:?} (last error: {last})",
                    since.failed_accepts
                );
            }
            if let Some(limiter) = &self.per_address {
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
        }
    }

    fn counts(&self) -> Counts {
        Counts {
            over_max: self.over_max.load(Ordering::Relaxed),
            over_rate: self.over_rate.load(Ordering::Relaxed),
            over_address: self.over_address.load(Ordering::Relaxed),
            failed_accepts: self.failed_accepts.load(Ordering::Relaxed),
        }
    }

    /// Prometheus text for the connection gauges and refusal counters.
    pub fn write_metrics(&self, text: &mut String) {
        let counts = self.counts();
        let _ = writeln!(
            text,
            "# HELP switchboard_connections_open TCP connections admitted and open.\n\
             # TYPE switchboard_connections_open gauge\n\
             switchboard_connections_open {}\n\
             # HELP switchboard_engine_sessions_open Engine.IO sessions open, whatever their transport, counted against the same limits.\n\
             # TYPE switchboard_engine_sessions_open gauge\n\
             switchboard_engine_sessions_open {}\n\
             # HELP switchboard_connections_max `max_connections`, as the file-descriptor limit allows.\n\
             # TYPE switchboard_connections_max gauge\n\
             switchboard_connections_max {}\n\
             # HELP switchboard_connections_refused_total Connections refused, by the limit they were over.\n\
             # TYPE switchboard_connections_refused_total counter\n\
             switchboard_connections_refused_total{{reason=\"too_many_connections\"}} {}\n\
             switchboard_connections_refused_total{{reason=\"rate_limited\"}} {}\n\
             switchboard_connections_refused_total{{reason=\"too_many_connections_from_address\"}} {}\n\
             # HELP switchboard_http_header_timeouts_total Connections closed for not sending a request's headers in time.\n\
             # TYPE switchboard_http_header_timeouts_total counter\n\
             switchboard_http_header_timeouts_total {}\n\
             # HELP switchboard_http_write_timeouts_total Connections closed for not reading a response within `write_timeout_ms`.\n\
             # TYPE switchboard_http_write_timeouts_total counter\n\
             switchboard_http_write_timeouts_total {}\n\
             # HELP switchboard_http_heads_too_large_total Requests refused with 431 for a head over `max_header_bytes`.\n\
             # TYPE switchboard_http_heads_too_large_total counter\n\
             switchboard_http_heads_too_large_total {}",
            self.open(),
            self.sessions_open(),
            self.max_connections,
            counts.over_max,
            counts.over_rate,
            counts.over_address,
            self.header_timeouts.load(Ordering::Relaxed),
            self.write_timeouts.load(Ordering::Relaxed),
            self.heads_too_large.load(Ordering::Relaxed),
        );
    }
}

#[derive(Default)]
struct Counts {
    over_max: u64,
    over_rate: u64,
    over_address: u64,
    failed_accepts: u64,
}

impl Counts {
    fn since(&self, earlier: &Self) -> Self {
        Self {
            over_max: self.over_max - earlier.over_max,
            over_rate: self.over_rate - earlier.over_rate,
            over_address: self.over_address - earlier.over_address,
            failed_accepts: self.failed_accepts - earlier.failed_accepts,
        }
    }
}

/// The address a client's connections are counted under: an IPv6 client
/// usually holds a whole /64, so its connections count together.
pub fn address_key(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::num::NonZeroU32;

    use super::*;

    const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn rate(per_second: u32, burst: u32) -> Option<Rate> {
        Some(Rate {
            per_second: NonZeroU32::new(per_second).expect("nonzero"),
            burst: NonZeroU32::new(burst).expect("nonzero"),
        })
    }

    #[test]
    fn over_max_connections_the_reserve_is_refused_and_its_longest_waiting_evicted() {
        let admission = Admission::with_capacity(2, None, None);
        let admitted: Vec<_> = (0..2).map(|_| admission.admit(LOOPBACK)).collect();
        assert!(
            admitted
                .iter()
                .all(|ticket| ticket.as_ref().is_some_and(|t| t.refusal.is_none()))
        );
        let reserve: Vec<_> = (0..PROBE_RESERVE)
            .map(|_| admission.admit(LOOPBACK).expect("within the reserve"))
            .collect();
        assert!(
            reserve
                .iter()
                .all(|ticket| ticket.refusal == Some(Refusal::TooManyConnections))
        );
        let newcomer = admission.admit(LOOPBACK).expect("a seat");
        assert!(
            newcomer
                .seat()
                .is_some_and(|seat| !seat.evicted.is_cancelled())
        );
        let evicted: Vec<_> = reserve
            .iter()
            .filter_map(Ticket::seat)
            .filter(|seat| seat.evicted.is_cancelled())
            .collect();
        assert_eq!(evicted.len(), 1, "past the reserve, the oldest is closed");
        assert_eq!(admission.open(), 2);
        drop(admitted);
        assert_eq!(admission.open(), 0);
        assert!(
            admission
                .admit(LOOPBACK)
                .is_some_and(|ticket| ticket.refusal.is_none())
        );
    }

    #[test]
    fn an_address_holds_at_most_max_connections_per_ip_and_gets_them_back_as_they_close() {
        let admission = Admission::with_capacity(100, None, NonZeroUsize::new(2));
        let held: Vec<_> = (0..2)
            .map(|_| admission.admit(LOOPBACK).expect("admitted"))
            .collect();
        assert!(held.iter().all(|ticket| ticket.refusal.is_none()));
        let third = admission.admit(LOOPBACK).expect("told why");
        assert_eq!(third.refusal, Some(Refusal::TooManyFromAddress));
        let other = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        assert!(
            admission
                .admit(other)
                .is_some_and(|ticket| ticket.refusal.is_none())
        );
        drop(held);
        assert!(
            admission
                .admit(LOOPBACK)
                .is_some_and(|ticket| ticket.refusal.is_none())
        );
    }

    #[test]
    fn one_address_over_its_burst_is_rate_limited_and_others_are_not() {
        let admission = Admission::with_capacity(100, rate(1, 3), None);
        let tickets: Vec<_> = (0..3).map(|_| admission.admit(LOOPBACK)).collect();
        assert!(
            tickets
                .iter()
                .all(|ticket| ticket.as_ref().is_some_and(|t| t.refusal.is_none()))
        );
        let refused = admission.admit(LOOPBACK).expect("within the reserve");
        assert_eq!(refused.refusal, Some(Refusal::RateLimited));
        let other = admission.admit(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
        assert!(other.is_some_and(|ticket| ticket.refusal.is_none()));
    }

    #[test]
    fn ipv6_addresses_count_per_64() {
        let a: Ipv6Addr = "2001:db8:1:2::1".parse().expect("address");
        let b: Ipv6Addr = "2001:db8:1:2:ffff::9".parse().expect("address");
        let c: Ipv6Addr = "2001:db8:1:3::1".parse().expect("address");
        assert_eq!(address_key(a.into()), address_key(b.into()));
        assert_ne!(address_key(a.into()), address_key(c.into()));
        let mapped: Ipv6Addr = "::ffff:10.0.0.1".parse().expect("address");
        assert_eq!(
            address_key(mapped.into()),
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))
        );
    }

    #[test]
    fn sessions_are_held_within_the_connection_limits_and_given_back_as_they_close() {
        let admission = Admission::with_capacity(3, None, NonZeroUsize::new(2));
        let other = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        let held: Vec<_> = (0..2)
            .map(|_| admission.admit_session(LOOPBACK, true).expect("admitted"))
            .collect();
        assert_eq!(
            admission.admit_session(LOOPBACK, true).err(),
            Some(Refusal::TooManyFromAddress)
        );
        let third = admission.admit_session(other, true).expect("admitted");
        assert_eq!(
            admission.admit_session(other, true).err(),
            Some(Refusal::TooManyConnections)
        );
        assert_eq!(admission.sessions_open(), 3);
        // Connections are counted apart.
        assert!(
            admission
                .admit(other)
                .is_some_and(|ticket| ticket.refusal.is_none())
        );
        drop((held, third));
        assert_eq!(admission.sessions_open(), 0);
        assert!(admission.admit_session(LOOPBACK, true).is_ok());
        assert_eq!(admission.counts().over_address, 1);
        assert_eq!(admission.counts().over_max, 1);
    }

    #[test]
    fn a_session_is_charged_to_its_address_s_rate_only_on_a_connection_that_served_before() {
        let admission = Admission::with_capacity(100, rate(1, 3), None);
        // The connection's own admission took the rate's first place.
        assert!(admission.admit(LOOPBACK).is_some());
        let seats: Vec<_> = (0..10)
            .map(|_| admission.admit_session(LOOPBACK, false).expect("admitted"))
            .collect();
        let reused: Vec<_> = (0..3)
            .map(|_| admission.admit_session(LOOPBACK, true))
            .collect();
        assert!(reused[..2].iter().all(Result::is_ok));
        assert_eq!(reused[2].as_ref().err(), Some(&Refusal::RateLimited));
        assert_eq!(admission.counts().over_rate, 1);
        assert_eq!(seats.len() + 2, admission.sessions_open());
    }

    #[test]
    fn probes_pass_a_full_node_but_not_a_rate_limit() {
        assert!(Refusal::TooManyConnections.lets_through("/healthz"));
        assert!(!Refusal::TooManyConnections.lets_through("/socket.io/"));
        assert!(!Refusal::RateLimited.lets_through("/healthz"));
    }
}
