//! Auctions with live bidding, correct across nodes.
//!
//! HTTP (a user's bearer token): `POST /apps/auction/auctions` creates one,
//! `GET /apps/auction/auctions/{id}` reads it, `POST .../{id}/bids` bids.
//! Events: `join_auction {id}`, `leave_auction {id}`, `place_bid {id, amount}`.
//! Emits `bid_placed` and `watchers` to the room `auction:{id}`, `outbid` to
//! the previous leader, and `auction_closed` once, from a timer at the end.
//!
//! A bid reads the auction, checks it and writes it back in one call, which
//! the host runs as a serializable transaction: concurrent bids on any node
//! are serialized, none is lost, accepted amounts strictly rise, and the
//! `outbid` of an overtaken bid is sent once, only if the bid that overtook
//! it is stored. `seq` numbers bids, because emits from two nodes may arrive
//! out of order.
//!
//! Nothing is kept forever: an auction may run for at most `max_duration_ms`
//! (config, default 30 days) and is deleted `retention_ms` (default 30 days)
//! after it ends; a socket's list of watched auctions holds at most
//! [`MAX_WATCHED`] entries and expires a day after its last join.

use serde::{Deserialize, Serialize};
use serde_json::json;
use switchboard_sdk::http::{Request, Response};
use switchboard_sdk::{
    Config, Conn, Error, Payload, Plugin, clock, config, emit, export_plugin, log, rooms, state,
    timers,
};

const DEFAULT_NAMESPACE: &str = "/auction";
const CLOSE_TIMER: &str = "close:";
/// How long a socket's list of watched auctions outlives a lost disconnect.
const WATCHING_TTL_MS: u64 = 24 * 60 * 60 * 1000;
/// Auctions a socket's watched list remembers; older joins are forgotten.
const MAX_WATCHED: i64 = 256;
const DAY_MS: u64 = 24 * 60 * 60 * 1000;
const DEFAULT_MAX_DURATION_MS: u64 = 30 * DAY_MS;
const DEFAULT_RETENTION_MS: u64 = 30 * DAY_MS;

#[derive(Serialize, Deserialize, Clone)]
struct Auction {
    id: String,
    item: String,
    seller: String,
    starting_price: u64,
    min_increment: u64,
    ends_at: u64,
    status: Status,
    highest_bid: Option<u64>,
    highest_bidder: Option<String>,
    /// Accepted bids so far: the `seq` of the latest.
    bids: u64,
}

#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Status {
    Open,
    Closed,
}

/// An auction as clients see it: with its cluster-wide watcher count.
#[derive(Serialize)]
struct View {
    #[serde(flatten)]
    auction: Auction,
    watchers: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAuction {
    item: String,
    starting_price: u64,
    min_increment: u64,
    ends_at: Option<u64>,
    duration_ms: Option<u64>,
}

#[derive(Deserialize)]
struct AuctionRef {
    id: String,
}

#[derive(Deserialize)]
struct PlaceBid {
    id: String,
    amount: u64,
}

#[derive(Deserialize)]
struct HttpBid {
    amount: u64,
}

#[derive(Serialize)]
struct Accepted<'a> {
    accepted: bool,
    id: &'a str,
    amount: u64,
    seq: u64,
}

/// Why a bid or request failed, with the HTTP status it maps to.
struct Refusal {
    status: u16,
    error: Error,
}

impl Refusal {
    fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            error: Error::new(code, message),
        }
    }

    fn bad_request(error: Error) -> Self {
        Self { status: 400, error }
    }

    fn not_found(id: &str) -> Self {
        Self::new(404, "auction_not_found", format!("no auction `{id}`"))
    }
}

impl From<Error> for Refusal {
    /// Host calls that failed (state unavailable, say).
    fn from(error: Error) -> Self {
        Self { status: 503, error }
    }
}

fn namespace() -> String {
    config::get("namespace").unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned())
}

/// How long the auction's state is kept from now: until `retention_ms` after it ends.
fn kept_for(auction: &Auction) -> Option<u64> {
    let retention = config::get("retention_ms").unwrap_or(DEFAULT_RETENTION_MS);
    Some(
        auction
            .ends_at
            .saturating_sub(clock::now_ms())
            .saturating_add(retention)
            .max(1),
    )
}

fn room(id: &str) -> String {
    format!("auction:{id}")
}

fn key(id: &str) -> String {
    format!("auction:{id}")
}

fn load(id: &str) -> Result<Auction, Refusal> {
    let json = state::get(&key(id))?.ok_or_else(|| Refusal::not_found(id))?;
    serde_json::from_str(&json).map_err(|error| {
        Refusal::new(
            500,
            "corrupt_state",
            format!("auction `{id}` cannot be read: {error}"),
        )
    })
}

fn store(auction: &Auction) -> Result<(), Refusal> {
    Ok(state::set(
        &key(&auction.id),
        &to_json(auction)?,
        kept_for(auction),
    )?)
}

fn to_json<T: Serialize>(value: &T) -> Result<String, Refusal> {
    serde_json::to_string(value)
        .map_err(|error| Refusal::new(500, "internal", format!("cannot serialize: {error}")))
}

fn view(auction: Auction) -> Result<View, Error> {
    let watchers = rooms::size(&namespace(), &room(&auction.id))?;
    Ok(View { auction, watchers })
}

/// Whether `bidder` may bid `amount` now; the minimum is in the refusal.
fn check_bid(auction: &Auction, bidder: &str, amount: u64) -> Result<(), Refusal> {
    if auction.status == Status::Closed || clock::now_ms() >= auction.ends_at {
        return Err(Refusal::new(
            409,
            "auction_closed",
            format!("auction `{}` has ended", auction.id),
        ));
    }
    if bidder == auction.seller {
        return Err(Refusal::new(
            403,
            "seller_cannot_bid",
            "the seller cannot bid on their own auction",
        ));
    }
    let minimum = auction
        .highest_bid
        .map_or(auction.starting_price, |highest| {
            highest.saturating_add(auction.min_increment)
        });
    if amount < minimum {
        return Err(Refusal::new(
            422,
            "bid_too_low",
            format!("the minimum bid is {minimum}"),
        ));
    }
    Ok(())
}

/// Places a bid and tells the room and the previous leader, all in the
/// call's transaction.
fn place_bid(id: &str, bidder: &str, amount: u64) -> Result<Auction, Refusal> {
    let auction = load(id)?;
    check_bid(&auction, bidder, amount)?;
    let previous_leader = auction.highest_bidder.clone();
    let placed = Auction {
        highest_bid: Some(amount),
        highest_bidder: Some(bidder.to_owned()),
        bids: auction.bids + 1,
        ..auction
    };
    store(&placed)?;
    announce(&placed, previous_leader.as_deref())?;
    Ok(placed)
}

fn announce(placed: &Auction, previous_leader: Option<&str>) -> Result<(), Error> {
    let namespace = namespace();
    let bidder = placed.highest_bidder.as_deref().unwrap_or_default();
    let amount = placed.highest_bid.unwrap_or_default();
    emit::to_room(
        &namespace,
        &room(&placed.id),
        "bid_placed",
        &json!({ "id": placed.id, "amount": amount, "bidder": bidder, "seq": placed.bids, "at": clock::now_ms() }),
    )?;
    match previous_leader {
        Some(leader) if leader != bidder => emit::to_user(
            &namespace,
            leader,
            "outbid",
            &json!({ "id": placed.id, "amount": amount, "bidder": bidder }),
        ),
        _ => Ok(()),
    }
}

fn watching_key(socket_id: &str) -> String {
    format!("watching:{socket_id}")
}

/// Notes that the socket watches `id`, for its disconnect.
fn remember_watching(socket_id: &str, id: &str) -> Result<(), Error> {
    let key = watching_key(socket_id);
    state::list_push(&key, &[id.to_owned()])?;
    state::list_trim(&key, -MAX_WATCHED, -1)?;
    state::expire(&key, Some(WATCHING_TTL_MS)).map(drop)
}

fn emit_watchers(id: &str) -> Result<u32, Error> {
    let namespace = namespace();
    let count = rooms::size(&namespace, &room(id))?;
    emit::to_room(
        &namespace,
        &room(id),
        "watchers",
        &json!({ "id": id, "count": count }),
    )?;
    Ok(count)
}

fn accepted(auction: &Auction) -> Accepted<'_> {
    Accepted {
        accepted: true,
        id: &auction.id,
        amount: auction.highest_bid.unwrap_or_default(),
        seq: auction.bids,
    }
}

fn bidder(conn: &Conn) -> Result<&str, Error> {
    conn.user_id.as_deref().ok_or_else(|| {
        Error::new(
            "login_required",
            "bidding needs a verified user: connect with a token",
        )
    })
}

fn create(seller: &str, request: &Request) -> Result<Response, Refusal> {
    let new: NewAuction = request.json().map_err(Refusal::bad_request)?;
    let invalid = |message: &str| Refusal::new(400, "invalid_body", message);
    if new.item.trim().is_empty() {
        return Err(invalid("`item` must not be empty"));
    }
    if new.min_increment == 0 {
        return Err(invalid("`min_increment` must be at least 1"));
    }
    let now = clock::now_ms();
    let ends_at = match (new.ends_at, new.duration_ms) {
        (Some(ends_at), None) => ends_at,
        (None, Some(duration)) => now.saturating_add(duration),
        _ => return Err(invalid("give exactly one of `ends_at` and `duration_ms`")),
    };
    if ends_at <= now {
        return Err(invalid("the auction must end in the future"));
    }
    let max_duration = config::get("max_duration_ms").unwrap_or(DEFAULT_MAX_DURATION_MS);
    if ends_at - now > max_duration {
        return Err(invalid(&format!(
            "an auction may run for at most {max_duration} ms"
        )));
    }
    let id = state::incr("auction:next-id", 1)?.to_string();
    let auction = Auction {
        id: id.clone(),
        item: new.item,
        seller: seller.to_owned(),
        starting_price: new.starting_price,
        min_increment: new.min_increment,
        ends_at,
        status: Status::Open,
        highest_bid: None,
        highest_bidder: None,
        bids: 0,
    };
    state::set(&key(&id), &to_json(&auction)?, kept_for(&auction))?;
    timers::schedule(ends_at, &format!("{CLOSE_TIMER}{id}"), &id)?;
    log::info(&format!(
        "auction {id} opened by {seller}, ends at {ends_at}"
    ));
    Ok(Response::json(201, &view(auction)?))
}

fn route(request: &Request) -> Result<Response, Refusal> {
    let Some(user) = request.user_id.as_deref() else {
        return Err(Refusal::new(
            401,
            "login_required",
            "send a user's token as `Authorization: Bearer`",
        ));
    };
    let id = request.param("id");
    match (request.method.as_str(), id) {
        ("POST", None) => create(user, request),
        ("GET", Some(id)) => Ok(Response::json(200, &view(load(id)?)?)),
        ("POST", Some(id)) => {
            let bid: HttpBid = request.json().map_err(Refusal::bad_request)?;
            let placed = place_bid(id, user, bid.amount)?;
            Ok(Response::json(200, &accepted(&placed)))
        }
        _ => Err(Refusal::new(
            405,
            "method_not_allowed",
            format!("{} is not served on {}", request.method, request.path),
        )),
    }
}

/// Closes the auction once: a timer delivered again finds it closed.
fn close(id: &str) -> Result<(), Error> {
    let auction = load(id).map_err(|refusal| refusal.error)?;
    if auction.status == Status::Closed {
        return Ok(());
    }
    let closed = Auction {
        status: Status::Closed,
        ..auction
    };
    store(&closed).map_err(|refusal| refusal.error)?;
    log::info(&format!("auction {id} closed"));
    emit::to_room(
        &namespace(),
        &room(id),
        "auction_closed",
        &json!({ "id": id, "winner": closed.highest_bidder, "amount": closed.highest_bid }),
    )
}

struct Auctions;

impl Plugin for Auctions {
    fn init(config: &Config) -> Result<(), Error> {
        config.get::<String>("namespace")?;
        config.get::<u64>("max_duration_ms")?;
        config.get::<u64>("retention_ms")?;
        Ok(())
    }

    fn on_event(conn: &Conn, event: &str, payload: Payload) -> Result<Option<Payload>, Error> {
        match event {
            "join_auction" => {
                let AuctionRef { id } = payload.parse_object()?;
                let auction = load(&id).map_err(|refusal| refusal.error)?;
                rooms::join(&conn.namespace, &conn.socket_id, &room(&id))?;
                remember_watching(&conn.socket_id, &id)?;
                let watchers = emit_watchers(&id)?;
                Ok(Some(Payload::new(&View { auction, watchers })?))
            }
            "leave_auction" => {
                let AuctionRef { id } = payload.parse_object()?;
                rooms::leave(&conn.namespace, &conn.socket_id, &room(&id))?;
                emit_watchers(&id)?;
                Ok(Some(Payload::new(&json!({ "id": id, "left": true }))?))
            }
            "place_bid" => {
                let bid: PlaceBid = payload.parse_object()?;
                let placed = place_bid(&bid.id, bidder(conn)?, bid.amount)
                    .map_err(|refusal| refusal.error)?;
                Ok(Some(Payload::new(&accepted(&placed))?))
            }
            other => Err(Error::unknown_event(other)),
        }
    }

    /// Recounts the watchers of every auction the socket joined. The list
    /// comes from state, not the socket's rooms: a socket of a node that died
    /// is disconnected by another node, which cannot see its rooms.
    fn on_disconnect(conn: &Conn, _reason: &str) {
        let key = watching_key(&conn.socket_id);
        let watched = state::list_range(&key, 0, -1).and_then(|watched| {
            state::delete(&key)?;
            Ok(watched)
        });
        let mut watched = match watched {
            Ok(watched) => watched,
            Err(error) => {
                log::warn(&format!(
                    "watchers not updated for a socket that left: {}",
                    error.message
                ));
                return;
            }
        };
        watched.sort();
        watched.dedup();
        for id in &watched {
            // Fails for a socket of a dead node; its rooms are gone with it.
            let _ = rooms::leave(&conn.namespace, &conn.socket_id, &room(id));
            if let Err(error) = emit_watchers(id) {
                log::warn(&format!(
                    "watchers of auction {id} not updated: {}",
                    error.message
                ));
            }
        }
    }

    fn on_timer(key: &str, payload: &str) -> Result<(), Error> {
        match key.strip_prefix(CLOSE_TIMER) {
            Some(_) => close(payload),
            None => Err(Error::new(
                "unknown_timer",
                format!("no handler for timer `{key}`"),
            )),
        }
    }

    fn on_http(request: Request) -> Response {
        route(&request)
            .unwrap_or_else(|refusal| Response::from_error(refusal.status, &refusal.error))
    }
}

export_plugin!(Auctions);
