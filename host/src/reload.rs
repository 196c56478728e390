//! Hot reload of plugin components and of the manifest. A changed `.wasm` is
//! compiled off the event path, checked against the world, initialised, then
//! swapped in; a version that fails any of that leaves the running one in
//! place. A changed manifest adds, removes and restarts plugins (new config
//! or limits) and reroutes events; an invalid one keeps the running set.
//!
//! Triggers: the file watcher (debounced, so an overwrite in place and an
//! atomic rename both work), `POST /api/v1/plugins/{name}/reload`, and SIGHUP
//! (everything: the manifest, then every plugin file).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex, OnceLock};
use std::time::Duration;

use notify::event::ModifyKind;
use notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use serde::Serialize;
use tokio::sync::{Mutex, mpsc};

use crate::cluster::timers::DueTimer;
use crate::escaped::Escaped;
use crate::host_api::{Answered, HostServices};
use crate::http_api::plugin_routes::{PluginHttp, PluginRoutes};
use crate::manifest::{Manifest, PluginSpec};
use crate::runtime::{CompiledPlugin, Plugin, PluginSlot, PluginStatus, Runtime};
use crate::transport::{Namespaces, Routes};

/// Quiet time after the last file event before a reload starts: long enough
/// for a copy in place to finish writing.
const DEBOUNCE: Duration = Duration::from_millis(150);

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("no plugin named `{0}`")]
    UnknownPlugin(String),
    #[error("plugin `{plugin}` kept its running version: {cause}")]
    Rejected { plugin: String, cause: String },
    #[error("the running configuration stays: {0}")]
    Manifest(String),
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

type Watcher = Debouncer<notify::RecommendedWatcher, RecommendedCache>;

pub struct Reloader {
    runtime: Arc<Runtime>,
    services: Arc<HostServices>,
    slots: StdMutex<Vec<Arc<PluginSlot>>>,
    manifest: StdMutex<Manifest>,
    /// Where routes go when the manifest changes; set once serving.
    serving: OnceLock<(Arc<Namespaces>, Arc<PluginHttp>)>,
    /// The file watcher and the directories it watches: watching a directory
    /// again makes it report its files as changed, so each is watched once.
    watcher: StdMutex<Option<(Watcher, HashSet<PathBuf>)>>,
    /// One reload at a time per process, so two triggers never race a swap.
    reloading: Mutex<()>,
    reloads: AtomicU64,
    failures: AtomicU64,
}

impl Reloader {
    pub fn new(
        runtime: Arc<Runtime>,
        services: Arc<HostServices>,
        manifest: Manifest,
        slots: Vec<Arc<PluginSlot>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            runtime,
            services,
            slots: StdMutex::new(slots),
            manifest: StdMutex::new(manifest),
            serving: OnceLock::new(),
            watcher: StdMutex::new(None),
            reloading: Mutex::new(()),
            reloads: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        })
    }

    /// Lets manifest changes reroute events and HTTP routes; call once they are served.
    pub fn serve(&self, namespaces: Arc<Namespaces>, http: Arc<PluginHttp>) {
        let _ = self.serving.set((namespaces, http));
    }

    fn slots(&self) -> Vec<Arc<PluginSlot>> {
        self.slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn manifest_path(&self) -> PathBuf {
        self.manifest
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .path
            .clone()
    }

    /// The running version of the plugin named `name`.
    pub fn plugin(&self, name: &str) -> Option<Arc<Plugin>> {
        self.slots()
            .iter()
            .find(|slot| slot.spec.name.as_str() == name)
            .map(|slot| slot.current())
    }

    /// Hands a due timer to its plugin's `on-timer`; failures are logged.
    pub async fn deliver_timer(&self, timer: DueTimer) {
        let Some(plugin) = self.plugin(&timer.plugin) else {
            tracing::warn!(
                plugin = %timer.plugin,
                "timer `{}` is due but the plugin is no longer loaded; dropped",
                Escaped(&timer.key)
            );
            return;
        };
        match plugin.on_timer(&timer.key, &timer.payload).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(
                plugin = %timer.plugin,
                "timer `{}` failed: {} ({})",
                Escaped(&timer.key),
                Escaped(&error.message),
                Escaped(&error.code)
            ),
            Err(failure) => {
                tracing::warn!(plugin = %timer.plugin, "timer `{}` dropped: {}", Escaped(&timer.key), Escaped(&failure));
            }
        }
    }

    /// Hands the answer to an event that asked for an ack to its plugin's
    /// `on-ack`; failures are logged.
    pub async fn deliver_ack(&self, answered: Answered) {
        let plugin_name = answered.question.plugin.clone();
        let tag = answered.question.tag.clone();
        let Some(plugin) = self.plugin(&plugin_name) else {
            tracing::warn!(plugin = %plugin_name, "the answer to ack `{}` came but the plugin is no longer loaded; dropped", Escaped(&tag));
            return;
        };
        match plugin.on_ack(answered).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(
                plugin = %plugin_name,
                "on-ack for `{}` failed: {} ({})",
                Escaped(&tag),
                Escaped(&error.message),
                Escaped(&error.code)
            ),
            Err(failure) => {
                tracing::warn!(plugin = %plugin_name, "the answer to ack `{}` dropped: {}", Escaped(&tag), Escaped(&failure));
            }
        }
    }

    /// The running version of each plugin, by name.
    pub fn versions(&self) -> std::collections::BTreeMap<String, String> {
        self.statuses()
            .into_iter()
            .map(|status| (status.name, status.version))
            .collect()
    }

    pub fn statuses(&self) -> Vec<PluginStatus> {
        self.slots().iter().map(|slot| slot.status()).collect()
    }

    pub fn counts(&self) -> ReloadCounts {
        ReloadCounts {
            reloads: self.reloads.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
        }
    }

    /// Reloads one plugin from its file.
    pub async fn reload(&self, name: &str) -> Result<Reloaded, ReloadError> {
        let _one_at_a_time = self.reloading.lock().await;
        let slot = self
            .slots()
            .into_iter()
            .find(|slot| slot.spec.name.as_str() == name)
            .ok_or_else(|| ReloadError::UnknownPlugin(name.to_owned()))?;
        let slot = &slot;
        self.reloads.fetch_add(1, Ordering::Relaxed);
        let outcome = self.load(slot).await;
        match &outcome {
            Ok(Reloaded::Loaded) => {
                tracing::info!(plugin = name, version = %&slot.status().version[..12], "plugin reloaded")
            }
            Ok(Reloaded::Unchanged) => slot.record(None),
            Err(error) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(plugin = name, "{}", Escaped(error));
                slot.record(Some(error.to_string()));
            }
        }
        outcome
    }

    /// Reloads everything (SIGHUP): the manifest, then every plugin's file.
    /// Failures are logged and recorded.
    pub async fn reload_all(&self) {
        let _ = self.reload_manifest().await;
        for slot in self.slots() {
            let _ = self.reload(slot.spec.name.as_str()).await;
        }
    }

    /// Applies the manifest file as it is now: starts added plugins and ones
    /// whose settings changed, drops removed ones, and reroutes events.
    pub async fn reload_manifest(&self) -> Result<(), ReloadError> {
        let _one_at_a_time = self.reloading.lock().await;
        self.reloads.fetch_add(1, Ordering::Relaxed);
        let applied = self.apply_manifest().await;
        match &applied {
            Ok(()) => tracing::info!("manifest reloaded"),
            Err(error) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("manifest not applied: {}", Escaped(error));
            }
        }
        applied
    }

    async fn apply_manifest(&self) -> Result<(), ReloadError> {
        let manifest = Manifest::load(&self.manifest_path())
            .map_err(|error| ReloadError::Manifest(error.to_string()))?;
        {
            let running = self
                .manifest
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if manifest.server != running.server
                || manifest.cluster != running.cluster
                || manifest.api_token != running.api_token
                || manifest.metrics != running.metrics
                || manifest.auth != running.auth
            {
                tracing::warn!(
                    "[server], [cluster], [api] and [auth] changes apply at the next restart"
                );
            }
        }
        let running = self.slots();
        let mut next = Vec::with_capacity(manifest.plugins.len());
        for spec in &manifest.plugins {
            match running.iter().find(|slot| slot.spec.runs_like(spec)) {
                Some(slot) => next.push(slot.clone()),
                None => {
                    let plugin = self.start(spec).await.map_err(|cause| {
                        ReloadError::Manifest(format!(
                            "{}: plugin `{}`: {cause}",
                            spec.location, spec.name
                        ))
                    })?;
                    next.push(Arc::new(PluginSlot::new(spec.clone(), plugin)));
                }
            }
        }
        if let Some((namespaces, http)) = self.serving.get() {
            namespaces.apply(&Routes::new(&next, &manifest));
            http.routes.store(Arc::new(PluginRoutes::new(&next)));
        }
        *self
            .slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = next;
        *self
            .manifest
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = manifest;
        self.watch_directories();
        Ok(())
    }

    async fn start(&self, spec: &PluginSpec) -> Result<Arc<Plugin>, String> {
        let compiled = self.compile(spec).await?;
        self.instantiate(spec, compiled).await
    }

    /// Compiles and type-checks off the async executor.
    async fn compile(&self, spec: &PluginSpec) -> Result<CompiledPlugin, String> {
        let runtime = self.runtime.clone();
        let spec = spec.clone();
        tokio::task::spawn_blocking(move || runtime.compile_plugin(&spec))
            .await
            .map_err(|join| join.to_string())?
            .map_err(|error| error.to_string())
    }

    async fn instantiate(
        &self,
        spec: &PluginSpec,
        compiled: CompiledPlugin,
    ) -> Result<Arc<Plugin>, String> {
        Plugin::start(&self.runtime, compiled, spec, self.services.clone())
            .await
            .map_err(|error| error.to_string())
    }

    async fn load(&self, slot: &PluginSlot) -> Result<Reloaded, ReloadError> {
        let rejected = |cause: String| ReloadError::Rejected {
            plugin: slot.spec.name.to_string(),
            cause,
        };
        let compiled = self.compile(&slot.spec).await.map_err(rejected)?;
        if compiled.hash == slot.current().version() {
            return Ok(Reloaded::Unchanged);
        }
        slot.swap(
            self.instantiate(&slot.spec, compiled)
                .await
                .map_err(rejected)?,
        );
        Ok(Reloaded::Loaded)
    }

    /// Watches the manifest and every plugin's file, and reloads what changes.
    pub fn watch(self: &Arc<Self>) -> notify::Result<()> {
        let (changed, mut to_reload) = mpsc::unbounded_channel::<PathBuf>();
        let debouncer = new_debouncer(DEBOUNCE, None, move |result: DebounceEventResult| {
            let Ok(events) = result else { return };
            // Only writes, creations and renames: reading a file (as a reload
            // does) must not trigger another reload.
            let mut paths: Vec<&PathBuf> = events
                .iter()
                .filter(|event| is_write(&event.kind))
                .flat_map(|event| event.paths.iter())
                .collect();
            paths.sort();
            paths.dedup();
            for path in paths {
                let _ = changed.send(path.clone());
            }
        })?;
        *self
            .watcher
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some((debouncer, HashSet::new()));
        self.watch_directories();
        let reloader = self.clone();
        tokio::spawn(async move {
            while let Some(path) = to_reload.recv().await {
                if path == reloader.manifest_path() {
                    let _ = reloader.reload_manifest().await;
                    continue;
                }
                let names: Vec<String> = reloader
                    .slots()
                    .iter()
                    .filter(|slot| absolute(&slot.spec.wasm) == path)
                    .map(|slot| slot.spec.name.to_string())
                    .collect();
                for name in names {
                    let _ = reloader.reload(&name).await;
                }
            }
        });
        Ok(())
    }

    /// Watches the directories of the manifest and of every plugin file (not
    /// the files: an atomic rename replaces the file, and a watch on the old
    /// inode would see nothing more).
    fn watch_directories(&self) {
        let mut watcher = self
            .watcher
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some((watcher, watched)) = watcher.as_mut() else {
            return;
        };
        let files = self
            .slots()
            .iter()
            .map(|slot| absolute(&slot.spec.wasm))
            .chain([absolute(&self.manifest_path())])
            .collect::<Vec<_>>();
        let directories: HashSet<PathBuf> = files
            .iter()
            .filter_map(|file| file.parent().map(PathBuf::from))
            .collect();
        for directory in directories {
            if !watched.insert(directory.clone()) {
                continue;
            }
            if let Err(error) = watcher.watch(&directory, RecursiveMode::NonRecursive) {
                tracing::warn!(directory = %directory.display(), "cannot watch for plugin changes: {error}");
            }
        }
    }
}

fn is_write(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Create(_)
            | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Name(_) | ModifyKind::Any)
    )
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}
