//! Putting it together: load the plugins a manifest names, serve Socket.IO and
//! HTTP on a listener, shut down gracefully.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use tokio::net::TcpListener;
use tower_http::services::ServeDir;

use crate::cluster::MemoryStore;
use crate::host_api::HostServices;
use crate::manifest::{Location, Manifest, PluginName, PluginSpec};
use crate::runtime::{CallError, CompiledPlugin, LoadError, Plugin, Runtime};
use crate::transport::{self, Io, Routes};

/// How long open connections get to close after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot start the WebAssembly engine: {0:#}")]
    Engine(wasmtime::Error),
    #[error(transparent)]
    Plugin(#[from] PluginError),
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
                .compile(&spec.wasm)
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
    io: Io,
}

impl Server {
    pub async fn load(manifest: Manifest, listener: TcpListener) -> Result<Self, ServeError> {
        let (layer, io) = transport::socket_io(&manifest.server);
        attach_plugins(&manifest, &io).await?;

        let mut app = axum::Router::new().route("/healthz", get(|| async { "ok" }));
        if let Some(dir) = &manifest.server.static_dir {
            app = app.fallback_service(ServeDir::new(dir));
        }
        Ok(Self {
            listener,
            app: app.layer(layer),
            io,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then disconnects every socket (so
    /// plugins see their disconnects) and waits a bounded time for the rest.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
        let io = self.io.clone();
        let serve = axum::serve(self.listener, self.app).with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: closing connections");
            let _ = stopping.send(());
            io.close().await;
        });
        let grace_expired = async {
            if stopped.await.is_ok() {
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            served = serve => served?,
            () = grace_expired => tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}; exiting anyway"),
        }
        Ok(())
    }
}

/// Loads the manifest's plugins and serves their namespaces on `io`.
pub async fn attach_plugins(manifest: &Manifest, io: &Io) -> Result<(), ServeError> {
    let (runtime, compiled) = tokio::task::spawn_blocking({
        let manifest = manifest.clone();
        move || -> Result<_, ServeError> {
            let runtime =
                Runtime::new(manifest.server.cache_dir.clone()).map_err(ServeError::Engine)?;
            let compiled = compile_plugins(&runtime, &manifest)?;
            Ok((runtime, compiled))
        }
    })
    .await
    .map_err(|join| std::io::Error::other(join.to_string()))??;

    let services = Arc::new(HostServices {
        sockets: Arc::new(io.clone()),
        state: Arc::new(MemoryStore::new()),
    });
    let mut plugins = Vec::with_capacity(compiled.len());
    for (spec, compiled) in manifest.plugins.iter().zip(compiled) {
        plugins.push((
            spec,
            start(&runtime, spec, compiled, services.clone()).await?,
        ));
    }
    // In memory, namespaces are ready as soon as they are added.
    let _ready: Vec<()> =
        transport::serve_namespaces(io, &Routes::new(plugins), manifest.server.max_payload_bytes);
    Ok(())
}

async fn start(
    runtime: &Runtime,
    spec: &PluginSpec,
    compiled: CompiledPlugin,
    services: Arc<HostServices>,
) -> Result<Arc<Plugin>, PluginError> {
    let plugin = Plugin::start(runtime.engine(), compiled, spec, services)
        .await
        .map_err(|source| PluginError::Start {
            location: spec.location.clone(),
            plugin: spec.name.clone(),
            source: Box::new(source),
        })?;
    tracing::info!(plugin = %spec.name, version = %&plugin.version()[..12], "plugin loaded");
    Ok(plugin)
}
