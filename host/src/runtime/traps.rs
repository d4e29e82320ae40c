//! Why a call failed, read from wasmtime's error: one of comb's limits, a
//! trap (with the guest's own panic message when it wrote one), every pool
//! slot busy, or a failure to instantiate.

use wasmtime::{Store, Trap, WasmBacktrace, component::ResourceTableError};

use super::{Backtrace, InvokeError, TrapKind, state::InvocationState};
use crate::limits::MemoryLimitExceeded;

/// A failed instantiation (or proxy call) as an [`InvokeError`]: every
/// pool slot busy, a trap (with the guest's panic message), or else a
/// failure to instantiate.
pub(super) fn call_error(error: wasmtime::Error, store: &Store<InvocationState>) -> InvokeError {
    if is_pool_exhausted(&error) {
        InvokeError::Overloaded
    } else if error.downcast_ref::<Trap>().is_some()
        || error.is::<MemoryLimitExceeded>()
        || error.is::<ResourceTableError>()
    {
        trap(error, &store.data().log().stderr())
    } else {
        InvokeError::Instantiate(format!("{error:#}"))
    }
}

/// Turns a failed call into an [`InvokeError`]: one of comb's limits, or
/// a trap, preferring the guest's own panic message (Rust writes it to
/// stderr before aborting).
pub(super) fn trap(error: wasmtime::Error, stderr: &str) -> InvokeError {
    let backtrace = error.downcast_ref::<WasmBacktrace>().map(Backtrace::from);
    if let Some(limit) = error.downcast_ref::<MemoryLimitExceeded>() {
        return InvokeError::Memory {
            message: limit.to_string(),
            backtrace,
        };
    }
    if let Some(ResourceTableError::Full) = error.downcast_ref::<ResourceTableError>() {
        return InvokeError::Resources {
            message: "the plugin holds as many host resources (handles) as its \
                      limit allows (--max-host-resources)"
                .to_owned(),
            backtrace,
        };
    }
    let panic = super::panic::report(stderr);
    match (panic, error.downcast_ref::<Trap>()) {
        (_, Some(Trap::Interrupt)) => InvokeError::Deadline { backtrace },
        (_, Some(Trap::OutOfFuel)) => InvokeError::Fuel { backtrace },
        (Some(panic), _) => InvokeError::Trap {
            kind: TrapKind::Panic,
            message: panic,
            backtrace,
        },
        (None, Some(trap)) => InvokeError::Trap {
            kind: TrapKind::Wasm(*trap),
            message: trap.to_string(),
            backtrace,
        },
        (None, None) => InvokeError::Host(format!("{error:#}")),
    }
}

/// Whether instantiation failed because every pooling slot is in use.
fn is_pool_exhausted(error: &wasmtime::Error) -> bool {
    error
        .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_message_wins_over_the_trap() {
        let error = wasmtime::Error::from(Trap::UnreachableCodeReached);
        let stderr = "\nthread '<unnamed>' panicked at src/lib.rs:20:32:\nboom\nnote: run with RUST_BACKTRACE=1\n";
        match trap(error, stderr) {
            InvokeError::Trap { kind, message, .. } => {
                assert_eq!(kind, TrapKind::Panic);
                assert!(
                    message.starts_with("thread '<unnamed>' panicked at src/lib.rs:20:32:\nboom")
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
