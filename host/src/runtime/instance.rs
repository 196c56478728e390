//! What a plugin instance's `Store` holds: its WASI context (which grants
//! nothing), its memory limiter, the host services its imports use and what
//! the running call has done but not committed.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, InsufficientCapacity};

use wasmtime::ResourceLimiterAsync;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::budget::Account;
use super::{CompiledPlugin, Export};
use crate::cluster::{HotKeys, Scope, Transaction};
use crate::host_api::{HostServices, LogRate, PendingEmits};
use crate::manifest::{PluginName, PluginSpec};

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
    /// Keys its calls on this node take in turn.
    pub hot_keys: Arc<HotKeys>,
    /// Whether it exports `timer-handler`, so its timers can be delivered.
    pub receives_timers: bool,
    /// Whether it exports `ack-handler`, so it can ask clients for acks.
    pub receives_acks: bool,
    /// Acks it may wait for at once on this node.
    pub max_pending_acks: usize,
    /// The lines its instances may log.
    pub log_rate: LogRate,
    /// Timers it may have pending.
    pub max_timers: u64,
    /// Its instances' memory limit, which also bounds what one call's
    /// emits, and its state (`state.max_call_bytes`), hold until it returns.
    pub memory_bytes: usize,
}

impl PluginContext {
    pub fn new(spec: &PluginSpec, compiled: &CompiledPlugin) -> Self {
        let limits = &spec.limits;
        Self {
            receives_timers: compiled.exports(Export::TimerHandler),
            receives_acks: compiled.exports(Export::AckHandler),
            max_pending_acks: limits.max_pending_acks,
            state: Scope {
                prefix: format!("plugin:{}:", spec.name),
                max_keys: limits.max_state_keys,
                max_list_items: limits.max_state_list_items,
                max_call_bytes: limits.memory_bytes,
            },
            hot_keys: Arc::default(),
            max_state_value_bytes: limits.max_state_value_bytes,
            config_json: serde_json::Value::Object(spec.config.clone()).to_string(),
            log_rate: LogRate::new(&spec.name, limits.log_lines_per_second),
            max_timers: limits.max_timers,
            memory_bytes: limits.memory_bytes,
            name: spec.name.clone(),
            namespaces: spec.namespaces.clone(),
            config: spec.config.clone(),
        }
    }

    pub fn serves(&self, namespace: &str) -> bool {
        self.namespaces.iter().any(|served| served == namespace)
    }
}

/// Told what each call made for one socket's event cost, so the socket can
/// be held to a budget of plugin time and of bytes sent.
pub trait Meter: Send + Sync {
    /// Time the call's guest code and host calls took (each run of a call
    /// run again counts).
    fn plugin_time(&self, took: Duration);
    /// Bytes of an emit the call made, or of its reply.
    fn output_bytes(&self, bytes: usize);
}

pub struct InstanceState {
    pub(crate) plugin: Arc<PluginContext>,
    pub(crate) services: Arc<HostServices>,
    pub(crate) memory: MemoryLimiter,
    /// When the running call must stop; checked at every epoch tick.
    pub(crate) deadline: Instant,
    /// The running call's state reads and writes, committed when it returns.
    pub(crate) transaction: Transaction,
    /// The running call's emits, sent when it commits.
    pub(crate) pending: PendingEmits,
    /// The last error the running call logged, for a trap to say why.
    pub(crate) last_error: Option<String>,
    /// Told what the running call costs, when a socket's event caused it.
    pub(crate) meter: Option<Arc<dyn Meter>>,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl InstanceState {
    pub fn new(
        plugin: Arc<PluginContext>,
        services: Arc<HostServices>,
        memory: MemoryLimiter,
    ) -> Self {
        Self {
            transaction: Transaction::new(
                services.state.clone(),
                plugin.state.clone(),
                plugin.hot_keys.clone(),
            ),
            pending: PendingEmits::new(plugin.memory_bytes),
            last_error: None,
            meter: None,
            plugin,
            services,
            memory,
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

/// The unit wasm memories grow by.
const WASM_PAGE_BYTES: usize = 64 << 10;

/// Raised inside a call when the plugin tries to grow its memory past the
/// manifest's `limits.memory_mib`; the call traps instead of the guest seeing
/// a failed allocation it may not handle.
#[derive(Debug, thiserror::Error)]
#[error("memory limit of {limit} bytes exceeded (wanted {desired} bytes)")]
pub struct MemoryLimitExceeded {
    pub limit: usize,
    pub desired: usize,
}

/// Keeps each memory of an instance under the plugin's `memory_mib` and
/// charges its growth to the node's plugin memory budget.
pub struct MemoryLimiter {
    limit: usize,
    account: Arc<Account>,
    /// How long a growth waits for budget before the call is aborted.
    wait: Duration,
    /// What this instance holds of the budget, given back when it is dropped.
    charged: usize,
    /// The plugin's `limits.memory_growth_mib_per_second`, in wasm pages,
    /// shared by its instances.
    growth_rate: Arc<DefaultDirectRateLimiter>,
    /// When the running call must stop (its [`InstanceState::deadline`]): a
    /// growth waits for the rate no longer, then the call is interrupted.
    pub(crate) call_deadline: Instant,
}

impl MemoryLimiter {
    pub fn new(
        limit: usize,
        account: Arc<Account>,
        wait: Duration,
        growth_rate: Arc<DefaultDirectRateLimiter>,
    ) -> Self {
        Self {
            limit,
            account,
            wait,
            charged: 0,
            growth_rate,
            call_deadline: Instant::now(),
        }
    }

    /// Waits until the plugin may grow by `bytes` more: a call growing
    /// faster than its plugin's rate is slowed (its time limit still runs),
    /// so the kernel's work on fresh memory stays bounded however many calls
    /// ask for it. An instance's initial memory is not paced: instances
    /// made for a burst of calls are not held back.
    async fn pace(&self, current: usize, bytes: usize) {
        if current == 0 {
            return;
        }
        let pages = u32::try_from(bytes.div_ceil(WASM_PAGE_BYTES)).unwrap_or(u32::MAX);
        let Some(pages) = NonZeroU32::new(pages) else {
            return;
        };
        let paced = async {
            if let Err(InsufficientCapacity(burst)) = self.growth_rate.until_n_ready(pages).await
                && let Some(burst) = NonZeroU32::new(burst)
            {
                // A growth larger than a whole burst waits for a whole burst.
                let _ = self.growth_rate.until_n_ready(burst).await;
            }
        };
        // Past its deadline the call is interrupted at its next epoch tick.
        let deadline = tokio::time::Instant::from_std(self.call_deadline);
        let _ = tokio::time::timeout_at(deadline, paced).await;
    }
}

impl Drop for MemoryLimiter {
    fn drop(&mut self) {
        self.account.release(self.charged);
    }
}

#[async_trait::async_trait]
impl ResourceLimiterAsync for MemoryLimiter {
    async fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            return Err(MemoryLimitExceeded {
                limit: self.limit,
                desired,
            }
            .into());
        }
        // Past the memory's declared maximum wasmtime refuses the growth
        // after asking: refused here, it is never charged.
        if maximum.is_some_and(|maximum| desired > maximum) {
            return Ok(false);
        }
        let growth = desired.saturating_sub(current);
        self.account.charge(growth, self.wait).await?;
        self.charged += growth;
        self.pace(current, growth).await;
        Ok(true)
    }

    async fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}
