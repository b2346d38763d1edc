//! The wasmtime engine: configuration, precompilation and the epoch ticker.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances. Deadlines are checked, and long-running guests yield to the
/// executor, once per tick: 10 ms bounds deadline overshoot and keeps the check cheap.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Concurrent component instances the pool holds. Each Rust wasip2 component uses a few core
/// instances and one memory; the pooling allocator reserves virtual (not resident) memory per slot.
const POOL_COMPONENT_INSTANCES: u32 = 1000;
const POOL_CORE_INSTANCES: u32 = 4000;
const POOL_MEMORIES: u32 = 1000;
const POOL_TABLES: u32 = 2000;

/// Largest linear memory of one instance: the wasm32 ceiling; manifests set lower limits that
/// the store's limiter enforces.
const MAX_MEMORY_BYTES: usize = 4 << 30;

/// Builds the engine: component model, async, epoch interruption, pooling allocator (falling
/// back to on-demand allocation where the address space cannot hold the pool).
pub(crate) fn new_engine() -> wasmtime::Result<Engine> {
    let mut config = base_config();
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(POOL_COMPONENT_INSTANCES)
        .total_core_instances(POOL_CORE_INSTANCES)
        .total_memories(POOL_MEMORIES)
        .total_tables(POOL_TABLES)
        .total_stacks(POOL_COMPONENT_INSTANCES)
        .max_memory_size(MAX_MEMORY_BYTES);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    match Engine::new(&config) {
        Ok(engine) => Ok(engine),
        Err(e) => {
            tracing::warn!(error = %e, "pooling allocator unavailable; using on-demand allocation");
            Engine::new(&base_config())
        }
    }
}

fn base_config() -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true).epoch_interruption(true);
    config
}

/// A stable key for precompiled artifacts of this engine.
pub(crate) fn compatibility_key(engine: &Engine) -> String {
    let mut hasher = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on its own thread until dropped.
pub(crate) struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub(crate) fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("slmfn-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawning the epoch thread");
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
