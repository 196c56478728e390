//! The process-wide wasmtime `Engine` and its epoch ticker.

use std::time::Duration;

use wasmtime::{Config, Engine};

/// How often the epoch advances: how long a guest runs before it yields and
/// its deadline is checked.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Builds the engine every plugin runs on: component model and epoch interruption (a looping plugin is stopped at its deadline).
pub fn new_engine() -> wasmtime::Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    let engine = Engine::new(&config)?;
    start_epoch_ticker(&engine);
    Ok(engine)
}

/// Advances the epoch until the engine is dropped. A plain thread, so a busy
/// async runtime cannot delay the deadline of a runaway plugin.
fn start_epoch_ticker(engine: &Engine) {
    let engine = engine.weak();
    std::thread::Builder::new()
        .name("switchboard-epoch".into())
        .spawn(move || {
            while let Some(engine) = engine.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawning the epoch ticker thread");
}
