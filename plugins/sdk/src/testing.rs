//! Unit tests for a plugin, run natively by `cargo test`: [`Call`] sends
//! events through the plugin's component with `switchboard call`, the host
//! without a server (fresh in-memory state, an optional fixed clock, timers
//! fired on demand), and returns what the plugin did as [`Effect`]s.
//!
//! The component is built first ([`build_component`], once per test run)
//! with the same `cargo build --target wasm32-wasip2 --release` as for
//! serving it, and loaded from the project's own `switchboard.toml`, so a
//! test covers the manifest (events, namespaces, `config`) as well as the
//! code. `switchboard` is found on `PATH`, or at `$SWITCHBOARD_BIN`.
//!
//! ```ignore
//! use switchboard_sdk::testing::{Call, Effect};
//!
//! let outcome = Call::new("greet").event("join", &json!({"room": "lobby"})).run();
//! assert!(outcome.succeeded);
//! assert_eq!(outcome.effects[0], Effect::Join { room: "lobby".into() });
//! ```

use std::path::PathBuf;
use std::process::Command;
use std::sync::Once;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One thing the plugin did, as `switchboard call` prints it (one JSON line
/// each: the host writes them from its own `call::Effect`, and this reads them).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    Emit {
        namespace: String,
        /// `None`: the whole namespace; `socket:{id}` for one socket.
        room: Option<String>,
        except: Option<String>,
        event: String,
        /// Its argument, when it has one.
        data: Option<Value>,
        /// Its arguments, when it has none or several.
        args: Option<Value>,
        /// Set when it asks the socket for an ack (`acks::to_socket`); no
        /// answer comes, so `on_ack` is not called.
        ack_timeout_ms: Option<u64>,
    },
    Join {
        room: String,
    },
    Leave {
        room: String,
    },
    /// The ack the client would get (`null` when the plugin returned none).
    Reply(Value),
    /// An ack of no or several arguments: their array.
    ReplyArgs(Value),
    /// The error the client would get, the plugin's or the host's.
    Error {
        code: String,
        message: String,
    },
    /// A timer fired (`Call::fire_timers`); what it did follows.
    Timer {
        key: String,
        payload: String,
        at_ms: u64,
    },
    /// The socket disconnected (`Call::disconnect`); what `on_disconnect`
    /// did follows.
    Disconnect {
        reason: String,
    },
}

/// What a [`Call`] did.
#[derive(Debug)]
pub struct Outcome {
    /// Whether every call succeeded (`switchboard call` exited 0).
    pub succeeded: bool,
    /// In order: each event's effects, then its `Reply` or `Error`.
    pub effects: Vec<Effect>,
}

/// Events for one plugin, from one socket, on fresh state.
#[must_use]
pub struct Call {
    plugin: String,
    manifest: PathBuf,
    args: Vec<String>,
}

impl Call {
    /// For the plugin named `plugin` in the project's `switchboard.toml`
    /// (the crate's root, `CARGO_MANIFEST_DIR` of the test).
    pub fn new(plugin: &str) -> Self {
        let root = std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(PathBuf::new, PathBuf::from);
        Self {
            plugin: plugin.to_owned(),
            manifest: root.join("switchboard.toml"),
            args: Vec::new(),
        }
    }

    /// Another manifest than the project's `switchboard.toml`.
    pub fn manifest(mut self, path: impl Into<PathBuf>) -> Self {
        self.manifest = path.into();
        self
    }

    /// An event with one argument, `data`, sent after the previous ones.
    pub fn event<T: Serialize + ?Sized>(self, event: &str, data: &T) -> Self {
        let data = serde_json::to_string(data).expect("event data serializes to JSON");
        self.with(&["--event", event, "--data", &data])
    }

    /// The socket's verified user id, as `[auth]` would give it.
    pub fn user(self, user_id: &str) -> Self {
        self.with(&["--user", user_id])
    }

    /// The socket's handshake `auth`.
    pub fn auth<T: Serialize + ?Sized>(self, auth: &T) -> Self {
        let auth = serde_json::to_string(auth).expect("auth serializes to JSON");
        self.with(&["--auth", &auth])
    }

    /// The namespace the socket is in; the plugin's first by default.
    pub fn namespace(self, namespace: &str) -> Self {
        self.with(&["--namespace", namespace])
    }

    /// The time the plugin reads (`clock::now_ms`), fixed.
    pub fn now_ms(self, now_ms: u64) -> Self {
        self.with(&["--now-ms", &now_ms.to_string()])
    }

    /// After the events, fires every timer they scheduled, soonest first,
    /// as if the clock had reached it.
    pub fn fire_timers(self) -> Self {
        self.with(&["--fire-timers"])
    }

    /// Finally disconnects the socket with `reason` (`on_disconnect`).
    pub fn disconnect(self, reason: &str) -> Self {
        self.with(&["--disconnect", reason])
    }

    fn with(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|&arg| arg.to_owned()));
        self
    }

    /// Builds the component if this test run has not yet, then runs the
    /// events. Panics when the plugin cannot be loaded at all (its file, the
    /// manifest or `init`), with what `switchboard call` said.
    pub fn run(&self) -> Outcome {
        build_component();
        let binary = std::env::var("SWITCHBOARD_BIN").unwrap_or_else(|_| "switchboard".to_owned());
        let output = Command::new(&binary)
            .arg("call")
            .arg(&self.manifest)
            .args(["--plugin", &self.plugin])
            .args(&self.args)
            .output()
            .unwrap_or_else(|error| {
                panic!("cannot run `{binary}` ({error}): put switchboard on PATH or set SWITCHBOARD_BIN")
            });
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() || !output.stdout.is_empty(),
            "switchboard call failed:\n{stderr}"
        );
        let effects = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|error| panic!("{error}: {line}\n{stderr}"))
            })
            .collect();
        Outcome {
            succeeded: output.status.success(),
            effects,
        }
    }
}

/// `cargo build --target wasm32-wasip2 --release` in the test's crate, once
/// per test run, so tests never run a stale component.
pub fn build_component() {
    static BUILT: Once = Once::new();
    BUILT.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut command = Command::new(cargo);
        if let Some(root) = std::env::var_os("CARGO_MANIFEST_DIR") {
            command.current_dir(root);
        }
        let output = command
            .args(["build", "--target", "wasm32-wasip2", "--release"])
            .output()
            .expect("cannot run cargo");
        assert!(
            output.status.success(),
            "cannot build the component:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    });
}
