//! Putting it together: load the plugins a manifest names, serve Socket.IO and
//! HTTP on a listener, shut down gracefully.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use socketioxide::adapter::{Adapter, LocalAdapter};
use socketioxide::{SocketIo, SocketIoBuilder};
use socketioxide_core::adapter::DefinedAdapter;
use socketioxide_redis::{FredAdapter, RedisAdapterConfig, RedisAdapterCtr};
use tokio::net::TcpListener;
use tower_http::services::ServeDir;
use tower_http::timeout::RequestBodyTimeoutLayer;

use crate::cluster::timers::{self, MemoryTimers, RedisTimers, TimerStore};
use crate::cluster::{
    self, MemoryStore, NodeLiveness, NodeReport, RedisStore, Reporter, StateStore,
};
use crate::host_api::HostServices;
use crate::http_api::body_deadline::body_deadline;
use crate::http_api::origin::{self, OriginGuard};
use crate::http_api::plugin_routes::{PluginHttp, PluginRoutes};
use crate::http_api::{self, ApiToken, Nodes, Readiness};
use crate::identity::{KeyError, Verifier};
use crate::listener::{self, Admission, RequestLimits};
use crate::manifest::RecoverySettings;
use crate::manifest::{Location, Manifest, PluginName, PluginSpec};
use crate::metrics::{self, Metrics};
use crate::recovery::{
    Journal, MemoryJournal, MemorySessions, Recovery, RedisSessions, SessionStore, StreamJournal,
};
use crate::reload::Reloader;
use crate::runtime::{
    CallError, CompiledPlugin, LoadError, Plugin, PluginSlot, PluginStatus, Runtime, now_ms,
};
use crate::transport::{
    self, NamespaceReady, Namespaces, NodeSockets, Routes, SocketLimits, Sockets,
};

/// How long open connections get to close after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// The `on-disconnect` reason plugins see for the sockets of a node that died.
const LOST_REASON: &str = "server node lost";
/// How long of that the plugins get to handle the sockets' disconnects.
const DISCONNECT_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot start the WebAssembly engine: {0:#}")]
    Engine(wasmtime::Error),
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error(transparent)]
    Redis(#[from] cluster::ConnectError),
    #[error("cannot set up the Socket.IO adapter on the cluster's Redis: {0}")]
    Adapter(String),
    #[error(transparent)]
    Auth(#[from] KeyError),
    #[error("server I/O failed")]
    Io(#[from] std::io::Error),
}

/// A plugin that could not be loaded or started, with where the manifest names it.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("{location}: plugin `{plugin}`")]
    Load {
        location: Location,
        plugin: PluginName,
        #[source]
        source: Box<LoadError>,
    },
    #[error("{location}: plugin `{plugin}`")]
    Start {
        location: Location,
        plugin: PluginName,
        #[source]
        source: Box<CallError>,
    },
}

/// Compiles and type-checks every plugin of the manifest.
pub fn compile_plugins(
    runtime: &Runtime,
    manifest: &Manifest,
) -> Result<Vec<CompiledPlugin>, PluginError> {
    manifest
        .plugins
        .iter()
        .map(|spec| {
            runtime
                .compile_plugin(spec)
                .map_err(|source| PluginError::Load {
                    location: spec.location.clone(),
                    plugin: spec.name.clone(),
                    source: Box::new(source),
                })
        })
        .collect()
}

/// A server with its plugins loaded, not yet accepting connections.
pub struct Server {
    listener: TcpListener,
    app: axum::Router,
    sockets: Arc<dyn Sockets>,
    namespaces: Arc<Namespaces>,
    reloader: Arc<Reloader>,
    admission: Arc<Admission>,
    requests: RequestLimits,
}

/// Builds the sockets plugins reach from socketioxide and the journal emits go through.
/// Builds, once socketioxide is, the journal emits go through (with
/// recovery's limits, if on) and the sockets plugins reach.
type Delivery<A> = Box<
    dyn FnOnce(
            SocketIo<A>,
            Option<RecoverySettings>,
        )
            -> Pin<Box<dyn Future<Output = (Arc<dyn Journal>, Arc<dyn Sockets>)> + Send>>
        + Send,
>;

/// The journal and sockets of a node alone: emits are kept (with recovery's
/// `limits`) and delivered in memory.
pub fn in_memory<A: Adapter>(
    io: SocketIo<A>,
    limits: Option<RecoverySettings>,
) -> (Arc<dyn Journal>, Arc<dyn Sockets>) {
    let journal: Arc<dyn Journal> = Arc::new(MemoryJournal::new(Arc::new(io.clone()), limits));
    let sockets = Arc::new(NodeSockets::new(io, journal.clone(), None));
    (journal, sockets)
}

/// What differs between a single node in memory and a node of a cluster.
struct Backend<A: Adapter> {
    builder: SocketIoBuilder<A>,
    state: Arc<dyn StateStore>,
    timers: Arc<dyn TimerStore>,
    readiness: Readiness,
    delivery: Delivery<A>,
    liveness: Option<Arc<NodeLiveness>>,
    /// Where sessions are kept for connection-state recovery.
    sessions: Arc<dyn SessionStore>,
}

impl Backend<LocalAdapter> {
    fn in_memory() -> Self {
        Self {
            builder: SocketIo::builder(),
            state: Arc::new(MemoryStore::new()),
            timers: Arc::new(MemoryTimers::new()),
            readiness: None,
            delivery: Box::new(|io, limits| Box::pin(std::future::ready(in_memory(io, limits)))),
            liveness: None,
            sessions: Arc::new(MemorySessions::default()),
        }
    }
}

impl Server {
    /// Loads the plugins and, when the manifest has a `[cluster]`, connects to
    /// Redis (waiting, with backoff, while it cannot be reached).
    /// `admission` is shared with whatever answered on `listener` before.
    pub async fn load(
        manifest: Manifest,
        listener: TcpListener,
        admission: Arc<Admission>,
    ) -> Result<Self, ServeError> {
        // Installed first: what is recorded before the recorder is lost.
        Metrics::global();
        let Some(settings) = manifest.cluster.clone() else {
            return Self::assemble(manifest, listener, admission, Backend::in_memory()).await;
        };
        let redis = match cluster::connect(&settings).await {
            Ok(redis) => Arc::new(redis),
            Err(unreachable @ cluster::ConnectError::Unreachable { .. }) => {
                tracing::warn!(
                    "{unreachable}; running this node alone, in memory, as `fallback = \"local\"` asks: \
                     its rooms and state are not shared, and it will not join the cluster later"
                );
                return Self::assemble(manifest, listener, admission, Backend::in_memory()).await;
            }
            Err(error) => return Err(error.into()),
        };
        let adapter_config = RedisAdapterConfig::new()
            .with_prefix(settings.prefix.clone())
            .with_request_timeout(settings.request_timeout);
        let adapter =
            RedisAdapterCtr::new_with_fred_config(redis.subscriber.clone(), adapter_config)
                .await
                .map_err(|error| ServeError::Adapter(error.to_string()))?;
        let url = settings.redis_url.clone();
        let readiness: Readiness = Some(Arc::new({
            let redis = redis.clone();
            move || {
                if redis.is_connected() {
                    Ok(())
                } else {
                    Err(format!("Redis at {url} is unreachable; reconnecting"))
                }
            }
        }));
        let liveness = NodeLiveness::new(redis.commands.clone(), &settings.prefix);
        let sessions: Arc<dyn SessionStore> = Arc::new(RedisSessions::new(
            redis.commands.clone(),
            &settings.prefix,
            liveness.node_id(),
        ));
        let backend = Backend {
            builder: SocketIo::builder().with_adapter::<FredAdapter<_>>(adapter),
            state: Arc::new(RedisStore::new(redis.commands.clone(), &settings.prefix)),
            timers: Arc::new(RedisTimers::new(redis.commands.clone(), &settings.prefix)),
            readiness,
            liveness: Some(liveness),
            sessions: sessions.clone(),
            delivery: Box::new(move |io, limits| {
                Box::pin(async move {
                    let journal: Arc<dyn Journal> = StreamJournal::start(
                        redis.commands.clone(),
                        redis.reader.clone(),
                        &settings.prefix,
                        Arc::new(io.clone()),
                        limits,
                    )
                    .await;
                    let tracked = limits.map(|_| sessions);
                    let sockets = Arc::new(NodeSockets::new(io, journal.clone(), tracked));
                    (journal, sockets as Arc<dyn Sockets>)
                })
            }),
        };
        Self::assemble(manifest, listener, admission, backend).await
    }

    async fn assemble<A>(
        manifest: Manifest,
        listener: TcpListener,
        admission: Arc<Admission>,
        backend: Backend<A>,
    ) -> Result<Self, ServeError>
    where
        A: Adapter + DefinedAdapter,
        A::InitRes: NamespaceReady,
    {
        let durable = backend.liveness.is_some();
        let recovering = manifest
            .server
            .recovery
            .map(|settings| (settings, backend.sessions));
        // socketioxide asks the recovery which sessions can be resumed, but
        // the recovery delivers through the socketioxide it builds: it is
        // put in place once both exist.
        let resuming = Arc::new(OnceLock::<Arc<Recovery>>::new());
        let builder = match recovering {
            Some(_) => backend.builder.connection_state_recovery({
                let resuming = resuming.clone();
                move |request| {
                    let recovery = resuming.get().cloned();
                    async move { recovery?.claim(request).await }
                }
            }),
            None => backend.builder,
        };
        let (layer, io) = transport::socket_io(builder, &manifest.server);
        let (journal, sockets) = (backend.delivery)(io.clone(), manifest.server.recovery).await;
        let recovery = recovering.map(|(settings, sessions)| {
            Recovery::new(
                journal,
                sessions,
                settings.max_disconnection,
                settings.max_waiting_sessions,
                manifest.server.connections.connect_timeout,
                durable,
                Box::new({
                    let io = io.clone();
                    move |namespace: &str, socket_id: &str| {
                        let sid = socket_id.parse().ok();
                        sid.and_then(|sid| io.of(namespace)?.get_socket(sid))
                            .is_some()
                    }
                }),
            )
        });
        if let Some(recovery) = &recovery {
            let _ = resuming.set(recovery.clone());
        }
        let services = HostServices::new(
            sockets.clone(),
            backend.state,
            backend.timers.clone(),
            &manifest.server,
        );
        let acks = services.acks.clone();
        let verifier = manifest
            .auth
            .as_ref()
            .map(Verifier::new)
            .transpose()?
            .map(Arc::new);
        let LoadedPlugins {
            routes,
            http_routes,
            reloader,
        } = load_plugins(&manifest, services).await?;
        let max_payload = manifest.server.max_payload_bytes;
        let namespaces = Namespaces::serve(
            &io,
            &routes,
            SocketLimits::new(&manifest.server),
            backend.liveness.clone(),
            verifier.clone(),
            recovery.clone(),
        )
        .await;
        if let Some(recovery) = recovery.clone() {
            let namespaces = namespaces.clone();
            recovery.expire(move |expired| {
                let namespaces = namespaces.clone();
                async move {
                    metrics::recovery(&expired.conn.namespace, "expired");
                    namespaces
                        .disconnect_gone(&expired.conn, &expired.reason)
                        .await;
                }
            });
        }
        let api_token = manifest
            .api_token
            .as_ref()
            .map(|token| Arc::new(ApiToken::new(token.expose())));
        let plugin_http = Arc::new(PluginHttp {
            routes: ArcSwap::from_pointee(http_routes),
            verifier,
            api_token: api_token.clone(),
            max_body_bytes: usize::try_from(max_payload).unwrap_or(usize::MAX),
            static_files: manifest.server.static_dir.as_ref().map(ServeDir::new),
        });
        reloader.serve(namespaces.clone(), plugin_http.clone());
        if let Err(error) = reloader.watch() {
            tracing::warn!(
                "cannot watch the plugin files ({error}); reload with SIGHUP or the HTTP API"
            );
        }
        acks.deliver_with({
            let reloader = reloader.clone();
            move |answered| {
                let reloader = reloader.clone();
                async move { reloader.deliver_ack(answered).await }
            }
        });
        timers::run(backend.timers, {
            let reloader = reloader.clone();
            move |timer| {
                let reloader = reloader.clone();
                async move { reloader.deliver_timer(timer).await }
            }
        });
        let nodes = match backend.liveness {
            Some(liveness) => {
                let report: Reporter = {
                    let (liveness, namespaces, reloader) =
                        (liveness.clone(), namespaces.clone(), reloader.clone());
                    Arc::new(move || liveness.report(namespaces.sockets(), reloader.versions()))
                };
                liveness.clone().run(report, {
                    let namespaces = namespaces.clone();
                    move |node, lost| {
                        let (namespaces, recovery) = (namespaces.clone(), recovery.clone());
                        async move {
                            for conn in lost {
                                let kept = match &recovery {
                                    Some(recovery) => recovery.suspend_lost(&node, &conn).await,
                                    None => false,
                                };
                                if !kept {
                                    namespaces.disconnect_gone(&conn, LOST_REASON).await;
                                }
                            }
                        }
                    }
                });
                Nodes::Cluster(liveness)
            }
            None => {
                let started_at_ms = now_ms();
                let (namespaces, reloader) = (namespaces.clone(), reloader.clone());
                Nodes::Alone(Arc::new(move || NodeReport {
                    id: "local".to_owned(),
                    started_at_ms,
                    sockets: namespaces.sockets(),
                    plugins: reloader.versions(),
                    beat_at_ms: now_ms(),
                }))
            }
        };
        let api = http_api::ApiState {
            sockets: sockets.clone(),
            nodes,
            token: api_token,
            metrics: manifest.metrics,
            namespaces: namespaces.clone(),
            readiness: backend.readiness,
            reloader: reloader.clone(),
            admission: admission.clone(),
        };
        if manifest.server.allowed_origins.allows_any() {
            tracing::warn!(
                "`[server] allowed_origins` lists `*`: any web page can open a socket with its visitors' cookies"
            );
        }
        let socket_io_path = transport::SocketIoPath::new(&manifest.server.path);
        let guard = Arc::new(OriginGuard::new(
            socket_io_path.clone(),
            manifest.server.allowed_origins.clone(),
        ));
        let app = http_api::router(api, plugin_http)
            .layer(layer)
            .layer(axum::middleware::map_request_with_state(
                socket_io_path.clone(),
                transport::own_request_head,
            ))
            .layer(axum::middleware::map_request_with_state(
                transport::SessionDoor {
                    path: socket_io_path,
                    admission: admission.clone(),
                    max_auth_bytes: manifest.server.max_auth_bytes,
                },
                transport::admit_session,
            ))
            .layer(axum::middleware::from_fn_with_state(guard, origin::guard))
            // A body that stops arriving holds its connection no longer than
            // headers may take (long-polling POSTs included), and one that
            // keeps arriving no longer than `body_timeout_ms` in all.
            .layer(axum::middleware::from_fn_with_state(
                manifest.server.connections.body_timeout,
                body_deadline,
            ))
            .layer(RequestBodyTimeoutLayer::new(
                manifest.server.connections.header_read_timeout,
            ));
        Ok(Self {
            listener,
            app,
            sockets,
            namespaces,
            reloader,
            admission,
            requests: RequestLimits::from(&manifest.server.connections),
        })
    }

    /// Reloads plugins on demand (SIGHUP).
    pub fn reloader(&self) -> Arc<Reloader> {
        self.reloader.clone()
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then has the plugins see every
    /// socket disconnect (while other nodes can still be told), leaves the
    /// cluster, closes the connections (clients reconnect, to another node
    /// behind a balancer) and waits a bounded time for the rest.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
        let (sockets, namespaces) = (self.sockets, self.namespaces);
        let serve = listener::serve(
            self.listener,
            self.app,
            self.admission,
            self.requests,
            async move {
                shutdown.await;
                tracing::info!("shutting down: closing connections");
                let _ = stopping.send(());
                namespaces.disconnect_all(DISCONNECT_GRACE).await;
                sockets.close().await;
            },
        );
        let grace_expired = async {
            if stopped.await.is_ok() {
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = serve => {}
            () = grace_expired => tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}; exiting anyway"),
        }
        Ok(())
    }
}

/// The plugins of a manifest, running, and what reloads them.
pub struct LoadedPlugins {
    pub routes: Routes,
    pub http_routes: PluginRoutes,
    pub reloader: Arc<Reloader>,
}

/// Loads every plugin of `manifest` as `serve` does, `init` with its config
/// included, on in-memory state and sockets: what `check` runs. The status of
/// each, in manifest order.
pub async fn check_plugins(manifest: &Manifest) -> Result<Vec<PluginStatus>, ServeError> {
    let (_layer, io) = transport::socket_io(SocketIo::builder(), &manifest.server);
    let services = HostServices::new(
        in_memory(io, None).1,
        Arc::new(MemoryStore::new()),
        Arc::new(MemoryTimers::new()),
        &manifest.server,
    );
    let loaded = load_plugins(manifest, services).await?;
    Ok(loaded.reloader.statuses())
}

pub async fn load_plugins(
    manifest: &Manifest,
    services: HostServices,
) -> Result<LoadedPlugins, ServeError> {
    let (runtime, compiled) = tokio::task::spawn_blocking({
        let manifest = manifest.clone();
        move || -> Result<_, ServeError> {
            let runtime = Runtime::new(
                manifest.server.cache_dir.clone(),
                manifest.server.plugin_memory_bytes,
                manifest.server.threads,
            )
            .map_err(ServeError::Engine)?;
            let compiled = compile_plugins(&runtime, &manifest)?;
            Ok((runtime, compiled))
        }
    })
    .await
    .map_err(|join| std::io::Error::other(join.to_string()))??;

    let services = Arc::new(services);
    let mut slots = Vec::with_capacity(compiled.len());
    for (spec, compiled) in manifest.plugins.iter().zip(compiled) {
        let plugin = start(&runtime, spec, compiled, services.clone()).await?;
        slots.push(Arc::new(PluginSlot::new(spec.clone(), plugin)));
    }
    Ok(LoadedPlugins {
        routes: Routes::new(&slots, manifest),
        http_routes: PluginRoutes::new(&slots),
        reloader: Reloader::new(Arc::new(runtime), services, manifest.clone(), slots),
    })
}

async fn start(
    runtime: &Runtime,
    spec: &PluginSpec,
    compiled: CompiledPlugin,
    services: Arc<HostServices>,
) -> Result<Arc<Plugin>, PluginError> {
    let plugin = Plugin::start(runtime, compiled, spec, services)
        .await
        .map_err(|source| PluginError::Start {
            location: spec.location.clone(),
            plugin: spec.name.clone(),
            source: Box::new(source),
        })?;
    tracing::info!(plugin = %spec.name, version = %&plugin.version()[..12], "plugin loaded");
    Ok(plugin)
}
