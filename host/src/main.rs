//! The `switchboard` command: parse arguments, set up logging, hand over to the library.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use switchboard::escaped::Escaped;
use switchboard::http_api;
use switchboard::listener::{Admission, RequestLimits};
use switchboard::manifest::AllowedOrigins;
use switchboard::{Manifest, Server};
use tokio::net::TcpListener;
use tracing_appender::non_blocking::WorkerGuard;

#[derive(Parser)]
#[command(
    version,
    about = "Socket.IO server running its app logic as WebAssembly plugins"
)]
struct Cli {
    /// How log lines are written to stderr: `text` (coloured only on a
    /// terminal, and not with NO_COLOR set) or `json` (one object per line).
    #[arg(long, global = true, env = "SWITCHBOARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// What is logged when `RUST_LOG` is not set.
const DEFAULT_LOG_FILTER: &str = "info,socketioxide=warn,engineioxide=warn";

/// Installs the log subscriber; keep the guard until the end, which writes
/// out the lines still queued.
fn init_logging(format: LogFormat) -> WorkerGuard {
    let (writer, guard) = switchboard::log_output::to_stderr();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| DEFAULT_LOG_FILTER.into()),
        );
    match format {
        LogFormat::Text => {
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            subscriber.with_ansi(colour).init();
        }
        LogFormat::Json => subscriber.json().with_current_span(true).init(),
    }
    guard
}

#[derive(Subcommand)]
enum Command {
    /// Serve the plugins of a manifest.
    Serve {
        #[command(flatten)]
        manifest: ManifestArg,
        /// Listen address, overriding `server.listen` (port 0 picks a free port).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Validate a manifest and every plugin it names, as `serve` would.
    Check {
        #[command(flatten)]
        manifest: ManifestArg,
    },
    /// Send events through one plugin of a manifest, without a server: its
    /// `init`, `on-connect` and an `on-event` per `--event` run on fresh
    /// in-memory state, from one socket, and what it does is printed, one
    /// JSON object per line (`emit`, `join`, `leave`, then `reply` or
    /// `error` for each event). Exits 1 when a call fails.
    Call {
        #[command(flatten)]
        manifest: ManifestArg,
        /// The plugin, by its manifest name.
        #[arg(long)]
        plugin: String,
        /// An event's name; repeat for several, sent in order.
        #[arg(long = "event", required = true)]
        events: Vec<String>,
        /// The data of the event at the same position, as JSON (`null` when
        /// there are fewer than events).
        #[arg(long = "data")]
        data: Vec<String>,
        /// The namespace the socket is in; defaults to the plugin's first.
        #[arg(long)]
        namespace: Option<String>,
        /// The socket's verified user id, as `[auth]` would give it.
        #[arg(long)]
        user: Option<String>,
        /// The socket's handshake `auth`, as JSON.
        #[arg(long, default_value = "{}")]
        auth: String,
        /// After the events, fire every timer they scheduled, in time order,
        /// as if the clock had reached it.
        #[arg(long)]
        fire_timers: bool,
        /// Finally disconnect the socket with this reason (e.g. `transport close`).
        #[arg(long, value_name = "REASON")]
        disconnect: Option<String>,
        /// The time the plugin reads (`clock.now-ms`), in Unix milliseconds,
        /// instead of the system's; each timer fired moves it to its time.
        #[arg(long, value_name = "MS")]
        now_ms: Option<u64>,
    },
    /// Plugin projects.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Create a plugin project: a small handler (a Rust crate, an npm
    /// package or a Python module), a test that builds it and runs it
    /// through `switchboard call`, a manifest serving it and a README with
    /// the commands to build, test and serve it.
    New {
        /// The plugin's name, also the package's: 1 to 64 lowercase letters,
        /// digits, `-` or `_`, starting with a letter.
        name: String,
        /// The plugin's language.
        #[arg(long, default_value = "rust", value_name = "rust|js|python")]
        lang: switchboard::scaffold::Language,
        /// The project's directory, new or empty [default: ./NAME].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Rust only: the Switchboard SDK to depend on (the `plugins/sdk`
        /// directory of a checkout) [default: the one of the checkout this
        /// binary was built from].
        #[arg(long)]
        sdk_path: Option<PathBuf>,
    },
}

/// The TOML manifest, taken the same way by every command: `switchboard
/// serve switchboard.toml` or `--manifest switchboard.toml`.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct ManifestArg {
    /// The TOML manifest.
    #[arg(value_name = "MANIFEST")]
    path: Option<PathBuf>,
    /// The TOML manifest (the same as the positional argument).
    #[arg(long = "manifest", short = 'm', value_name = "MANIFEST")]
    flag: Option<PathBuf>,
}

impl ManifestArg {
    fn into_path(self) -> PathBuf {
        self.path.or(self.flag).unwrap_or_default()
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let logging = init_logging(cli.log_format);
    let result = match cli.command {
        Command::Serve { manifest, listen } => serve(manifest.into_path(), listen),
        Command::Check { manifest } => check(manifest.into_path()),
        Command::Call {
            manifest,
            plugin,
            events,
            data,
            namespace,
            user,
            auth,
            fire_timers,
            disconnect,
            now_ms,
        } => call(
            manifest.into_path(),
            &plugin,
            &events,
            &data,
            switchboard::call::Caller {
                namespace,
                user_id: user,
                auth,
            },
            switchboard::call::Afterwards {
                now_ms,
                fire_timers,
                disconnect,
            },
        ),
        Command::Plugin {
            command:
                PluginCommand::New {
                    name,
                    lang,
                    dir,
                    sdk_path,
                },
        } => new_plugin(&switchboard::scaffold::NewPlugin {
            name,
            language: lang,
            dir,
            sdk_path,
        }),
    };
    // The log's last lines before the error line.
    drop(logging);
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
    switchboard::allocator::return_unused_memory();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(manifest.server.threads.get())
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
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
        let limits = &manifest.server.connections;
        let admission = std::sync::Arc::new(Admission::new(limits));
        let probes = tokio::spawn(http_api::serve_while_starting(
            probe_listener,
            admission.clone(),
            RequestLimits::from(limits),
            async {
                let _ = starting_done.await;
            },
        ));
        let loaded = Server::load(manifest, listener, admission).await;
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
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    // As `serve` would: compiled, type-checked and `init` with its config.
    let statuses = runtime.block_on(switchboard::server::check_plugins(&manifest))?;
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
    for (spec, status) in manifest.plugins.iter().zip(&statuses) {
        println!(
            "  plugin {} ({}) namespaces {} events {}",
            spec.name,
            &status.version[..12],
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

fn call(
    path: PathBuf,
    plugin: &str,
    events: &[String],
    data: &[String],
    caller: switchboard::call::Caller,
    afterwards: switchboard::call::Afterwards,
) -> anyhow::Result<()> {
    let manifest = Manifest::load(&path)?;
    let events: Vec<(&str, &str)> = events
        .iter()
        .enumerate()
        .map(|(index, event)| {
            (
                event.as_str(),
                data.get(index).map_or("null", String::as_str),
            )
        })
        .collect();
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let effects = runtime.block_on(switchboard::call::call(
        &manifest, plugin, &events, caller, afterwards,
    ))?;
    let mut failed = false;
    for effect in &effects {
        failed |= matches!(effect, switchboard::call::Effect::Error { .. });
        println!("{}", serde_json::to_string(effect)?);
    }
    if failed {
        anyhow::bail!("the call failed (see the `error` line)");
    }
    Ok(())
}

fn new_plugin(request: &switchboard::scaffold::NewPlugin) -> anyhow::Result<()> {
    let dir = switchboard::scaffold::create(request)?;
    println!(
        "created plugin `{}` in {}; its README.md says how to build, test and serve it",
        request.name,
        dir.display()
    );
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
