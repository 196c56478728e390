//! The one place the WIT world is turned into Rust: host traits for the
//! imports, typed wrappers for the plugin's exports.

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
