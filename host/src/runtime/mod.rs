//! Running plugins: one [`wasmtime::Engine`] and [`Linker`] per process
//! ([`engine`]), compiled components with a precompiled-code cache ([`cache`]),
//! the per-instance store data ([`instance`]), pools of warm instances
//! ([`plugin`]), the threads plugin calls run on ([`executor`]), the memory
//! all instances share ([`budget`]), and components built against WIT 0.1
//! served through the 0.2 host ([`compat`]).

mod budget;
mod cache;
mod compat;
mod engine;
mod executor;
mod exports;
mod instance;
mod placement;
mod plugin;
mod refusals;
mod slot;

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::{HasSelf, InstancePre, Linker};

use crate::bindings;
use crate::manifest::PluginSpec;
pub use exports::Export;
pub use instance::{InstanceState, Meter, PluginContext};
pub use plugin::{CallError, Plugin};
pub use slot::{PluginSlot, PluginStatus, now_ms};

/// The WIT world every plugin must implement (or its 0.1 version).
pub const WORLD: &str = "switchboard:plugin/plugin@0.2.1";

/// Why a component could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read plugin file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a valid WebAssembly component: {source:#}", path.display())]
    Compile {
        path: PathBuf,
        #[source]
        source: wasmtime::Error,
    },
    #[error(
        "{} does not implement the world `{WORLD}` (nor its 0.1 version): {source:#}. Build it against wit/plugin.wit, e.g. with the switchboard SDK",
        path.display()
    )]
    WrongWorld {
        path: PathBuf,
        #[source]
        source: wasmtime::Error,
    },
    #[error(
        "{} does not export `{export}`, which its HTTP routes need; implement `on_http` (SDK) or remove the routes",
        path.display()
    )]
    MissingExport { path: PathBuf, export: Export },
}

/// A component compiled and checked against the world, ready to instantiate.
#[derive(Clone)]
pub struct CompiledPlugin {
    /// SHA-256 of the `.wasm` file, hex: the plugin's version.
    pub hash: String,
    pre: InstancePre<InstanceState>,
    exports: exports::ExportIndices,
}

impl CompiledPlugin {
    pub fn exports(&self, export: Export) -> bool {
        self.exports.has(export)
    }
}

/// The engine, the linker with every host interface, the code cache, the
/// plugin threads and the plugin memory budget.
pub struct Runtime {
    engine: Engine,
    ticker: Arc<engine::Ticker>,
    linker: Linker<InstanceState>,
    cache: cache::CodeCache,
    executor: Arc<executor::Executor>,
    budget: Arc<budget::MemoryBudget>,
}

impl Runtime {
    /// `cache_dir: None` uses the default cache directory;
    /// `plugin_memory_bytes` is what all instances may hold together;
    /// `threads`: how many run plugin code.
    pub fn new(
        cache_dir: Option<PathBuf>,
        plugin_memory_bytes: usize,
        threads: NonZeroUsize,
    ) -> wasmtime::Result<Self> {
        let (engine, ticker) = engine::new_engine()?;
        let mut linker = Linker::new(&engine);
        // Rust's std imports WASI even when a plugin uses none of it; the
        // context linked here grants no files, network or environment.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        bindings::Plugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)?;
        bindings::v0_1::Plugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)?;
        let cache =
            cache::CodeCache::new(&engine, cache_dir.or_else(cache::CodeCache::default_dir));
        Ok(Self {
            engine,
            ticker,
            linker,
            cache,
            executor: Arc::new(executor::Executor::new(threads)?),
            budget: budget::MemoryBudget::new(plugin_memory_bytes),
        })
    }

    /// Compiles `spec`'s component and checks it exports what the manifest
    /// asks of it. CPU-bound: call it off the async executor.
    pub fn compile_plugin(&self, spec: &PluginSpec) -> Result<CompiledPlugin, LoadError> {
        let compiled = self.compile(&spec.wasm)?;
        if !spec.routes.is_empty() && !compiled.exports(Export::HttpHandler) {
            return Err(LoadError::MissingExport {
                path: spec.wasm.clone(),
                export: Export::HttpHandler,
            });
        }
        Ok(compiled)
    }

    /// Reads, compiles (or loads from the cache) and type-checks a component.
    fn compile(&self, path: &Path) -> Result<CompiledPlugin, LoadError> {
        let wasm = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.to_owned(),
            source,
        })?;
        let digest = Sha256::digest(&wasm);
        let hash = format!("{digest:x}");
        let component = self
            .cache
            .load(&self.engine, &wasm, &digest.into())
            .map_err(|source| LoadError::Compile {
                path: path.to_owned(),
                source,
            })?;
        let wrong_world = |source| LoadError::WrongWorld {
            path: path.to_owned(),
            source,
        };
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(wrong_world)?;
        let exports = exports::ExportIndices::new(&instance_pre).map_err(wrong_world)?;
        Ok(CompiledPlugin {
            hash,
            pre: instance_pre,
            exports,
        })
    }
}
