//! The wasmtime engines: two (WASI 0.3 components need the component
//! model's concurrency, which comb's own plugins do not pay for), each with
//! the pooling allocator where the machine allows it and comb's imports
//! linked; and the epoch ticker that drives every deadline.

use std::sync::{
    Arc, Condvar, Mutex, PoisonError,
    atomic::{AtomicBool, AtomicUsize, Ordering},
};

use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig,
    component::{Component, InstancePre, Linker},
};

use super::{
    EPOCH_TICK,
    state::{self, InvocationState},
};

/// Instances the pooling allocator keeps slots for (all plugins together).
/// More concurrent calls than this get 503, so the host's memory stays
/// bounded at about slots × the memory limit.
pub(crate) const POOL_INSTANCES: u32 = 256;

/// Slots of the second engine's pool, for WASI 0.3 components (see
/// [`Runtime`]): on top of [`POOL_INSTANCES`].
pub(super) const CONCURRENT_POOL_INSTANCES: u32 = 64;

/// Linear memory (and table bytes) a pooling slot keeps resident between
/// calls. Without it every call faults its pages in and every release
/// `madvise`s them away again — measured as ~40 % of an invocation, all in
/// the kernel. With it (and `PAGEMAP_SCAN`, Linux ≥ 6.7) only the pages a
/// call dirtied are reset, with `memset`, and stay mapped for the next one.
/// Costs up to this much resident memory per warm slot.
const KEEP_RESIDENT_BYTES: usize = 2 << 20;

/// Core instances per component instance a Rust `wasm32-wasip2` plugin
/// needs (its module plus WASI adapter shims), with room to spare.
const CORE_INSTANCES_PER_COMPONENT: u32 = 8;

/// How the engine is set up.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Where compiled code is cached; `None` for no cache.
    pub cache_dir: Option<std::path::PathBuf>,
    /// The largest memory any instance may have (sizes pooling slots).
    pub max_memory_bytes: usize,
    /// Whether calls are metered with fuel.
    pub fuel: bool,
    /// Whether to try the pooling instance allocator.
    pub pooling: bool,
    /// Whether to write compiled guest code's symbols to
    /// `/tmp/perf-PID.map`, where `perf` finds them.
    pub perf_map: bool,
}

/// One engine, and comb's imports linked for it.
pub(super) struct Linked {
    pub(super) engine: Engine,
    pub(super) linker: Linker<InvocationState>,
}

impl Linked {
    /// An engine from `config`, with the component model's concurrency
    /// (and WASI 0.3) when `concurrent`; and whether it pools instances.
    pub(super) fn new(
        mut config: Config,
        settings: &EngineConfig,
        concurrent: bool,
    ) -> anyhow::Result<(Self, bool)> {
        config.concurrency_support(concurrent);
        config.wasm_component_model_async(concurrent);
        let slots = if concurrent {
            CONCURRENT_POOL_INSTANCES
        } else {
            POOL_INSTANCES
        };
        let (engine, pooled) = engine(config, settings, slots)?;
        let mut linker = Linker::new(&engine);
        state::add_to_linker(&mut linker, concurrent)?;
        Ok((Linked { engine, linker }, pooled))
    }

    /// Compiles `wasm` and links it.
    pub(super) fn link(
        &self,
        wasm: &[u8],
    ) -> wasmtime::Result<(Component, InstancePre<InvocationState>)> {
        let component = Component::from_binary(&self.engine, wasm)?;
        let pre = self.linker.instantiate_pre(&component)?;
        Ok((component, pre))
    }
}

/// Whether `component` imports an interface of WASI 0.3 (`wasi:…@0.3.x`).
pub(super) fn imports_wasi_0_3(component: &Component, engine: &Engine) -> bool {
    component
        .component_type()
        .imports(engine)
        .any(|(name, _)| name.starts_with("wasi:") && name.contains("@0.3."))
}

/// The engine, with the pooling allocator when this machine allows it:
/// slots are reserved up front, so instantiating is a few copies instead
/// of mmap calls, and the host's memory has a hard bound. Where virtual
/// memory is too tight (a container with a low ulimit), fall back to
/// allocating on demand, with one log line.
fn engine(
    mut config: Config,
    settings: &EngineConfig,
    slots: u32,
) -> anyhow::Result<(Engine, bool)> {
    if settings.pooling {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(slots)
            .total_core_instances(slots * CORE_INSTANCES_PER_COMPONENT)
            .total_memories(slots * 2)
            .total_tables(slots * CORE_INSTANCES_PER_COMPONENT)
            .total_stacks(slots)
            .max_memory_size(settings.max_memory_bytes)
            .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
            .table_keep_resident(KEEP_RESIDENT_BYTES / 16)
            .pagemap_scan(Enabled::Auto);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        match Engine::new(&config) {
            Ok(engine) => return Ok((engine, true)),
            Err(error) => tracing::warn!(
                "pooling allocator unavailable ({error}); allocating instances on demand"
            ),
        }
        config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
    }
    Ok((Engine::new(&config)?, false))
}

/// Advances the engines' epoch every [`EPOCH_TICK`] on its own thread
/// while any store exists and for [`LINGER_TICKS`] after the last one,
/// which it joins when dropped.
///
/// Why not always: a tick is a wake-up a millisecond, and an idle comb
/// spent a third of its CPU on them (`perf record` of a debug build). Only
/// a store's code reads the epoch (its deadline is checked at the ticks),
/// and every store holds [`Ticks`] from its creation to its drop. The
/// linger keeps one client's requests in a row from waking the thread each.
pub(super) struct EpochTicker {
    shared: Arc<Ticking>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Ticks the thread goes on with after the last store, before it parks.
const LINGER_TICKS: u32 = 100;

/// What the ticker's thread and the stores share.
#[derive(Default)]
struct Ticking {
    /// Stores alive: the thread ticks while there is one.
    stores: AtomicUsize,
    stop: AtomicBool,
    /// Whether the thread waits for a store (and ticks no more).
    parked: AtomicBool,
    /// Held while the thread checks `stores` and parks, and by whoever
    /// wakes it: a store made in between cannot be missed.
    park: Mutex<()>,
    wake: Condvar,
}

impl Ticking {
    fn wake(&self) {
        let _park = self.park.lock().unwrap_or_else(PoisonError::into_inner);
        self.wake.notify_one();
    }
}

/// Keeps the epoch ticking while it lives; every store holds one.
pub(super) struct Ticks(Arc<Ticking>);

impl Drop for Ticks {
    fn drop(&mut self) {
        self.0.stores.fetch_sub(1, Ordering::SeqCst);
    }
}

impl EpochTicker {
    pub(super) fn start(engines: Vec<Engine>) -> Self {
        Self::with_tick(move || engines.iter().for_each(Engine::increment_epoch))
    }

    fn with_tick(tick: impl Fn() + Send + 'static) -> Self {
        let shared = Arc::new(Ticking::default());
        let ticking = shared.clone();
        let thread = std::thread::Builder::new()
            .name("comb-epoch".into())
            .spawn(move || {
                // Parked from the start: no store exists yet.
                let mut idle = LINGER_TICKS;
                loop {
                    if ticking.stores.load(Ordering::SeqCst) == 0 {
                        idle += 1;
                    } else {
                        idle = 0;
                    }
                    if idle > LINGER_TICKS {
                        let mut park = ticking.park.lock().unwrap_or_else(PoisonError::into_inner);
                        while ticking.stores.load(Ordering::SeqCst) == 0
                            && !ticking.stop.load(Ordering::SeqCst)
                        {
                            ticking.parked.store(true, Ordering::SeqCst);
                            park = ticking
                                .wake
                                .wait(park)
                                .unwrap_or_else(PoisonError::into_inner);
                        }
                        ticking.parked.store(false, Ordering::SeqCst);
                        idle = 0;
                    }
                    if ticking.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    std::thread::sleep(EPOCH_TICK);
                    tick();
                }
            })
            .expect("spawning the epoch thread");
        EpochTicker {
            shared,
            thread: Some(thread),
        }
    }

    /// Ticks for a store about to be made, waking the thread if it was the
    /// only one.
    pub(super) fn ticks(&self) -> Ticks {
        if self.shared.stores.fetch_add(1, Ordering::SeqCst) == 0 {
            self.shared.wake();
        }
        Ticks(self.shared.clone())
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_epoch_ticks_only_while_a_store_exists() {
        let count = Arc::new(AtomicUsize::new(0));
        let counted = count.clone();
        let ticker = EpochTicker::with_tick(move || {
            counted.fetch_add(1, Ordering::SeqCst);
        });
        std::thread::sleep(EPOCH_TICK * 20);
        assert_eq!(count.load(Ordering::SeqCst), 0, "no store, no tick");

        let ticks = ticker.ticks();
        let waiting = std::time::Instant::now();
        while count.load(Ordering::SeqCst) < 3 {
            assert!(
                waiting.elapsed() < std::time::Duration::from_secs(30),
                "a store, and no ticks"
            );
            std::thread::sleep(EPOCH_TICK);
        }
        drop(ticks);
        // It lingers a while, then parks and ticks no more.
        let waiting = std::time::Instant::now();
        while !ticker.shared.parked.load(Ordering::SeqCst) {
            assert!(
                waiting.elapsed() < std::time::Duration::from_secs(30),
                "no store, and still ticking"
            );
            std::thread::sleep(EPOCH_TICK);
        }
        let after = count.load(Ordering::SeqCst);
        std::thread::sleep(EPOCH_TICK * 20);
        assert_eq!(count.load(Ordering::SeqCst), after, "parked, yet ticking");

        // Woken again by the next store.
        let _ticks = ticker.ticks();
        let waiting = std::time::Instant::now();
        while count.load(Ordering::SeqCst) < after + 3 {
            assert!(waiting.elapsed() < std::time::Duration::from_secs(30));
            std::thread::sleep(EPOCH_TICK);
        }
    }
}
