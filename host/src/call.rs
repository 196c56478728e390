//! `switchboard call`: events through one plugin of a manifest, with no
//! server and no sockets, for plugin authors and their tests. The plugin
//! runs as `serve` would run it (its `init` with its config, `on-connect`,
//! then `on-event` for each event, from one socket), on fresh in-memory
//! state; its emits and room changes are recorded instead of delivered.
//! Then, if asked, the timers it scheduled fire at once, as if the clock
//! had reached them, and its socket disconnects.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::bindings::{Conn, Payload, PluginError};
use crate::cluster::MemoryStore;
use crate::cluster::timers::{DueTimer, MemoryTimers, TimerStore};
use crate::host_api::{Clock, HostServices};
use crate::manifest::Manifest;
use crate::payload::{self, Outgoing};
use crate::server::{ServeError, load_plugins};
use crate::transport::{Audience, Membership, PendingAck, Sockets, SocketsError, socket_room};

/// The socket id the call's client has.
pub const SOCKET_ID: &str = "call-socket-0001";

/// Who sends the event.
pub struct Caller {
    pub namespace: Option<String>,
    pub user_id: Option<String>,
    /// The handshake `auth`, as JSON text.
    pub auth: String,
}

/// The clock the plugin reads, and what happens after the events.
#[derive(Default)]
pub struct Afterwards {
    /// The time the plugin reads, in Unix ms (`None`: the system's). Each
    /// timer fired moves it to the timer's time.
    pub now_ms: Option<u64>,
    /// Fire every timer the calls scheduled, in time order, without
    /// waiting for it (and those these timers schedule, up to
    /// [`TIMERS_FIRED_AT_MOST`]).
    pub fire_timers: bool,
    /// Then disconnect the socket with this reason.
    pub disconnect: Option<String>,
}

/// Timers fired at most after the events: a timer that schedules itself
/// again would otherwise fire for ever.
pub const TIMERS_FIRED_AT_MOST: usize = 100;

/// What the plugin did, in order.
#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    Emit {
        namespace: String,
        /// `None`: the whole namespace.
        room: Option<String>,
        except: Option<String>,
        event: String,
        /// Its argument, when it has one.
        #[serde(skip_serializing_if = "Option::is_none")]
        data: Option<Box<RawValue>>,
        /// Its arguments, when it has none or several.
        #[serde(skip_serializing_if = "Option::is_none")]
        args: Option<Box<RawValue>>,
        /// How long it asks the client to answer (`acks.to-socket`); no
        /// answer comes here, so `on-ack` is not called.
        #[serde(skip_serializing_if = "Option::is_none")]
        ack_timeout_ms: Option<u128>,
    },
    Join {
        room: String,
    },
    Leave {
        room: String,
    },
    /// The ack the client would get (`null` when the plugin returned none).
    Reply(Box<RawValue>),
    /// An ack of no or several arguments: their array.
    ReplyArgs(Box<RawValue>),
    /// The error the client would get, the plugin's or the host's.
    Error {
        code: String,
        message: String,
    },
    /// A timer fires; what it did follows.
    Timer {
        key: String,
        payload: String,
        /// When it was due.
        at_ms: u64,
    },
    /// The socket disconnects; what `on-disconnect` did follows.
    Disconnect {
        reason: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CallFailure {
    #[error(transparent)]
    Load(#[from] ServeError),
    #[error("the manifest has no plugin `{0}`")]
    UnknownPlugin(String),
    #[error("plugin `{plugin}` serves no namespace `{namespace}`")]
    UnknownNamespace { plugin: String, namespace: String },
    #[error("the event's data is not JSON: {0}")]
    Data(serde_json::Error),
}

/// Runs `events` (each a name and its data as JSON text), in order, from
/// one socket of `caller` through `plugin`. Each event's effects end with
/// its `Reply` or an `Error`; a refused connection ends them all.
pub async fn call(
    manifest: &Manifest,
    plugin: &str,
    events: &[(&str, &str)],
    caller: Caller,
    afterwards: Afterwards,
) -> Result<Vec<Effect>, CallFailure> {
    for (_, data) in events {
        serde_json::from_str::<&RawValue>(data).map_err(CallFailure::Data)?;
    }
    let spec = manifest
        .plugins
        .iter()
        .find(|spec| spec.name.as_str() == plugin)
        .ok_or_else(|| CallFailure::UnknownPlugin(plugin.to_owned()))?;
    let namespace = match caller.namespace {
        Some(namespace) if spec.namespaces.contains(&namespace) => namespace,
        Some(namespace) => {
            return Err(CallFailure::UnknownNamespace {
                plugin: plugin.to_owned(),
                namespace,
            });
        }
        None => spec
            .namespaces
            .first()
            .cloned()
            .unwrap_or_else(|| "/".to_owned()),
    };
    let recorder = Arc::new(Recorder::default());
    let timers = Arc::new(MemoryTimers::new());
    let mut services = HostServices::new(
        recorder.clone(),
        Arc::new(MemoryStore::new()),
        timers.clone(),
        &manifest.server,
    );
    let clock = afterwards.now_ms.map(Clock::fixed).unwrap_or_default();
    services.clock = clock.clone();
    let loaded = load_plugins(manifest, services).await?;
    let running = loaded
        .reloader
        .plugin(plugin)
        .ok_or_else(|| CallFailure::UnknownPlugin(plugin.to_owned()))?;
    let conn = Arc::new(Conn {
        socket_id: SOCKET_ID.to_owned(),
        namespace,
        auth: caller.auth,
        user_id: caller.user_id,
    });
    let refusal = match running.on_connect(&conn).await {
        Ok(Ok(())) => None,
        Ok(Err(refusal)) => Some(PluginError::new(
            "connection_refused",
            format!("on-connect refused the socket: {}", refusal.message),
        )),
        Err(failure) => Some(failure.into()),
    };
    if let Some(refusal) = refusal {
        let mut effects = recorder.take();
        effects.push(refused(refusal));
        return Ok(effects);
    }
    let mut effects = Vec::new();
    for (event, data) in events {
        let payload = payload::one_argument((*data).to_owned());
        let outcome = match running
            .on_event(&conn, (*event).into(), payload, None)
            .await
        {
            Ok(Ok(reply)) => reply_value(reply),
            Ok(Err(refusal)) => refused(refusal),
            Err(failure) => refused(failure.into()),
        };
        effects.extend(recorder.take());
        effects.push(outcome);
    }
    if afterwards.fire_timers {
        for _ in 0..TIMERS_FIRED_AT_MOST {
            let Some((at_ms, timer)) = next_timer(timers.as_ref(), plugin).await else {
                break;
            };
            clock.advance_to(at_ms);
            effects.push(Effect::Timer {
                key: timer.key.clone(),
                payload: timer.payload.clone(),
                at_ms,
            });
            let outcome = running.on_timer(&timer.key, &timer.payload).await;
            effects.extend(recorder.take());
            match outcome {
                Ok(Ok(())) => {}
                Ok(Err(error)) => effects.push(refused(error)),
                Err(failure) => effects.push(refused(failure.into())),
            }
        }
    }
    if let Some(reason) = afterwards.disconnect {
        let outcome = running.on_disconnect(&conn, &reason).await;
        effects.push(Effect::Disconnect { reason });
        effects.extend(recorder.take());
        if let Err(failure) = outcome {
            effects.push(refused(failure.into()));
        }
    }
    Ok(effects)
}

/// The plugin's earliest pending timer, taken from the store (other
/// plugins' are dropped: only this one runs), with when it was due.
async fn next_timer(timers: &MemoryTimers, plugin: &str) -> Option<(u64, DueTimer)> {
    loop {
        let at_ms = timers.next_due_ms()?;
        let timer = timers.claim_due(at_ms, 1).await.ok()?.into_iter().next()?;
        let _ = timers.complete(&timer).await;
        if timer.plugin == plugin {
            return Some((at_ms, timer));
        }
    }
}

fn reply_value(reply: Option<Payload>) -> Effect {
    let Some(reply) = reply else {
        return Effect::Reply(RawValue::NULL.to_owned());
    };
    match Outgoing::new(reply).and_then(|outgoing| arguments(&outgoing)) {
        Ok(Arguments::One(data)) => Effect::Reply(data),
        Ok(Arguments::NoneOrSeveral(args)) => Effect::ReplyArgs(args),
        Err(invalid) => refused(invalid),
    }
}

/// A payload's arguments as the effects show them.
enum Arguments {
    /// Its one argument.
    One(Box<RawValue>),
    /// The array of its none or several.
    NoneOrSeveral(Box<RawValue>),
}

fn arguments(payload: &Outgoing) -> Result<Arguments, PluginError> {
    let raw = |json: String| {
        RawValue::from_string(json)
            .map_err(|error| PluginError::new("invalid_json", error.to_string()))
    };
    match payload.only_argument() {
        Some(json) => raw(json).map(Arguments::One),
        None => raw(payload.json_array()).map(Arguments::NoneOrSeveral),
    }
}

fn refused(error: PluginError) -> Effect {
    Effect::Error {
        code: error.code,
        message: error.message,
    }
}

/// Sockets that record what they are asked to do.
#[derive(Default)]
struct Recorder {
    effects: Mutex<Vec<Effect>>,
    /// (namespace, room) → socket ids, as the plugin's joins and leaves left them.
    rooms: Mutex<BTreeMap<(String, String), BTreeSet<String>>>,
}

impl Recorder {
    fn take(&self) -> Vec<Effect> {
        std::mem::take(&mut *self.effects.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn record(&self, effect: Effect) {
        self.effects
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(effect);
    }
}

impl Recorder {
    fn record_emit(
        &self,
        namespace: &str,
        audience: Audience,
        event: &str,
        payload: &Outgoing,
        ack_timeout: Option<Duration>,
    ) -> Result<(), SocketsError> {
        let (data, args) =
            match arguments(payload).map_err(|error| SocketsError::Transport(error.message))? {
                Arguments::One(data) => (Some(data), None),
                Arguments::NoneOrSeveral(args) => (None, Some(args)),
            };
        self.record(Effect::Emit {
            namespace: namespace.to_owned(),
            room: audience.room,
            except: audience.except,
            event: event.to_owned(),
            data,
            args,
            ack_timeout_ms: ack_timeout.map(|timeout| timeout.as_millis()),
        });
        Ok(())
    }
}

#[async_trait]
impl Sockets for Recorder {
    async fn emit(
        &self,
        namespace: &str,
        audience: Audience,
        event: &str,
        payload: Outgoing,
    ) -> Result<(), SocketsError> {
        self.record_emit(namespace, audience, event, &payload, None)
    }

    async fn ask(
        &self,
        namespace: &str,
        socket_id: &str,
        event: &str,
        payload: Outgoing,
        timeout: Duration,
    ) -> Result<PendingAck, SocketsError> {
        let audience = Audience {
            room: Some(socket_room(socket_id)),
            except: None,
        };
        self.record_emit(namespace, audience, event, &payload, Some(timeout))?;
        Ok(Box::pin(std::future::pending()))
    }

    async fn change_rooms(
        &self,
        namespace: &str,
        socket_id: String,
        room: String,
        change: Membership,
    ) -> Result<(), SocketsError> {
        let mut rooms = self.rooms.lock().unwrap_or_else(PoisonError::into_inner);
        let members = rooms
            .entry((namespace.to_owned(), room.clone()))
            .or_default();
        match change {
            Membership::Join => {
                members.insert(socket_id);
                self.record(Effect::Join { room });
            }
            Membership::Leave => {
                members.remove(&socket_id);
                self.record(Effect::Leave { room });
            }
        }
        Ok(())
    }

    async fn members(&self, namespace: &str, room: String) -> Result<Vec<String>, SocketsError> {
        let rooms = self.rooms.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(rooms
            .get(&(namespace.to_owned(), room))
            .map(|members| members.iter().cloned().collect())
            .unwrap_or_default())
    }

    async fn rooms_of(
        &self,
        namespace: &str,
        socket_id: String,
    ) -> Result<Vec<String>, SocketsError> {
        let rooms = self.rooms.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(rooms
            .iter()
            .filter(|((space, _), members)| space == namespace && members.contains(&socket_id))
            .map(|((_, room), _)| room.clone())
            .collect())
    }

    async fn close(&self) {}
}
