//! The `switchboard` command: parse arguments, set up logging, hand over to the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use switchboard::escaped::Escaped;
use switchboard::http_api;
use switchboard::manifest::AllowedOrigins;
use switchboard::runtime::Runtime;
use switchboard::{Manifest, Server};
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(
    version,
    about = "Socket.IO server running its app logic as WebAssembly plugins"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the plugins of a manifest.
    Serve {
        /// The TOML manifest.
        #[arg(long, short)]
        manifest: PathBuf,
        /// Listen address, overriding `server.listen` (port 0 picks a free port).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Validate a manifest and type-check every plugin it names.
    Check {
        /// The TOML manifest.
        manifest: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,socketioxide=warn,engineioxide=warn".into()),
        )
        .init();
    let result = match Cli::parse().command {
        Command::Serve { manifest, listen } => serve(manifest, listen),
        Command::Check { manifest } => check(manifest),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Errors can carry a plugin's own text (its `init` error); escaped, it stays one line.
            eprintln!("error: {}", Escaped(format_args!("{error:#}")));
            ExitCode::FAILURE
        }
    }
}

fn serve(manifest: PathBuf, listen: Option<SocketAddr>) -> anyhow::Result<()> {
    let manifest = Manifest::load(&manifest)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let address = listen.unwrap_or(manifest.server.listen);
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen on {address}"))?;
        // Probes get answers (503 "starting") while plugins load and Redis is
        // awaited; the same socket is then handed to the real server.
        let (listener, probe_listener) =
            share(listener).context("cannot share the listening socket")?;
        let (started, starting_done) = tokio::sync::oneshot::channel::<()>();
        let probes = tokio::spawn(http_api::serve_while_starting(probe_listener, async {
            let _ = starting_done.await;
        }));
        let loaded = Server::load(manifest, listener).await;
        let _ = started.send(());
        let _ = probes.await;
        let server = loaded?;
        let shutdown = shutdown_signal().context("cannot install signal handlers")?;
        #[cfg(unix)]
        reload_on_hangup(server.reloader()).context("cannot install the SIGHUP handler")?;
        println!("switchboard listening on http://{}", server.local_addr()?);
        server.run(shutdown).await?;
        Ok(())
    })
}

fn check(path: PathBuf) -> anyhow::Result<()> {
    let manifest = Manifest::load(&path)?;
    let runtime = Runtime::new(
        manifest.server.cache_dir.clone(),
        manifest.server.plugin_memory_bytes,
    )
    .map_err(|error| anyhow::anyhow!("cannot start the WebAssembly engine: {error:#}"))?;
    let compiled = switchboard::server::compile_plugins(&runtime, &manifest)?;
    println!("{}: ok", manifest.path.display());
    match &manifest.server.allowed_origins {
        AllowedOrigins::SameOrigin => println!("  origins: same origin only"),
        AllowedOrigins::Listed(patterns) => {
            let patterns: Vec<String> = patterns.iter().map(ToString::to_string).collect();
            println!("  origins: {}", patterns.join(", "));
        }
    }
    if manifest.server.allowed_origins.allows_any() {
        eprintln!(
            "warning: `[server] allowed_origins` lists `*`: any web page can open a socket with its \
             visitors' cookies; list the origins that serve your pages instead"
        );
    }
    if let Some(cluster) = &manifest.cluster {
        println!(
            "  cluster {} (prefix {})",
            cluster.redis_url, cluster.prefix
        );
    }
    if let Some(auth) = &manifest.auth {
        let anonymous = match manifest.anonymous_namespaces.as_slice() {
            [] => String::new(),
            namespaces => format!("; anonymous in {}", namespaces.join(",")),
        };
        println!("  auth {} tokens{anonymous}", auth.algorithm);
    }
    for (spec, plugin) in manifest.plugins.iter().zip(&compiled) {
        println!(
            "  plugin {} ({}) namespaces {} events {}",
            spec.name,
            &plugin.hash[..12],
            spec.namespaces.join(","),
            spec.events.join(",")
        );
        for route in &spec.routes {
            println!(
                "    route {} {} (auth {})",
                route.method, route.path, route.auth
            );
        }
    }
    Ok(())
}

/// SIGHUP reloads every plugin, for where file watching does not work.
#[cfg(unix)]
fn reload_on_hangup(
    reloader: std::sync::Arc<switchboard::reload::Reloader>,
) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading every plugin");
            reloader.reload_all().await;
        }
    });
    Ok(())
}

/// Two handles on one listening socket.
fn share(listener: TcpListener) -> std::io::Result<(TcpListener, TcpListener)> {
    let listener = listener.into_std()?;
    let twin = listener.try_clone()?;
    Ok((
        TcpListener::from_std(listener)?,
        TcpListener::from_std(twin)?,
    ))
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM. The handlers are installed when
/// this is called, so a signal that arrives before the future is polled still
/// shuts down gracefully.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
