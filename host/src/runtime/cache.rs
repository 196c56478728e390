//! Cache of precompiled plugin code, keyed by the engine's compatibility hash
//! and the component's SHA-256, so a restart or reload of an unchanged plugin
//! skips compilation.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

pub struct CodeCache {
    dir: Option<PathBuf>,
    engine_key: String,
}

impl CodeCache {
    /// `dir: None` disables caching.
    pub fn new(engine: &Engine, dir: Option<PathBuf>) -> Self {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Self {
            dir,
            engine_key: format!("{:016x}", hasher.finish()),
        }
    }

    /// The default directory: `$XDG_CACHE_HOME/switchboard` or `~/.cache/switchboard`.
    pub fn default_dir() -> Option<PathBuf> {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))?;
        Some(base.join("switchboard"))
    }

    /// Returns the compiled component, from the cache when possible. Cache
    /// problems only cost a compilation; they are logged, never fatal.
    pub fn load(
        &self,
        engine: &Engine,
        wasm: &[u8],
        wasm_hash: &str,
    ) -> wasmtime::Result<Component> {
        let Some(dir) = &self.dir else {
            return Component::new(engine, wasm);
        };
        let path = dir.join(format!("{wasm_hash}-{}.cwasm", self.engine_key));
        if path.exists() {
            // SAFETY: the file was written by `precompile_component` of an engine
            // with the same compatibility hash (it is in the name), into a cache
            // directory only this host writes to.
            #[allow(unsafe_code)]
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => return Ok(component),
                Err(error) => {
                    tracing::warn!(path = %path.display(), "ignoring unusable cached code: {error}")
                }
            }
        }
        let code = engine.precompile_component(wasm)?;
        if let Err(error) = write_atomically(dir, &path, &code) {
            tracing::warn!(dir = %dir.display(), "cannot cache precompiled code: {error}");
        }
        // SAFETY: `code` was produced just above by this engine.
        #[allow(unsafe_code)]
        unsafe {
            Component::deserialize(engine, &code)
        }
    }
}

fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let temporary = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&temporary, bytes)?;
    std::fs::rename(&temporary, path)
}
