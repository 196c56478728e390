//! The process-wide wasmtime `Engine` and its epoch ticker.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use wasmtime::{Config, Engine, EngineWeak};

/// How often the epoch advances while a guest runs: how long a guest runs
/// before it yields and its deadline is checked. Short, because a call
/// waiting for a plugin thread waits up to a tick behind a guest that
/// computes.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Builds the engine every plugin runs on: component model and epoch
/// interruption (a looping plugin is stopped at its deadline).
pub fn new_engine() -> wasmtime::Result<(Engine, Arc<Ticker>)> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    let engine = Engine::new(&config)?;
    let ticker = Arc::new(Ticker::start(&engine));
    Ok((engine, ticker))
}

/// Advances the epoch every tick while a guest runs, and sleeps otherwise:
/// ticking every millisecond when idle would cost about 1 % of a core. A
/// plain thread, so a busy async runtime cannot delay the deadline of a
/// runaway plugin. It stops when the [`Ticker`] is dropped: the runtime and
/// every plugin hold it.
pub struct Ticker {
    shared: Arc<Shared>,
}

/// Keeps the epoch advancing until it is dropped.
pub struct Running {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    running: usize,
    stopped: bool,
}

impl Ticker {
    fn start(engine: &Engine) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let ticking = shared.clone();
        let engine = engine.weak();
        std::thread::Builder::new()
            .name("switchboard-epoch".into())
            .spawn(move || ticking.tick(&engine))
            .expect("spawning the epoch ticker thread");
        Self { shared }
    }

    /// Call before guest code runs; keep the result until it stops.
    pub fn running(&self) -> Running {
        let mut state = self.shared.lock();
        state.running += 1;
        if state.running == 1 {
            self.shared.changed.notify_all();
        }
        Running {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.shared.lock().stopped = true;
        self.shared.changed.notify_all();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shared.lock().running -= 1;
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The ticker thread.
    fn tick(&self, engine: &EngineWeak) {
        loop {
            {
                let mut state = self.lock();
                while state.running == 0 && !state.stopped {
                    state = self
                        .changed
                        .wait(state)
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                }
                if state.running == 0 {
                    return;
                }
            }
            // A tick after the first guest starts, not at once: a short call
            // then finishes without ever yielding.
            std::thread::sleep(EPOCH_TICK);
            let Some(engine) = engine.upgrade() else {
                return;
            };
            engine.increment_epoch();
        }
    }
}
