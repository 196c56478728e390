//! What a plugin instance's `Store` holds: its WASI context (which grants
//! nothing), its memory limiter, and the host services its imports use.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::cluster::Scope;
use crate::host_api::HostServices;
use crate::manifest::{Limits, PluginName};

/// Per-plugin facts every instance of it shares.
#[derive(Debug)]
pub struct PluginContext {
    pub name: PluginName,
    pub namespaces: Vec<String>,
    pub config: serde_json::Map<String, serde_json::Value>,
    /// `config` as JSON text, for `init` and `config.all`.
    pub config_json: String,
    /// This plugin's state: the prefix that keeps its keys apart from other
    /// plugins', and its quotas.
    pub state: Scope,
    /// Largest state value, list item or key name.
    pub max_state_value_bytes: usize,
    /// Whether it exports `timer-handler`, so its timers can be delivered.
    pub receives_timers: bool,
}

impl PluginContext {
    pub fn new(
        name: PluginName,
        namespaces: Vec<String>,
        config: serde_json::Map<String, serde_json::Value>,
        receives_timers: bool,
        limits: &Limits,
    ) -> Self {
        Self {
            receives_timers,
            state: Scope {
                prefix: format!("plugin:{name}:"),
                max_keys: limits.max_state_keys,
                max_list_items: limits.max_state_list_items,
            },
            max_state_value_bytes: limits.max_state_value_bytes,
            config_json: serde_json::Value::Object(config.clone()).to_string(),
            name,
            namespaces,
            config,
        }
    }

    pub fn serves(&self, namespace: &str) -> bool {
        self.namespaces.iter().any(|served| served == namespace)
    }
}

pub struct InstanceState {
    pub(crate) plugin: Arc<PluginContext>,
    pub(crate) services: Arc<HostServices>,
    pub(crate) memory: MemoryLimiter,
    /// When the running call must stop; checked at every epoch tick.
    pub(crate) deadline: Instant,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl InstanceState {
    pub fn new(
        plugin: Arc<PluginContext>,
        services: Arc<HostServices>,
        memory_bytes: usize,
    ) -> Self {
        Self {
            plugin,
            services,
            memory: MemoryLimiter {
                limit: memory_bytes,
            },
            deadline: Instant::now(),
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
        }
    }
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Raised inside a call when the plugin tries to grow its memory past the
/// manifest's `limits.memory_mib`; the call traps instead of the guest seeing
/// a failed allocation it may not handle.
#[derive(Debug, thiserror::Error)]
#[error("memory limit of {limit} bytes exceeded (wanted {desired} bytes)")]
pub struct MemoryLimitExceeded {
    pub limit: usize,
    pub desired: usize,
}

pub struct MemoryLimiter {
    limit: usize,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            return Err(MemoryLimitExceeded {
                limit: self.limit,
                desired,
            }
            .into());
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}
