//! Why a plugin call did not produce a response, as one type. The span,
//! the metrics, the JSON error answer and comb's page all read it, and
//! nothing re-parses strings: `error.type` is what users' Honeycomb
//! queries and alerts match on, so its values are a contract, listed in
//! [`ERROR_TYPES`] and in `docs/telemetry.md` (a test keeps them equal).

use http::StatusCode;
use wasmtime::Trap;

use super::{HandlerError, panic::GuestPanic};

/// Every `error.type` comb gives a failed call, each a low-cardinality
/// constant.
pub const ERROR_TYPES: &[&str] = &[
    PLUGIN_ERROR,
    WASM_PANIC,
    DEADLINE,
    FUEL,
    MEMORY,
    RESOURCES,
    INSTANTIATE,
    HOST_ERROR,
    OVERLOADED,
    RESPONSE_TOO_LARGE,
    INVALID_RESPONSE,
    "wasm.trap.stack_overflow",
    "wasm.trap.memory_out_of_bounds",
    "wasm.trap.heap_misaligned",
    "wasm.trap.table_out_of_bounds",
    "wasm.trap.indirect_call_to_null",
    "wasm.trap.bad_signature",
    "wasm.trap.integer_overflow",
    "wasm.trap.integer_division_by_zero",
    "wasm.trap.bad_conversion_to_integer",
    "wasm.trap.unreachable_code_reached",
    "wasm.trap.null_reference",
    "wasm.trap.array_out_of_bounds",
    "wasm.trap.allocation_too_large",
    "wasm.trap.cast_failure",
    "wasm.trap.cannot_enter_component",
    "wasm.trap.cannot_leave_component",
    OTHER_TRAP,
];

const PLUGIN_ERROR: &str = "plugin.error";
const WASM_PANIC: &str = "wasm.panic";
const DEADLINE: &str = "wasm.trap.deadline";
const FUEL: &str = "wasm.trap.fuel";
const MEMORY: &str = "wasm.memory_limit";
const RESOURCES: &str = "wasm.resource_limit";
const INSTANTIATE: &str = "wasm.instantiate";
const HOST_ERROR: &str = "wasm.host_error";
const OVERLOADED: &str = "plugin.overloaded";
const RESPONSE_TOO_LARGE: &str = "plugin.response_too_large";
const INVALID_RESPONSE: &str = "plugin.invalid_response";
const OTHER_TRAP: &str = "wasm.trap.other";

/// Why a call into a plugin did not produce a (valid) response.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InvokeError {
    /// The plugin returned `handler-error`.
    #[error("{}", guest_message(.0))]
    Guest(HandlerError),
    /// The plugin trapped: a panic, `unreachable`, an out-of-bounds access...
    #[error("{}: {message}", kind.error_type())]
    Trap {
        /// What kind of trap.
        kind: TrapKind,
        /// What happened, with the guest's panic message when there was one.
        message: String,
        /// The wasm backtrace, when wasmtime captured one.
        backtrace: Option<Backtrace>,
    },
    /// The call ran past its deadline, in guest code or in a host call.
    #[error("deadline exceeded")]
    Deadline {
        /// The wasm backtrace, when the guest was interrupted in its code.
        backtrace: Option<Backtrace>,
    },
    /// The guest asked for more linear memory than its limit.
    #[error("{message}")]
    Memory {
        /// The limit and what was asked for.
        message: String,
        /// The wasm backtrace, when wasmtime captured one.
        backtrace: Option<Backtrace>,
    },
    /// The guest held more host-side resources (handles) than its limit.
    #[error("{message}")]
    Resources {
        /// The limit.
        message: String,
        /// The wasm backtrace, when wasmtime captured one.
        backtrace: Option<Backtrace>,
    },
    /// The call consumed all of its fuel.
    #[error("fuel exhausted")]
    Fuel {
        /// The wasm backtrace, when wasmtime captured one.
        backtrace: Option<Backtrace>,
    },
    /// Instantiation failed (not a trap).
    #[error("instantiation failed: {0}")]
    Instantiate(String),
    /// A host call failed, or the call ended abnormally: comb's fault, not
    /// the guest's.
    #[error("host error: {0}")]
    Host(String),
    /// Every instance slot is busy: try again shortly.
    #[error("every instance slot is busy")]
    Overloaded,
    /// The response body is larger than the plugin's limit.
    #[error("the response body is larger than {limit} bytes")]
    ResponseTooLarge {
        /// The limit, bytes.
        limit: usize,
    },
    /// The response is not valid HTTP (a status, headers past their limits).
    #[error("invalid response: {0}")]
    InvalidResponse(#[from] InvalidResponse),
}

/// Why a plugin's answer cannot be sent as an HTTP response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidResponse {
    /// Not a final status (1xx are comb's to send, not a plugin's).
    #[error("status {0} is not a final HTTP status")]
    Status(u16),
    /// More headers than a response may carry.
    #[error("{count} headers, more than the {max} allowed")]
    TooManyHeaders {
        /// The headers the plugin sent.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// More header bytes (names and values) than a response may carry.
    #[error("{bytes} bytes of headers, more than the {max} allowed")]
    HeadersTooLarge {
        /// The bytes the plugin sent.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// A header name that is not a token (its first 64 bytes).
    #[error("invalid header name {0:?}")]
    HeaderName(String),
    /// A header value with bytes a header may not hold; named by its header.
    #[error("invalid value for header {0}")]
    HeaderValue(String),
}

/// The kind of a trap that is not one of comb's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TrapKind {
    /// A Rust panic (its message was on stderr).
    Panic,
    /// A wasm trap.
    Wasm(Trap),
}

impl TrapKind {
    /// `wasm.panic` or `wasm.trap.<kind>` in snake case; `wasm.trap.other`
    /// for kinds a Rust or C guest does not raise.
    pub(crate) fn error_type(self) -> &'static str {
        let TrapKind::Wasm(trap) = self else {
            return WASM_PANIC;
        };
        match trap {
            Trap::StackOverflow => "wasm.trap.stack_overflow",
            Trap::MemoryOutOfBounds => "wasm.trap.memory_out_of_bounds",
            Trap::HeapMisaligned => "wasm.trap.heap_misaligned",
            Trap::TableOutOfBounds => "wasm.trap.table_out_of_bounds",
            Trap::IndirectCallToNull => "wasm.trap.indirect_call_to_null",
            Trap::BadSignature => "wasm.trap.bad_signature",
            Trap::IntegerOverflow => "wasm.trap.integer_overflow",
            Trap::IntegerDivisionByZero => "wasm.trap.integer_division_by_zero",
            Trap::BadConversionToInteger => "wasm.trap.bad_conversion_to_integer",
            Trap::UnreachableCodeReached => "wasm.trap.unreachable_code_reached",
            Trap::NullReference => "wasm.trap.null_reference",
            Trap::ArrayOutOfBounds => "wasm.trap.array_out_of_bounds",
            Trap::AllocationTooLarge => "wasm.trap.allocation_too_large",
            Trap::CastFailure => "wasm.trap.cast_failure",
            Trap::CannotEnterComponent => "wasm.trap.cannot_enter_component",
            Trap::CannotLeaveComponent => "wasm.trap.cannot_leave_component",
            _ => OTHER_TRAP,
        }
    }
}

/// A wasm backtrace as wasmtime captured it, innermost call first, kept as
/// frames: the invocation span prints it, Rollbar sends its frames, and
/// nothing reads the text back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backtrace {
    /// The calls, innermost first.
    pub frames: Vec<Frame>,
}

/// One call in a [`Backtrace`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The module's name (`faulty.wasm`), when it has one.
    pub module: Option<String>,
    /// The function: its demangled name, or `<wasm function N>`.
    pub function: String,
    /// Where in the module, bytes.
    pub offset: Option<usize>,
    /// The source file, line and column, when the module has line tables.
    pub file: Option<String>,
    /// See `file`.
    pub line: Option<u32>,
    /// See `file`.
    pub column: Option<u32>,
}

impl From<&wasmtime::WasmBacktrace> for Backtrace {
    fn from(backtrace: &wasmtime::WasmBacktrace) -> Self {
        let frames = (backtrace.frames().iter())
            .map(|frame| {
                let symbol = frame.symbols().first();
                let name = (symbol.and_then(|symbol| symbol.name())).or(frame.func_name());
                Frame {
                    module: frame.module().name().map(str::to_owned),
                    function: match name {
                        Some(name) => rustc_demangle::demangle(name).to_string(),
                        None => format!("<wasm function {}>", frame.func_index()),
                    },
                    offset: frame.module_offset(),
                    file: symbol.and_then(|symbol| symbol.file()).map(str::to_owned),
                    line: symbol.and_then(|symbol| symbol.line()),
                    column: symbol.and_then(|symbol| symbol.column()),
                }
            })
            .collect();
        Backtrace { frames }
    }
}

/// As wasmtime prints a backtrace: one line per frame, innermost first
/// (`  2:   0x1a2b - p.wasm!p::handle`), and `at FILE:LINE:COLUMN` under
/// a frame that has a source location.
impl std::fmt::Display for Backtrace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "error while executing at wasm backtrace:")?;
        for (i, frame) in self.frames.iter().enumerate() {
            write!(f, "\n  {i:>3}: ")?;
            if let Some(offset) = frame.offset {
                write!(f, "{offset:#8x} - ")?;
            }
            let module = frame.module.as_deref().unwrap_or("<unknown>");
            write!(f, "{module}!{}", frame.function)?;
            if let Some(file) = &frame.file {
                write!(f, "\n                    at {file}")?;
                if let Some(line) = frame.line {
                    write!(f, ":{line}")?;
                    if let Some(column) = frame.column {
                        write!(f, ":{column}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

fn guest_message(error: &HandlerError) -> String {
    match error {
        HandlerError::BadRequest(message) => format!("bad request: {message}"),
        HandlerError::Internal(message) => format!("plugin error: {message}"),
    }
}

impl InvokeError {
    /// The low-cardinality `error.type` of this failure.
    pub(crate) fn error_type(&self) -> &'static str {
        match self {
            InvokeError::Guest(_) => PLUGIN_ERROR,
            InvokeError::Trap { kind, .. } => kind.error_type(),
            InvokeError::Deadline { .. } => DEADLINE,
            InvokeError::Memory { .. } => MEMORY,
            InvokeError::Resources { .. } => RESOURCES,
            InvokeError::Fuel { .. } => FUEL,
            InvokeError::Instantiate(_) => INSTANTIATE,
            InvokeError::Host(_) => HOST_ERROR,
            InvokeError::Overloaded => OVERLOADED,
            InvokeError::ResponseTooLarge { .. } => RESPONSE_TOO_LARGE,
            InvokeError::InvalidResponse(_) => INVALID_RESPONSE,
        }
    }

    /// Which of comb's limits ended the call (`plugin.limit.hit`), if one did.
    pub(crate) fn limit_hit(&self) -> Option<&'static str> {
        match self {
            InvokeError::Deadline { .. } => Some("deadline"),
            InvokeError::Fuel { .. } => Some("fuel"),
            InvokeError::Memory { .. } => Some("memory"),
            InvokeError::Resources { .. } => Some("host_resources"),
            InvokeError::Overloaded => Some("concurrency"),
            InvokeError::ResponseTooLarge { .. } => Some("response_body"),
            _ => None,
        }
    }

    /// The status comb answers with, and the stable `code` of the JSON
    /// error body.
    pub(crate) fn answer(&self) -> (StatusCode, &'static str) {
        match self {
            InvokeError::Guest(HandlerError::BadRequest(_)) => {
                (StatusCode::BAD_REQUEST, "bad_request")
            }
            InvokeError::Guest(HandlerError::Internal(_)) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "plugin_error")
            }
            InvokeError::Trap { .. } | InvokeError::Host(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "plugin_trapped")
            }
            InvokeError::Deadline { .. } => (StatusCode::GATEWAY_TIMEOUT, "deadline_exceeded"),
            InvokeError::Memory { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "memory_limit"),
            InvokeError::Resources { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "resource_limit"),
            InvokeError::Fuel { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "fuel_exhausted"),
            InvokeError::Instantiate(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "instantiate_failed")
            }
            InvokeError::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            InvokeError::ResponseTooLarge { .. } => {
                (StatusCode::INTERNAL_SERVER_ERROR, "response_too_large")
            }
            InvokeError::InvalidResponse(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "invalid_response")
            }
        }
    }

    /// Whether the failure is the client's (a plugin's `bad-request`): the
    /// invocation span's status stays unset, as for any 4xx.
    pub(crate) fn is_client_error(&self) -> bool {
        matches!(self, InvokeError::Guest(HandlerError::BadRequest(_)))
    }

    /// The wasm backtrace, when the failure was a trap that has one.
    pub(crate) fn backtrace(&self) -> Option<&Backtrace> {
        match self {
            InvokeError::Trap { backtrace, .. }
            | InvokeError::Deadline { backtrace }
            | InvokeError::Memory { backtrace, .. }
            | InvokeError::Resources { backtrace, .. }
            | InvokeError::Fuel { backtrace } => backtrace.as_ref(),
            _ => None,
        }
    }

    /// Whether the guest's code stopped abnormally, so the span gets an
    /// `exception` event.
    pub(crate) fn is_trap(&self) -> bool {
        matches!(
            self,
            InvokeError::Trap { .. }
                | InvokeError::Deadline { .. }
                | InvokeError::Memory { .. }
                | InvokeError::Resources { .. }
                | InvokeError::Fuel { .. }
                | InvokeError::Host(_)
        )
    }

    /// Where a Rust guest panicked and what it said, when it did.
    pub fn panic(&self) -> Option<GuestPanic<'_>> {
        match self {
            InvokeError::Trap {
                kind: TrapKind::Panic,
                message,
                ..
            } => GuestPanic::parse(message),
            _ => None,
        }
    }

    /// The text for the span's status and the error answer: the guest's
    /// message where it has one.
    pub(crate) fn message(&self) -> String {
        match self {
            InvokeError::Guest(
                HandlerError::BadRequest(message) | HandlerError::Internal(message),
            )
            | InvokeError::Trap { message, .. }
            | InvokeError::Memory { message, .. }
            | InvokeError::Resources { message, .. }
            | InvokeError::Instantiate(message)
            | InvokeError::Host(message) => message.clone(),
            InvokeError::InvalidResponse(reason) => reason.to_string(),
            other => other.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_failure() -> Vec<InvokeError> {
        let mut all = vec![
            InvokeError::Guest(HandlerError::BadRequest("b".into())),
            InvokeError::Guest(HandlerError::Internal("i".into())),
            InvokeError::Deadline { backtrace: None },
            InvokeError::Memory {
                message: "m".into(),
                backtrace: None,
            },
            InvokeError::Fuel { backtrace: None },
            InvokeError::Resources {
                message: "r".into(),
                backtrace: None,
            },
            InvokeError::Instantiate("i".into()),
            InvokeError::Host("h".into()),
            InvokeError::Overloaded,
            InvokeError::ResponseTooLarge { limit: 1 },
            InvokeError::InvalidResponse(InvalidResponse::Status(99)),
            InvokeError::Trap {
                kind: TrapKind::Panic,
                message: "p".into(),
                backtrace: None,
            },
        ];
        for trap in [
            Trap::StackOverflow,
            Trap::UnreachableCodeReached,
            Trap::IntegerDivisionByZero,
            Trap::MemoryOutOfBounds,
            Trap::AsyncDeadlock,
        ] {
            all.push(InvokeError::Trap {
                kind: TrapKind::Wasm(trap),
                message: String::new(),
                backtrace: None,
            });
        }
        all
    }

    #[test]
    fn every_error_type_is_listed_and_documented() {
        for failure in every_failure() {
            assert!(
                ERROR_TYPES.contains(&failure.error_type()),
                "{failure:?} has an unlisted error.type"
            );
        }
        let docs = include_str!("../../../docs/telemetry.md");
        for error_type in ERROR_TYPES {
            assert!(
                docs.contains(&format!("`{error_type}`")),
                "docs/telemetry.md does not list `{error_type}`"
            );
        }
    }

    #[test]
    fn trap_types_are_snake_case_constants() {
        assert_eq!(
            TrapKind::Wasm(Trap::UnreachableCodeReached).error_type(),
            "wasm.trap.unreachable_code_reached"
        );
        assert_eq!(
            TrapKind::Wasm(Trap::StackOverflow).error_type(),
            "wasm.trap.stack_overflow"
        );
        assert_eq!(
            TrapKind::Wasm(Trap::AsyncDeadlock).error_type(),
            "wasm.trap.other"
        );
    }

    #[test]
    fn limits_and_answers_follow_the_failure() {
        let deadline = InvokeError::Deadline { backtrace: None };
        assert_eq!(deadline.limit_hit(), Some("deadline"));
        assert_eq!(deadline.answer().0, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(InvokeError::Overloaded.answer().0, 503);
        assert!(InvokeError::Guest(HandlerError::BadRequest("x".into())).is_client_error());
        assert_eq!(
            InvokeError::ResponseTooLarge { limit: 1 }.limit_hit(),
            Some("response_body")
        );
    }
}
