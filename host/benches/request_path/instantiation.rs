//! What each part of a component costs to instantiate, on an engine set up
//! as comb's (epoch interruption, the pooling allocator with slots kept
//! resident): hand-written components that add one part at a time — a core
//! instance, a linear memory with a data segment, imports that take no
//! memory, an import that takes a string (and so wit-component's shim and
//! fixup: two more core instances and a table) — beside the real
//! `home_activities` plugin, whose imports are left unresolved as traps
//! (instantiation resolves them the same way). Each is a store made,
//! instantiated and dropped, as a fresh-instance request does; the
//! differences between neighbours are the parts' costs. Then the real
//! plugin under each wasmtime setting comb does not choose, one at a time.
//! Results and what they mean: docs/performance.md, "Instantiation, looked
//! at closer".

use criterion::Criterion;
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
    component::{Component, InstancePre, Linker},
};

/// How many imports a bundled Rust plugin has (anatomy.py: 17).
const IMPORTS: usize = 17;

/// A core module with a linear memory of `pages` 64 KiB pages, as a Rust
/// plugin's (17: its 1 MiB stack, then its data), with a data segment past
/// the stack when `data`; `run` returns a string from it.
fn core_module(pages: u32, data: bool) -> String {
    let at = (pages - 1) * 65_536;
    let segment = if data {
        format!(
            r#"(data (i32.const {at}) "{{\"activities\": []}} written once, read by the call")"#
        )
    } else {
        String::new()
    };
    format!(
        r#"(memory (export "memory") {pages})
        {segment}
        (func (export "run") (result i32)
            (i32.store (i32.const 1024) (i32.const {at}))
            (i32.store (i32.const 1028) (i32.const 18))
            (i32.const 1024))"#
    )
}

/// A component of one core module made by [`core_module`].
fn with_memory(pages: u32, data: bool) -> String {
    format!(
        r#"(component
        (core module $m {})
        (core instance $i (instantiate $m))
        (func (export "run") (result string)
            (canon lift (core func $i "run") (memory (core memory $i "memory")))))"#,
        core_module(pages, data)
    )
}

/// The variants, each one part more than the one before it (but the
/// second, which is the third with a smaller memory).
fn variants() -> Vec<(&'static str, String)> {
    let bare = r#"(component
        (core module $m (func (export "run") (result i32) (i32.const 42)))
        (core instance $i (instantiate $m))
        (func (export "run") (result u32) (canon lift (core func $i "run"))))"#
        .to_owned();
    let imports = |with_string: bool| {
        let mut wat = String::from("(component\n");
        let mut module_imports = String::new();
        let mut lowered = String::new();
        for i in 0..IMPORTS {
            wat += &format!("(import \"f{i}\" (func $f{i} (result u64)))\n");
            wat += &format!("(core func $f{i}_lowered (canon lower (func $f{i})))\n");
            module_imports += &format!("(import \"env\" \"f{i}\" (func (result i64)))\n");
            lowered += &format!("(export \"f{i}\" (func $f{i}_lowered))\n");
        }
        if with_string {
            // What wit-component builds for an import that takes a string:
            // its lowering needs the main module's memory, which does not
            // exist until the main module is instantiated with the import,
            // so the import is a stub calling through a table that a third
            // module fills once both exist.
            wat += r#"
                (import "log" (func $log (param "message" string)))
                (core module $shim
                    (type $t (func (param i32 i32)))
                    (table (export "$imports") 1 1 funcref)
                    (func (export "0") (type $t)
                        (call_indirect (type $t) (local.get 0) (local.get 1) (i32.const 0))))
                (core instance $shim (instantiate $shim))
                (core func $log_stub (alias core export $shim "0"))
                (alias core export $shim "$imports" (core table $imports))
            "#;
            module_imports += "(import \"env\" \"log\" (func (param i32 i32)))\n";
            lowered += "(export \"log\" (func $log_stub))\n";
        }
        wat += &format!("(core instance $env {lowered})\n");
        wat += &format!(
            "(core module $m {module_imports} {})\n\
             (core instance $i (instantiate $m (with \"env\" (instance $env))))\n",
            core_module(17, true)
        );
        if with_string {
            wat += r#"
                (core func $log_lowered (canon lower (func $log) (memory (core memory $i "memory"))))
                (core module $fixup
                    (type $t (func (param i32 i32)))
                    (import "" "0" (func (type $t)))
                    (import "" "$imports" (table 1 1 funcref))
                    (elem (i32.const 0) func 0))
                (core instance $fixup_args
                    (export "0" (func $log_lowered))
                    (export "$imports" (table $imports)))
                (core instance (instantiate $fixup (with "" (instance $fixup_args))))
            "#;
        }
        wat += r#"(func (export "run") (result string)
            (canon lift (core func $i "run") (memory (core memory $i "memory")))))"#;
        wat
    };
    vec![
        ("one core instance", bare),
        ("+ a memory of 17 pages", with_memory(17, false)),
        (
            "+ a memory of 2 pages and a data segment",
            with_memory(2, true),
        ),
        (
            "+ a memory of 17 pages and a data segment",
            with_memory(17, true),
        ),
        ("+ 17 imports taking no memory", imports(false)),
        ("+ an import taking a string (shim, fixup)", imports(true)),
    ]
}

/// An engine as comb's `runtime/engine.rs` sets it up, for the parts that
/// touch instantiation; `lever` changes one setting from comb's.
fn engine(pooling: bool, lever: impl FnOnce(&mut Config)) -> Engine {
    let mut config = Config::new();
    config.epoch_interruption(true);
    lever(&mut config);
    if pooling {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(64)
            .total_core_instances(64 * 8)
            .total_memories(128)
            .total_tables(64 * 8)
            .total_stacks(64)
            .max_memory_size(comb::limits::DEFAULT_MEMORY_BYTES)
            .linear_memory_keep_resident(2 << 20)
            .table_keep_resident(128 << 10)
            .pagemap_scan(wasmtime::Enabled::Auto);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    Engine::new(&config).expect("engine")
}

fn pre(engine: &Engine, wasm: &[u8]) -> InstancePre<()> {
    let component = Component::from_binary(engine, wasm).expect("component");
    let mut linker = Linker::<()>::new(engine);
    for i in 0..IMPORTS {
        // Absent from the smaller variants: defining it costs them nothing.
        linker
            .root()
            .func_wrap(&format!("f{i}"), |_, ()| Ok((0u64,)))
            .expect("import");
    }
    linker
        .root()
        .func_wrap("log", |_, (_message,): (String,)| Ok(()))
        .expect("import");
    linker
        .define_unknown_imports_as_traps(&component)
        .expect("traps");
    linker.instantiate_pre(&component).expect("pre")
}

/// A wasmtime setting to try: its name, whether instances are pooled, and
/// what it changes in comb's configuration.
type Lever = (&'static str, bool, fn(&mut Config));

/// A fresh store, the component instantiated in it, the store dropped
/// (which resets the pooling slot).
async fn instantiate_once(engine: &Engine, pre: &InstancePre<()>) {
    let mut store = Store::new(engine, ());
    store.set_epoch_deadline(u64::MAX / 2);
    pre.instantiate_async(&mut store)
        .await
        .expect("instantiate");
}

/// `cargo bench -p comb -- instantiation`.
pub(crate) fn bench(c: &mut Criterion, tokio: &tokio::runtime::Runtime, home_activities: &[u8]) {
    let pooled = engine(true, |_| {});
    let mut group = c.benchmark_group("instantiation, part by part");
    for (name, wat) in variants() {
        let wasm = wat::parse_str(&wat).unwrap_or_else(|e| panic!("{name}: {e}"));
        let pre = pre(&pooled, &wasm);
        group.bench_function(name, |b| {
            b.to_async(tokio).iter(|| instantiate_once(&pooled, &pre))
        });
    }
    let home = pre(&pooled, home_activities);
    group.bench_function("home_activities (3 core instances, 17 imports)", |b| {
        b.to_async(tokio).iter(|| instantiate_once(&pooled, &home))
    });
    group.finish();

    // wasmtime settings comb could choose otherwise, each alone.
    let mut group = c.benchmark_group("instantiating home_activities, one setting changed");
    let levers: [Lever; 3] = [
        ("allocated on demand (no pooling)", false, |_| {}),
        (
            "data segments copied (no copy-on-write image)",
            true,
            |config| {
                config.memory_init_cow(false);
            },
        ),
        ("tables filled eagerly", true, |config| {
            config.table_lazy_init(false);
        }),
    ];
    for (name, pooling, lever) in levers {
        let engine = engine(pooling, lever);
        let pre = pre(&engine, home_activities);
        group.bench_function(name, |b| {
            b.to_async(tokio).iter(|| instantiate_once(&engine, &pre))
        });
    }
    group.finish();
}
