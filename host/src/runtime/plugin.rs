//! A loaded plugin and its pool of warm instances.
//!
//! Instance model: by default a warm instance is reused across events instead
//! of a fresh one per event, which costs about 19x more (BENCHMARKS.md has the
//! figures); `instances = "per-event"` in the manifest chooses the latter.
//! Each call takes an idle instance out of the pool, or makes one when all are
//! busy, so concurrent sockets never share a `Store`. An instance whose call
//! failed in any way is dropped, never returned: its memory may be corrupt.
//!
//! Isolation: guest code runs on the plugin threads ([`super::executor`]),
//! but for the first slice of a call that is likely short
//! ([`super::placement`]). At most `limits.concurrency` calls
//! of a plugin run at once and their instances draw on the node's memory
//! budget ([`super::budget`]); a call that finds no room within
//! `limits.queue_ms` fails with `overloaded`, so a plugin under load or
//! attack slows only its own calls.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::{Engine, Store, Trap, UpdateDeadline};

use super::budget::{Account, BudgetExhausted, IdleInstances};
use super::engine::{EPOCH_TICK, Ticker};
use super::executor::Executor;
use super::exports::{Export, Exports};
use super::instance::{InstanceState, MemoryLimitExceeded, MemoryLimiter, Meter, PluginContext};
use super::placement::Placement;
use super::refusals::Refusals;
use super::{CompiledPlugin, Runtime};
use crate::bindings::exports::switchboard::plugin::http_handler::{Request, Response};
use crate::bindings::{Conn, Payload, PluginError};
use crate::cluster::{Committed, token};
use crate::escaped::Escaped;
use crate::host_api::{Answered, HostServices};
use crate::log_context;
use crate::manifest::{InstanceModel, Limits, PluginName, PluginSpec};
use crate::metrics;

/// CPU time a call's guest code must use between two epoch ticks for its
/// plugin to count as one whose calls run long ([`Placement::long_call`]):
/// a tick can fall in any call, two with this much computing between them
/// take about a tick of it. CPU time, not wall time: on a busy machine the
/// OS preempts a thread in the middle of a short call for milliseconds, and
/// taking that for computing moved every call of the plugin to the plugin
/// threads for a while, two more thread hops per call when threads are
/// scarcest.
const COMPUTED_THROUGH_TICK: Duration = EPOCH_TICK.checked_div(4).expect("a tick divides");

thread_local! {
    /// The poll of the guest call running on this thread; the epoch
    /// callback runs inside it.
    static POLL: Cell<Option<PollNote>> = const { Cell::new(None) };
}

/// What the epoch callback learns of the poll it runs in, and tells it.
#[derive(Clone, Copy)]
struct PollNote {
    /// The thread's CPU clock when the poll started, and the CPU time the
    /// call had used since its last tick before it. `None` until the call
    /// met a tick: reading the clock is a system call, and most calls meet
    /// none.
    cpu: Option<(Duration, Duration)>,
    /// Set by the callback: the call met a tick in this poll.
    ticked: bool,
}

/// Idle instances kept per plugin; bursts above this make short-lived ones.
const MAX_IDLE_INSTANCES: usize = 16;

/// Times a handler call runs when its commit keeps finding what it read
/// changed, before it fails with `conflict`.
const MAX_ATTEMPTS: u32 = 10;

/// How long the state lease outlives the time limit of the call holding it.
const LEASE_GRACE: Duration = Duration::from_secs(1);

/// How often a call waiting for the state lease asks for it again.
const LEASE_POLL: Duration = Duration::from_millis(2);

/// One run of a call: its result, or a conflict that applied nothing.
enum Attempt<R> {
    Done(R),
    Conflict,
}

/// Whether a call's result commits what it did (its state writes and its
/// emits) or drops it.
trait Outcome {
    fn commits(&self) -> bool;
}

impl<T> Outcome for Result<T, PluginError> {
    fn commits(&self) -> bool {
        self.is_ok()
    }
}

/// `on-disconnect` and `on-connected` have no way to fail but trapping.
impl Outcome for () {
    fn commits(&self) -> bool {
        true
    }
}

/// An HTTP handler has no error channel: a server error is its failure.
impl Outcome for Response {
    fn commits(&self) -> bool {
        self.status < 500
    }
}

/// Calls an optional export that takes only a socket's `conn`.
type TellConn = for<'a> fn(
    &'a mut Store<InstanceState>,
    &'a Exports,
    &'a Conn,
) -> Pin<Box<dyn Future<Output = wasmtime::Result<()>> + Send + 'a>>;

/// A call that did not complete. The plugin's own errors are not here: they
/// are the `Ok(Err(PluginError))` of each call.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("plugin `{plugin}` crashed (trap: {detail}){}; the call was aborted", said.as_ref().map(|said| format!(" after logging: {}", Escaped(said))).unwrap_or_default())]
    Trapped {
        plugin: PluginName,
        detail: String,
        /// The last error the call logged before the trap: with the SDK, the
        /// panic's message and location.
        said: Option<String>,
    },
    #[error("plugin `{plugin}` ran past its time limit of {} ms; the call was aborted", limit.as_millis())]
    Timeout { plugin: PluginName, limit: Duration },
    #[error("plugin `{plugin}` exceeded its memory limit of {} MiB; the call was aborted", limit_bytes >> 20)]
    MemoryLimit {
        plugin: PluginName,
        limit_bytes: usize,
    },
    #[error("plugin `{plugin}` failed to initialise: {} ({})", error.message, error.code)]
    Init {
        plugin: PluginName,
        error: PluginError,
    },
    #[error(
        "plugin `{plugin}` does not export `{export}`; build it with a switchboard SDK that has it"
    )]
    MissingExport { plugin: PluginName, export: Export },
    #[error(
        "plugin `{plugin}` is overloaded: {concurrency} of its calls (limits.concurrency) were already running for {} ms; try again later",
        waited.as_millis()
    )]
    TooManyCalls {
        plugin: PluginName,
        concurrency: usize,
        waited: Duration,
    },
    #[error(
        "plugin `{plugin}`: what this call read kept being changed by concurrent calls; it ran {attempts} times and committed nothing; try again"
    )]
    Conflict { plugin: PluginName, attempts: u32 },
    #[error(
        "plugin `{plugin}`: the call's state could not be stored, so it had no effect: {error}"
    )]
    State {
        plugin: PluginName,
        error: crate::cluster::StateError,
    },
    #[error(
        "plugin `{plugin}` is overloaded: the node's plugin memory ({} MiB, server.plugin_memory_mib) stayed in use; the call was aborted, try again later",
        limit_bytes >> 20
    )]
    NoMemoryLeft {
        plugin: PluginName,
        limit_bytes: usize,
    },
}

impl CallError {
    /// The error code a client sees.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Trapped { .. } => "plugin_trapped",
            Self::Timeout { .. } => "plugin_timeout",
            Self::MemoryLimit { .. } => "plugin_memory_limit",
            Self::TooManyCalls { .. } | Self::NoMemoryLeft { .. } => "overloaded",
            Self::Init { .. } | Self::MissingExport { .. } => "plugin_unavailable",
            Self::Conflict { .. } => "conflict",
            Self::State { error, .. } => error.code(),
        }
    }
}

/// What the client of a call that did not complete is told.
impl From<CallError> for PluginError {
    fn from(failure: CallError) -> Self {
        Self::new(failure.code(), failure.to_string())
    }
}

struct WarmInstance {
    store: Store<InstanceState>,
    exports: Exports,
}

#[derive(Default)]
struct IdlePool(Mutex<Vec<WarmInstance>>);

impl IdlePool {
    fn lock(&self) -> MutexGuard<'_, Vec<WarmInstance>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl IdleInstances for IdlePool {
    fn drop_idle(&self) {
        let idle = std::mem::take(&mut *self.lock());
        // Outside the lock: each instance gives its memory back as it goes.
        drop(idle);
    }
}

pub struct Plugin {
    context: Arc<PluginContext>,
    services: Arc<HostServices>,
    compiled: CompiledPlugin,
    engine: Engine,
    ticker: Arc<Ticker>,
    /// The plugin threads.
    executor: Arc<Executor>,
    placement: Arc<Placement>,
    limits: Limits,
    instances: InstanceModel,
    /// One permit per call that may run at once.
    running: Arc<Semaphore>,
    /// Shared by first attempts, exclusive to a call run again after a
    /// conflict (see [`Self::attempts`]).
    retrying: tokio::sync::RwLock<()>,
    memory: Arc<Account>,
    idle: Arc<IdlePool>,
    refusals: Refusals,
    /// Its calls' durations (`switchboard_plugin_call_seconds`).
    call_seconds: metrics::Histogram,
    /// What its instances may grow by, in wasm pages (`limits.memory_growth_mib_per_second`).
    memory_growth: Arc<DefaultDirectRateLimiter>,
}

impl Plugin {
    /// Creates and initialises a first instance, so a plugin whose `init`
    /// fails is refused when it is loaded rather than on its first event.
    pub async fn start(
        runtime: &Runtime,
        compiled: CompiledPlugin,
        spec: &PluginSpec,
        services: Arc<HostServices>,
    ) -> Result<Arc<Self>, CallError> {
        let context = PluginContext::new(spec, &compiled);
        let idle = Arc::new(IdlePool::default());
        let shared_idle: Arc<dyn IdleInstances> = idle.clone();
        runtime.budget.register_idle(Arc::downgrade(&shared_idle));
        let plugin = Arc::new(Self {
            context: Arc::new(context),
            services,
            compiled,
            engine: runtime.engine.clone(),
            ticker: runtime.ticker.clone(),
            executor: runtime.executor.clone(),
            placement: Arc::new(Placement::new()),
            limits: spec.limits,
            instances: spec.instances,
            running: Arc::new(Semaphore::new(spec.limits.concurrency)),
            retrying: tokio::sync::RwLock::new(()),
            memory: runtime.budget.account(spec.limits.memory_bytes),
            idle,
            refusals: Refusals::default(),
            call_seconds: metrics::plugin_call_seconds(spec.name.as_str()),
            memory_growth: Arc::new(RateLimiter::direct(Quota::per_second(
                spec.limits.memory_growth_pages,
            ))),
        });
        plugin
            .isolated(|plugin, _lease| async move {
                let first = plugin.instantiate().await?;
                plugin.check_in(first, Ok(Attempt::Done(())))
            })
            .await?;
        Ok(plugin)
    }

    /// SHA-256 of the running component.
    pub fn version(&self) -> &str {
        &self.compiled.hash
    }

    pub fn exports(&self, export: Export) -> bool {
        self.compiled.exports.has(export)
    }

    pub async fn on_connect(
        self: &Arc<Self>,
        conn: &Conn,
    ) -> Result<Result<(), PluginError>, CallError> {
        let conn = Arc::new(conn.clone());
        self.isolated(move |plugin, lease| {
            let conn = conn.clone();
            async move {
                plugin
                    .call(lease, async |store, exports| {
                        exports.on_connect(store, &conn).await
                    })
                    .await
            }
        })
        .await
    }

    /// `meter` is told what the call costs, its failures included.
    pub async fn on_event(
        self: &Arc<Self>,
        conn: &Arc<Conn>,
        event: Arc<str>,
        payload: Payload,
        meter: Option<Arc<dyn Meter>>,
    ) -> Result<Result<Option<Payload>, PluginError>, CallError> {
        let arguments = Arc::new((conn.clone(), event, payload));
        self.isolated(move |plugin, lease| {
            let (arguments, meter) = (arguments.clone(), meter.clone());
            async move {
                let (conn, event, payload) = &*arguments;
                plugin
                    .call(lease, async |store, exports| {
                        store.data_mut().meter = meter;
                        exports.on_event(store, conn, event, payload).await
                    })
                    .await
            }
        })
        .await
    }

    pub async fn on_disconnect(
        self: &Arc<Self>,
        conn: &Conn,
        reason: &str,
    ) -> Result<(), CallError> {
        let arguments = Arc::new((conn.clone(), reason.to_owned()));
        self.isolated(move |plugin, lease| {
            let arguments = arguments.clone();
            async move {
                let (conn, reason) = &*arguments;
                plugin
                    .call(lease, async |store, exports| {
                        exports.on_disconnect(store, conn, reason).await
                    })
                    .await
            }
        })
        .await
    }

    /// Does nothing for a plugin without `connection-handler`.
    pub async fn on_connected(self: &Arc<Self>, conn: &Conn) -> Result<(), CallError> {
        self.tell(Export::ConnectionHandler, conn, |store, exports, conn| {
            Box::pin(exports.on_connected(store, conn))
        })
        .await
    }

    /// Does nothing for a plugin without `recovery-handler`.
    pub async fn on_recovered(self: &Arc<Self>, conn: &Conn) -> Result<(), CallError> {
        self.tell(Export::RecoveryHandler, conn, |store, exports, conn| {
            Box::pin(exports.on_recovered(store, conn))
        })
        .await
    }

    /// Calls `export`, an optional one that only takes the socket's `conn`,
    /// through `call`; does nothing for a plugin without it.
    async fn tell(
        self: &Arc<Self>,
        export: Export,
        conn: &Conn,
        call: TellConn,
    ) -> Result<(), CallError> {
        if !self.exports(export) {
            return Ok(());
        }
        let conn = Arc::new(conn.clone());
        self.isolated(move |plugin, lease| {
            let conn = conn.clone();
            async move {
                plugin
                    .call(lease, async |store, exports| {
                        call(store, exports, &conn).await
                    })
                    .await
            }
        })
        .await
    }

    pub async fn on_timer(
        self: &Arc<Self>,
        key: &str,
        payload: &str,
    ) -> Result<Result<(), PluginError>, CallError> {
        self.require(Export::TimerHandler)?;
        let arguments = Arc::new((key.to_owned(), payload.to_owned()));
        self.isolated(move |plugin, lease| {
            let arguments = arguments.clone();
            async move {
                let (key, payload) = &*arguments;
                plugin
                    .call(lease, async |store, exports| {
                        exports.on_timer(store, key, payload).await
                    })
                    .await
            }
        })
        .await
    }

    pub async fn on_ack(
        self: &Arc<Self>,
        answered: Answered,
    ) -> Result<Result<(), PluginError>, CallError> {
        self.require(Export::AckHandler)?;
        let answered = Arc::new(answered);
        self.isolated(move |plugin, lease| {
            let answered = answered.clone();
            async move {
                plugin
                    .call(lease, async |store, exports| {
                        exports.on_ack(store, &answered).await
                    })
                    .await
            }
        })
        .await
    }

    /// `meter` is told the plugin time the call takes, its failures included.
    pub async fn on_http(
        self: &Arc<Self>,
        request: &Request,
        meter: Option<Arc<dyn Meter>>,
    ) -> Result<Response, CallError> {
        self.require(Export::HttpHandler)?;
        let request = Arc::new(request.clone());
        self.isolated(move |plugin, lease| {
            let (request, meter) = (request.clone(), meter.clone());
            async move {
                plugin
                    .call(lease, async |store, exports| {
                        store.data_mut().meter = meter;
                        let response = exports.handle(store, &request).await?;
                        Ok(response.expect("checked by `require`"))
                    })
                    .await
            }
        })
        .await
    }

    fn require(&self, export: Export) -> Result<(), CallError> {
        if self.exports(export) {
            return Ok(());
        }
        Err(CallError::MissingExport {
            plugin: self.context.name.clone(),
            export,
        })
    }

    /// Runs `work` once fewer than `limits.concurrency` calls run, and waits
    /// for its result; again, up to [`MAX_ATTEMPTS`] times, while its commit
    /// conflicts. A caller that goes away leaves a call already handed to
    /// the plugin threads to finish under its time limit, holding its place
    /// meanwhile.
    async fn isolated<R, Work>(
        self: &Arc<Self>,
        work: impl Fn(Arc<Self>, Option<String>) -> Work + Send + 'static,
    ) -> Result<R, CallError>
    where
        R: Send + 'static,
        Work: Future<Output = Result<Attempt<R>, CallError>> + Send + 'static,
    {
        let place = self.admit().await?;
        let plugin = self.clone();
        // On a plugin thread, still in the caller's context (its socket, event).
        let work = Box::pin(log_context::carried(async move {
            let _place = place;
            plugin.attempts(work).await
        }));
        match self.placement.run(self.executor.handle(), work).await {
            Ok(result) => result,
            Err(failed) => match failed.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(_) => {
                    unreachable!("the plugin threads outlive every plugin, and no call is aborted")
                }
            },
        }
    }

    /// Runs `work` until it commits. A call run again after a conflict runs
    /// alone among this plugin's calls on this node (calls arriving meanwhile
    /// wait for it) and under the plugin's state lease, which makes other
    /// nodes' writing commits conflict instead: so a hot key cannot starve
    /// it, while calls that do not conflict run side by side.
    async fn attempts<R, Work>(
        self: Arc<Self>,
        work: impl Fn(Arc<Self>, Option<String>) -> Work,
    ) -> Result<R, CallError>
    where
        Work: Future<Output = Result<Attempt<R>, CallError>>,
    {
        for attempt in 0..MAX_ATTEMPTS {
            let outcome = if attempt == 0 {
                let _side_by_side = self.retrying.read().await;
                work(self.clone(), None).await?
            } else {
                let _alone = self.retrying.write().await;
                let lease = self.lease(attempt).await?;
                // Boxed: a rerun is rare, and its future would otherwise sit
                // beside the first run's in every call's.
                let outcome = Box::pin(work(self.clone(), Some(lease.clone()))).await;
                let state = &self.services.state;
                if let Err(error) = state.release_lease(&self.context.state, &lease).await {
                    // It lapses by itself.
                    log_context::logged(|| {
                        tracing::warn!(plugin = %self.context.name, "state lease not released: {error}");
                    });
                }
                outcome?
            };
            if let Attempt::Done(result) = outcome {
                return Ok(result);
            }
            metrics::plugin_conflicted(self.context.name.as_str());
        }
        let conflict = CallError::Conflict {
            plugin: self.context.name.clone(),
            attempts: MAX_ATTEMPTS,
        };
        log_context::logged(
            || tracing::warn!(plugin = %self.context.name, "{}", Escaped(&conflict)),
        );
        Err(conflict)
    }

    /// Waits for the plugin's state lease, as long as [`MAX_ATTEMPTS`] calls
    /// may take, for a call that has run `runs` times; the lease lapses a
    /// second after the time limit of the call that holds it.
    async fn lease(&self, runs: u32) -> Result<String, CallError> {
        let token = token();
        let ttl = self.limits.time + LEASE_GRACE;
        let deadline = Instant::now() + self.limits.time * MAX_ATTEMPTS;
        let state = &self.services.state;
        loop {
            let taken = state.acquire_lease(&self.context.state, &token, ttl).await;
            match taken {
                Ok(true) => return Ok(token),
                Ok(false) if Instant::now() < deadline => tokio::time::sleep(LEASE_POLL).await,
                Ok(false) => {
                    return Err(CallError::Conflict {
                        plugin: self.context.name.clone(),
                        attempts: runs,
                    });
                }
                Err(error) => {
                    return Err(CallError::State {
                        plugin: self.context.name.clone(),
                        error,
                    });
                }
            }
        }
    }

    /// A place among the calls that may run at once, waiting up to `limits.queue`.
    async fn admit(&self) -> Result<OwnedSemaphorePermit, CallError> {
        if let Ok(place) = self.running.clone().try_acquire_owned() {
            return Ok(place);
        }
        let waited = tokio::time::timeout(self.limits.queue, self.running.clone().acquire_owned());
        if let Ok(Ok(place)) = waited.await {
            return Ok(place);
        }
        // The semaphore is never closed: only the wait can have ended.
        let refusal = CallError::TooManyCalls {
            plugin: self.context.name.clone(),
            concurrency: self.limits.concurrency,
            waited: self.limits.queue,
        };
        self.refusals.record(&self.context.name, &refusal);
        Err(refusal)
    }

    /// Runs one export call on an instance of its own, under the limits, as
    /// a transaction: what it did is committed if its result says so.
    async fn call<R: Outcome>(
        &self,
        lease: Option<String>,
        call: impl AsyncFnOnce(&mut Store<InstanceState>, &Exports) -> wasmtime::Result<R>,
    ) -> Result<Attempt<R>, CallError> {
        let mut instance = self.check_out().await?;
        let WarmInstance { store, exports } = &mut instance;
        store.data_mut().transaction.run_under(lease);
        store.data_mut().last_error = None;
        store.data_mut().meter = None;
        let started = self.start_clock(store);
        let (took, result) = self.limited(started, call(store, exports)).await;
        if let Some(meter) = &store.data().meter {
            meter.plugin_time(took);
        }
        let result = result.map_err(|error| match error {
            CallError::Trapped { plugin, detail, .. } => CallError::Trapped {
                plugin,
                detail,
                said: store.data_mut().last_error.take(),
            },
            other => other,
        });
        let committed = match &result {
            // Boxed: what a commit may do (the cluster, emits) is kilobytes
            // of future, which a call without effects needs none of.
            Ok(outcome) if outcome.commits() && store.data().has_effects() => {
                Box::pin(store.data_mut().commit()).await
            }
            _ => {
                store.data_mut().discard();
                Ok(Committed::Applied)
            }
        };
        let result = self.check_in(instance, result)?;
        match committed {
            Ok(Committed::Applied) => Ok(Attempt::Done(result)),
            Ok(Committed::Conflict) => Ok(Attempt::Conflict),
            Err(error) => {
                let error = CallError::State {
                    plugin: self.context.name.clone(),
                    error,
                };
                log_context::logged(
                    || tracing::warn!(plugin = %self.context.name, "{}", Escaped(&error)),
                );
                Err(error)
            }
        }
    }

    /// An idle instance, or a new one when all are busy.
    async fn check_out(&self) -> Result<WarmInstance, CallError> {
        let idle = self.idle.lock().pop();
        match idle {
            Some(instance) => Ok(instance),
            // Boxed: instantiating is rare, and its future, kilobytes, would
            // otherwise be part of every call's.
            None => Box::pin(self.instantiate()).await,
        }
    }

    /// Gives the next call the plugin's time limit, from now; returns now.
    /// At every epoch tick the guest yields to the plugin threads (so a
    /// looping plugin takes turns with the other calls) and is interrupted
    /// once the limit has passed.
    fn start_clock(&self, store: &mut Store<InstanceState>) -> Instant {
        let started = Instant::now();
        let state = store.data_mut();
        state.deadline = started + self.limits.time;
        state.memory.call_deadline = state.deadline;
        store.set_epoch_deadline(1);
        started
    }

    /// Returns the instance to the pool if its call succeeded; drops it otherwise.
    fn check_in<R>(
        &self,
        instance: WarmInstance,
        result: Result<R, CallError>,
    ) -> Result<R, CallError> {
        if result.is_ok() && self.instances == InstanceModel::Pooled {
            let mut idle = self.idle.lock();
            if idle.len() < MAX_IDLE_INSTANCES {
                idle.push(instance);
            }
        }
        result
    }

    async fn instantiate(&self) -> Result<WarmInstance, CallError> {
        let memory = MemoryLimiter::new(
            self.limits.memory_bytes,
            self.memory.clone(),
            self.limits.queue,
            self.memory_growth.clone(),
        );
        let state = InstanceState::new(self.context.clone(), self.services.clone(), memory);
        let mut store = Store::new(&self.engine, state);
        store.limiter_async(|state| &mut state.memory);
        let placement = self.placement.clone();
        store.epoch_deadline_callback(move |store| {
            if met_tick() {
                placement.long_call();
            }
            Ok(if Instant::now() >= store.data().deadline {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });
        let started = self.start_clock(&mut store);
        let (_, made) = self
            .limited(started, async {
                let instance = self.compiled.pre.instantiate_async(&mut store).await?;
                let exports = self.compiled.exports.load(&mut store, &instance)?;
                let init = exports.init(&mut store, &self.context.config_json).await?;
                Ok((exports, init))
            })
            .await;
        let (exports, init) = made?;
        // `init` runs outside any transaction: nothing it did is kept.
        store.data_mut().discard();
        init.map_err(|error| CallError::Init {
            plugin: self.context.name.clone(),
            error,
        })?;
        Ok(WarmInstance { store, exports })
    }

    /// Runs guest code under the plugin's time limit from `started` and
    /// names what went wrong; also returns how long it took.
    ///
    /// Made at once, not as an `async fn`: an argument of one is kept in
    /// its future beside the future it is moved into, and a guest call's
    /// future is most of a call's.
    fn limited<R>(
        &self,
        started: Instant,
        call: impl Future<Output = wasmtime::Result<R>>,
    ) -> impl Future<Output = (Duration, Result<R, CallError>)> {
        let running = self.ticker.running();
        let deadline = tokio::time::Instant::from_std(started + self.limits.time);
        let noted = PollsNoted {
            call,
            cpu_since_tick: None,
        };
        tokio::time::timeout_at(deadline, noted).map(move |outcome| {
            let _running = running;
            let took = started.elapsed();
            self.call_seconds.record(took);
            (took, self.named(outcome))
        })
    }

    /// What a call under [`Self::limited`] gave, its failure named and counted.
    fn named<R>(
        &self,
        outcome: Result<wasmtime::Result<R>, tokio::time::error::Elapsed>,
    ) -> Result<R, CallError> {
        let plugin = || self.context.name.clone();
        let error = match outcome {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) => classify(plugin(), self.limits, &error),
            Err(_elapsed) => CallError::Timeout {
                plugin: plugin(),
                limit: self.limits.time,
            },
        };
        metrics::plugin_failed(self.context.name.as_str(), error.code());
        if matches!(error, CallError::NoMemoryLeft { .. }) {
            self.refusals.record(&self.context.name, &error);
        } else {
            log_context::logged(
                || tracing::warn!(plugin = %self.context.name, "{}", Escaped(&error)),
            );
        }
        Err(error)
    }
}

/// Notes that the guest call running on this thread met an epoch tick;
/// returns whether it used [`COMPUTED_THROUGH_TICK`] of CPU since the tick
/// before.
fn met_tick() -> bool {
    let Some(mut note) = POLL.get() else {
        return false;
    };
    note.ticked = true;
    POLL.set(Some(note));
    note.cpu.is_some_and(|(at_start, before)| {
        before + thread_cpu().saturating_sub(at_start) >= COMPUTED_THROUGH_TICK
    })
}

/// CPU time the calling thread has used.
fn thread_cpu() -> Duration {
    let time = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(time.tv_sec).unwrap_or(0),
        u32::try_from(time.tv_nsec).unwrap_or(0),
    )
}

pin_project_lite::pin_project! {
    /// A guest call whose every poll notes in [`POLL`] what the epoch
    /// callback needs, and counts the CPU time it used since its last tick
    /// once it met one.
    struct PollsNoted<F> {
        #[pin]
        call: F,
        cpu_since_tick: Option<Duration>,
    }
}

impl<F: Future> Future for PollsNoted<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let cpu = this.cpu_since_tick.map(|used| (thread_cpu(), used));
        let outer = POLL.replace(Some(PollNote { cpu, ticked: false }));
        let polled = this.call.poll(cx);
        let note = POLL.replace(outer).expect("noted above");
        *this.cpu_since_tick = if note.ticked {
            Some(Duration::ZERO)
        } else {
            note.cpu
                .map(|(at_start, used)| used + thread_cpu().saturating_sub(at_start))
        };
        polled
    }
}

fn classify(plugin: PluginName, limits: Limits, error: &wasmtime::Error) -> CallError {
    if let Some(exhausted) = error.downcast_ref::<BudgetExhausted>() {
        return CallError::NoMemoryLeft {
            plugin,
            limit_bytes: exhausted.limit_bytes,
        };
    }
    if error.downcast_ref::<MemoryLimitExceeded>().is_some() {
        return CallError::MemoryLimit {
            plugin,
            limit_bytes: limits.memory_bytes,
        };
    }
    if let Some(Trap::Interrupt) = error.downcast_ref::<Trap>() {
        return CallError::Timeout {
            plugin,
            limit: limits.time,
        };
    }
    CallError::Trapped {
        plugin,
        detail: error.root_cause().to_string(),
        said: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Uses `cpu` of the thread's CPU time.
    fn compute_for(cpu: Duration) {
        let until = thread_cpu() + cpu;
        while thread_cpu() < until {
            std::hint::spin_loop();
        }
    }

    #[tokio::test]
    async fn a_tick_counts_as_computed_through_for_the_cpu_the_call_used_since_the_tick_before() {
        let call = async {
            // The first tick a call meets only starts the count.
            compute_for(COMPUTED_THROUGH_TICK);
            assert!(!met_tick());
            tokio::task::yield_now().await;
            // Waiting is not computing: a thread the OS does not run (here:
            // asleep) uses no CPU, however long the poll takes.
            std::thread::sleep(COMPUTED_THROUGH_TICK * 4);
            assert!(!met_tick());
            tokio::task::yield_now().await;
            // Computing counts, across polls (here: with a wait for the host
            // between them).
            compute_for(COMPUTED_THROUGH_TICK / 2);
            tokio::task::yield_now().await;
            compute_for(COMPUTED_THROUGH_TICK / 2);
            assert!(met_tick());
        };
        PollsNoted {
            call,
            cpu_since_tick: None,
        }
        .await;
        assert!(POLL.get().is_none(), "outside any call");
    }
}
