//! The process-wide wasmtime `Engine` and its epoch ticker.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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

/// Advances the epoch every tick while guests run, and sleeps once none has
/// run for [`IDLE_TICKS`]: ticking every millisecond when idle would cost
/// about 1 % of a core, and waking it for every call would cost more than
/// the call. A plain thread, so a busy async runtime cannot delay the
/// deadline of a runaway plugin. It stops when the [`Ticker`] is dropped:
/// the runtime and every plugin hold it.
pub struct Ticker {
    shared: Arc<Shared>,
}

/// Keeps the epoch advancing until it is dropped.
pub struct Running {
    shared: Arc<Shared>,
}

/// Ticks without a guest before the ticker sleeps: guests called a hundred
/// times a second or more keep it awake, so their calls need not wake it,
/// and sparser calls pay a wake each (a few microseconds) rather than the
/// ticker's thousand a second between them (3 % of the CPU of a fanout of
/// ten messages a second with 100 ticks here).
const IDLE_TICKS: u32 = 10;

#[derive(Default)]
struct Shared {
    running: AtomicUsize,
    /// Whether the ticker sleeps (or is about to), so a guest must wake it.
    asleep: AtomicBool,
    stopped: AtomicBool,
    lock: Mutex<()>,
    woken: Condvar,
}

impl Ticker {
    fn start(engine: &Engine) -> Self {
        let shared = Arc::new(Shared::default());
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
        let shared = &self.shared;
        // SeqCst here and in `sleep`: either the ticker sees this guest or
        // this guest sees the ticker asleep.
        shared.running.fetch_add(1, Ordering::SeqCst);
        if shared.asleep.load(Ordering::SeqCst) {
            shared.wake();
        }
        Running {
            shared: shared.clone(),
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.shared.wake();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shared.running.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, ()> {
        self.lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn wake(&self) {
        let _locked = self.lock();
        self.woken.notify_all();
    }

    /// Waits for a guest; false once stopped with none running.
    fn sleep(&self) -> bool {
        let mut locked = self.lock();
        self.asleep.store(true, Ordering::SeqCst);
        while self.running.load(Ordering::SeqCst) == 0 && !self.stopped.load(Ordering::SeqCst) {
            locked = self
                .woken
                .wait(locked)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        self.asleep.store(false, Ordering::SeqCst);
        self.running.load(Ordering::SeqCst) > 0
    }

    /// The ticker thread.
    fn tick(&self, engine: &EngineWeak) {
        let mut idle = IDLE_TICKS;
        loop {
            if self.running.load(Ordering::SeqCst) > 0 {
                idle = 0;
            } else if idle >= IDLE_TICKS {
                if !self.sleep() {
                    return;
                }
                idle = 0;
            } else {
                idle += 1;
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
