//! Hot reload of plugin components: a changed `.wasm` is compiled off the
//! event path, checked against the world, initialised, then swapped in. A
//! version that fails any of that leaves the running one in place.
//!
//! Triggers: the file watcher (debounced, so an overwrite in place and an
//! atomic rename both work), `POST /api/v1/plugins/{name}/reload`, and SIGHUP.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use serde::Serialize;
use tokio::sync::{Mutex, mpsc};

use crate::host_api::HostServices;
use crate::runtime::{Plugin, PluginSlot, PluginStatus, Runtime};

/// Quiet time after the last file event before a reload starts: long enough
/// for a copy in place to finish writing.
const DEBOUNCE: Duration = Duration::from_millis(150);

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("no plugin named `{0}`")]
    UnknownPlugin(String),
    #[error("plugin `{plugin}` kept its running version: {cause}")]
    Rejected { plugin: String, cause: String },
}

/// What a reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reloaded {
    /// A new version runs.
    Loaded,
    /// The file has the running version's content.
    Unchanged,
}

/// Reload counts, for the plugins API.
#[derive(Serialize)]
pub struct ReloadCounts {
    pub reloads: u64,
    pub failures: u64,
}

pub struct Reloader {
    runtime: Arc<Runtime>,
    services: Arc<HostServices>,
    slots: Vec<Arc<PluginSlot>>,
    /// One reload at a time per process, so two triggers never race a swap.
    reloading: Mutex<()>,
    reloads: AtomicU64,
    failures: AtomicU64,
}

impl Reloader {
    pub fn new(
        runtime: Arc<Runtime>,
        services: Arc<HostServices>,
        slots: Vec<Arc<PluginSlot>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            runtime,
            services,
            slots,
            reloading: Mutex::new(()),
            reloads: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        })
    }

    pub fn statuses(&self) -> Vec<PluginStatus> {
        self.slots.iter().map(|slot| slot.status()).collect()
    }

    pub fn counts(&self) -> ReloadCounts {
        ReloadCounts {
            reloads: self.reloads.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
        }
    }

    /// Reloads one plugin from its file.
    pub async fn reload(&self, name: &str) -> Result<Reloaded, ReloadError> {
        let slot = self
            .slots
            .iter()
            .find(|slot| slot.spec.name.as_str() == name)
            .ok_or_else(|| ReloadError::UnknownPlugin(name.to_owned()))?;
        let _one_at_a_time = self.reloading.lock().await;
        self.reloads.fetch_add(1, Ordering::Relaxed);
        let outcome = self.load(slot).await;
        match &outcome {
            Ok(Reloaded::Loaded) => {
                tracing::info!(plugin = name, version = %&slot.status().version[..12], "plugin reloaded")
            }
            Ok(Reloaded::Unchanged) => slot.record(None),
            Err(error) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(plugin = name, "{error}");
                slot.record(Some(error.to_string()));
            }
        }
        outcome
    }

    /// Reloads every plugin (SIGHUP); failures are logged and recorded.
    pub async fn reload_all(&self) {
        for slot in &self.slots {
            let _ = self.reload(slot.spec.name.as_str()).await;
        }
    }

    async fn load(&self, slot: &PluginSlot) -> Result<Reloaded, ReloadError> {
        let rejected = |cause: String| ReloadError::Rejected {
            plugin: slot.spec.name.to_string(),
            cause,
        };
        let runtime = self.runtime.clone();
        let path = slot.spec.wasm.clone();
        let compiled = tokio::task::spawn_blocking(move || runtime.compile(&path))
            .await
            .map_err(|join| rejected(join.to_string()))?
            .map_err(|error| rejected(error.to_string()))?;
        if compiled.hash == slot.current().version() {
            return Ok(Reloaded::Unchanged);
        }
        let plugin = Plugin::start(
            self.runtime.engine(),
            compiled,
            &slot.spec,
            self.services.clone(),
        )
        .await
        .map_err(|error| rejected(error.to_string()))?;
        slot.swap(plugin);
        Ok(Reloaded::Loaded)
    }

    /// Watches every plugin's file and reloads it when it changes. The
    /// returned watcher must be kept alive.
    pub fn watch(
        self: &Arc<Self>,
    ) -> notify::Result<Debouncer<notify::RecommendedWatcher, RecommendedCache>> {
        // Watch the directories, not the files: an atomic rename replaces the
        // file, and a watch on the old inode would see nothing more.
        let mut by_path: HashMap<PathBuf, String> = HashMap::new();
        for slot in &self.slots {
            let path =
                std::path::absolute(&slot.spec.wasm).unwrap_or_else(|_| slot.spec.wasm.clone());
            by_path.insert(path, slot.spec.name.to_string());
        }
        let (changed, mut to_reload) = mpsc::unbounded_channel::<String>();
        let watched = by_path.clone();
        let mut debouncer = new_debouncer(DEBOUNCE, None, move |result: DebounceEventResult| {
            let Ok(events) = result else { return };
            let mut names: Vec<&String> = events
                .iter()
                .flat_map(|event| event.paths.iter())
                .filter_map(|path| watched.get(path))
                .collect();
            names.sort();
            names.dedup();
            for name in names {
                let _ = changed.send(name.clone());
            }
        })?;
        let directories: std::collections::HashSet<PathBuf> = by_path
            .keys()
            .filter_map(|path| path.parent().map(PathBuf::from))
            .collect();
        for directory in directories {
            debouncer.watch(&directory, RecursiveMode::NonRecursive)?;
        }
        let reloader = self.clone();
        tokio::spawn(async move {
            while let Some(name) = to_reload.recv().await {
                let _ = reloader.reload(&name).await;
            }
        });
        Ok(debouncer)
    }
}
