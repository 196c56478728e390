//! The one place the WIT worlds are turned into Rust: host traits for the
//! imports, typed wrappers for the plugin's exports. [`v0_1`] is the world
//! plugins built against WIT 0.1 were made for; the host adapts them (see
//! `runtime::compat`).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    imports: { default: async },
    exports: { default: async },
});

pub use switchboard::plugin::types::{Conn, Error as PluginError, Level, Payload};

impl PluginError {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

/// WIT 0.1.2, frozen (`host/wit-0.1`): what plugins built against 0.1 were
/// made for. `runtime::compat` adapts them.
pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "wit-0.1",
        world: "plugin",
        imports: { default: async },
        exports: { default: async },
    });
}
