//! The running version of one plugin. A reload swaps it atomically: a call
//! takes the current version and finishes on it, even if a swap happens
//! while it runs; the next call gets the new one.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use serde::Serialize;

use super::Plugin;
use crate::manifest::PluginSpec;

pub struct PluginSlot {
    pub spec: PluginSpec,
    current: ArcSwap<Plugin>,
    status: Mutex<PluginStatus>,
}

/// What `GET /api/v1/plugins` reports for one plugin.
#[derive(Clone, Serialize)]
pub struct PluginStatus {
    pub name: String,
    /// SHA-256 of the running component.
    pub version: String,
    /// When the running version was loaded, in ms since the Unix epoch.
    pub loaded_at_ms: u64,
    /// `"loaded"`, `"unchanged"` or `"failed"`; `None` before the first reload.
    pub last_reload: Option<&'static str>,
    /// Why the last reload failed.
    pub last_error: Option<String>,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

impl PluginSlot {
    pub fn new(spec: PluginSpec, plugin: Arc<Plugin>) -> Self {
        let status = PluginStatus {
            name: spec.name.to_string(),
            version: plugin.version().to_owned(),
            loaded_at_ms: now_ms(),
            last_reload: None,
            last_error: None,
        };
        Self {
            spec,
            current: ArcSwap::new(plugin),
            status: Mutex::new(status),
        }
    }

    pub fn current(&self) -> Arc<Plugin> {
        self.current.load_full()
    }

    pub fn status(&self) -> PluginStatus {
        self.status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Makes `plugin` the running version.
    pub fn swap(&self, plugin: Arc<Plugin>) {
        let mut status = self
            .status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        status.version = plugin.version().to_owned();
        status.loaded_at_ms = now_ms();
        status.last_reload = Some("loaded");
        status.last_error = None;
        self.current.store(plugin);
    }

    /// Records a reload that changed nothing (`error: None`) or failed.
    pub fn record(&self, error: Option<String>) {
        let mut status = self
            .status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        status.last_reload = Some(if error.is_some() {
            "failed"
        } else {
            "unchanged"
        });
        status.last_error = error;
    }
}
