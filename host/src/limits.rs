//! Per-plugin limits: what one call may use before comb ends it.
//!
//! Defaults come from comb's flags; a plugin's sidecar `[limits]` table may
//! change them for that plugin (memory only downwards: the pooling
//! allocator's slots are sized from the flag). Breaching a limit ends that
//! call only, with a status that says which limit: 504 for the deadline,
//! 503 (with `Retry-After`) for concurrency, 413 for the request body, 500
//! for memory, fuel and the response body.

use std::time::Duration;

use serde::Deserialize;

/// The default wall-clock deadline of one call (10 s): far above any sane
/// request handler, low enough that a stuck one frees its slot.
pub(crate) const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);

/// The default linear-memory cap per instance (64 MiB): the bundled plugins
/// use about 1 MiB; a cap bounds the host's memory at slots × cap.
pub const DEFAULT_MEMORY_BYTES: usize = 64 * 1024 * 1024;

/// The default number of calls one plugin may run at once; more get 503.
pub(crate) const DEFAULT_MAX_CONCURRENCY: usize = 64;

/// The default largest request body (1 MiB): Cruddur's bodies are a few
/// hundred bytes; anything near this is a mistake or an attack.
pub(crate) const DEFAULT_MAX_REQUEST_BODY: usize = 1024 * 1024;

/// The default largest response body (8 MiB).
pub(crate) const DEFAULT_MAX_RESPONSE_BODY: usize = 8 * 1024 * 1024;

/// The default time to connect for a plugin's outgoing HTTP call (5 s).
pub(crate) const DEFAULT_HTTP_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The default time an outgoing call waits for the response to start, and
/// then between chunks of its body (30 s).
pub(crate) const DEFAULT_HTTP_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(30);

/// The default time an outgoing call may take in all, body included (60 s).
pub(crate) const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(60);

/// The default longest attribute value a guest may set, in bytes
/// (`OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`); longer strings are cut.
pub(crate) const DEFAULT_ATTRIBUTE_VALUE_LENGTH: usize = 8 * 1024;

/// The default number of attributes a span keeps
/// (`OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT`, the OTel SDKs' 128).
pub(crate) const DEFAULT_SPAN_ATTRIBUTE_COUNT: usize = 128;

/// The default number of spans one call may open (512).
pub(crate) const DEFAULT_SPANS_PER_CALL: usize = 512;

/// Events one span keeps by default (`OTEL_SPAN_EVENT_COUNT_LIMIT`; the
/// SDK's default is 128): all of a call's log lines (up to 256) fit.
pub(crate) const DEFAULT_SPAN_EVENT_COUNT: usize = 512;

/// The default bytes of span names, attributes, events and statuses one
/// call may put into telemetry (256 KiB). A span carries at most this much
/// guest data, so a batch of spans stays far below collectors' 4 MiB
/// message limit per 16 spans, and comb's page, which keeps recent traces,
/// holds a bounded amount.
pub(crate) const DEFAULT_TELEMETRY_BYTES_PER_CALL: usize = 256 * 1024;

/// Host-side resources (handles: WASI streams and pollables, wasi:http
/// header fields, requests, responses and bodies, comb's spans) one call
/// may hold at once. Each costs comb memory outside the guest's linear
/// memory, so it is bounded as that is.
pub const DEFAULT_MAX_HOST_RESOURCES: usize = 1000;

/// Bytes of names and values one wasi:http header-fields resource may hold:
/// comb's cap on a response's headers, so a header map a plugin builds
/// costs at most that.
pub(crate) const MAX_FIELDS_BYTES: usize = 64 * 1024;

/// Table elements an instance may grow to: generous for Rust guests'
/// indirect-call tables, small enough to bound the host.
pub(crate) const MAX_TABLE_ELEMENTS: usize = 100_000;

/// The limits one plugin's calls run under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock time for instantiation plus the call.
    pub deadline: Duration,
    /// Linear memory, all memories of the instance together.
    pub memory_bytes: usize,
    /// Fuel per call, when fuel metering is on.
    pub fuel: Option<u64>,
    /// Calls running at once.
    pub max_concurrency: usize,
    /// Request body size.
    pub max_request_body: usize,
    /// Response body size.
    pub max_response_body: usize,
    /// Outgoing HTTP calls.
    pub http: HttpTimeouts,
    /// What the guest may put into telemetry.
    pub telemetry: TelemetryLimits,
    /// Host-side resources (handles) one call may hold at once.
    pub max_host_resources: usize,
    /// Calls one instance may serve: 1, the default, is a fresh instance
    /// per call. More keeps instances warm between calls
    /// (`runtime::reuse`), for large guests (Python, JavaScript)
    /// whose instantiation costs more than their handler.
    pub max_instance_reuse_count: u32,
}

/// How much telemetry one call may produce through the span API. What is
/// cut or dropped is counted on the invocation span
/// (`plugin.telemetry.dropped`), so a guest's telemetry costs the host
/// bounded memory and never pushes another plugin's spans out of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelemetryLimits {
    /// The longest string value (and span name) kept, bytes; longer ones are cut.
    pub attribute_value_length: usize,
    /// Attributes a span keeps (the SDK drops the rest). On the invocation
    /// span the guest gets this less the ones comb sets itself.
    pub span_attribute_count: usize,
    /// Events a span keeps (the SDK drops the rest of comb's spans'; comb
    /// drops the rest of a guest's own through `wasi:otel`).
    pub span_event_count: usize,
    /// Spans one call may open; further ones are not recorded.
    pub spans_per_call: usize,
    /// Bytes of names, keys and values one call may add in all.
    pub bytes_per_call: usize,
}

impl Default for TelemetryLimits {
    fn default() -> Self {
        TelemetryLimits {
            attribute_value_length: DEFAULT_ATTRIBUTE_VALUE_LENGTH,
            span_attribute_count: DEFAULT_SPAN_ATTRIBUTE_COUNT,
            span_event_count: DEFAULT_SPAN_EVENT_COUNT,
            spans_per_call: DEFAULT_SPANS_PER_CALL,
            bytes_per_call: DEFAULT_TELEMETRY_BYTES_PER_CALL,
        }
    }
}

/// Timeouts of a plugin's outgoing HTTP calls. A guest may ask for shorter
/// ones through wasi:http's request options, never for longer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpTimeouts {
    /// Establishing the connection (and TLS).
    pub connect: Duration,
    /// From sending to the response's first byte, and then between chunks.
    pub first_byte: Duration,
    /// From sending to the body's last byte.
    pub total: Duration,
}

impl Default for HttpTimeouts {
    fn default() -> Self {
        HttpTimeouts {
            connect: DEFAULT_HTTP_CONNECT_TIMEOUT,
            first_byte: DEFAULT_HTTP_FIRST_BYTE_TIMEOUT,
            total: DEFAULT_HTTP_TIMEOUT,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            deadline: DEFAULT_DEADLINE,
            memory_bytes: DEFAULT_MEMORY_BYTES,
            fuel: None,
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            max_request_body: DEFAULT_MAX_REQUEST_BODY,
            max_response_body: DEFAULT_MAX_RESPONSE_BODY,
            http: HttpTimeouts::default(),
            telemetry: TelemetryLimits::default(),
            max_host_resources: DEFAULT_MAX_HOST_RESOURCES,
            max_instance_reuse_count: 1,
        }
    }
}

/// A sidecar's `[limits]` table: each key overrides comb's default.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsOverride {
    /// Milliseconds.
    pub deadline_ms: Option<u64>,
    /// Bytes; at most comb's `--memory-limit`.
    pub memory_bytes: Option<usize>,
    /// Fuel units per call; needs comb started with `--fuel`.
    pub fuel: Option<u64>,
    /// Calls at once.
    pub max_concurrency: Option<usize>,
    /// Bytes.
    pub max_request_body: Option<usize>,
    /// Bytes.
    pub max_response_body: Option<usize>,
    /// Milliseconds to connect, for outgoing HTTP calls.
    pub http_connect_timeout_ms: Option<u64>,
    /// Milliseconds to an outgoing call's first response byte.
    pub http_first_byte_timeout_ms: Option<u64>,
    /// Milliseconds for a whole outgoing call.
    pub http_timeout_ms: Option<u64>,
    /// Host-side resources one call may hold at once.
    pub max_host_resources: Option<usize>,
    /// Calls one instance may serve before a fresh one replaces it; above 1
    /// the plugin's own state outlives a call (see `runtime::reuse`).
    pub max_instance_reuse_count: Option<u32>,
}

/// Why a sidecar's `[limits]` cannot apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    /// A plugin may lower comb's memory limit, not raise it.
    #[error("limits.memory_bytes = {asked} is above comb's --memory-limit of {limit} bytes")]
    AboveMemoryLimit {
        /// The sidecar's value.
        asked: usize,
        /// comb's `--memory-limit`.
        limit: usize,
    },
    /// Fuel is metered for every plugin or none (an engine setting).
    #[error("limits.fuel is set but fuel metering is off: start comb with --fuel")]
    FuelOff,
    /// A zero would not lift the limit but refuse every call.
    #[error("limits.{0} must be at least 1")]
    Zero(&'static str),
}

impl Limits {
    /// These limits with a sidecar's overrides applied, or why they cannot be.
    pub fn with(self, overrides: &LimitsOverride) -> Result<Limits, LimitsError> {
        if let Some(memory) = overrides.memory_bytes
            && memory > self.memory_bytes
        {
            return Err(LimitsError::AboveMemoryLimit {
                asked: memory,
                limit: self.memory_bytes,
            });
        }
        if overrides.fuel.is_some() && self.fuel.is_none() {
            return Err(LimitsError::FuelOff);
        }
        // A zero would not lift the limit but refuse every call.
        let zeros = [
            ("max_concurrency", overrides.max_concurrency == Some(0)),
            (
                "max_instance_reuse_count",
                overrides.max_instance_reuse_count == Some(0),
            ),
            ("deadline_ms", overrides.deadline_ms == Some(0)),
            (
                "max_host_resources",
                overrides.max_host_resources == Some(0),
            ),
            (
                "http_connect_timeout_ms",
                overrides.http_connect_timeout_ms == Some(0),
            ),
            (
                "http_first_byte_timeout_ms",
                overrides.http_first_byte_timeout_ms == Some(0),
            ),
            ("http_timeout_ms", overrides.http_timeout_ms == Some(0)),
        ];
        if let Some((key, _)) = zeros.iter().find(|(_, zero)| *zero) {
            return Err(LimitsError::Zero(key));
        }
        Ok(Limits {
            deadline: overrides
                .deadline_ms
                .map_or(self.deadline, Duration::from_millis),
            memory_bytes: overrides.memory_bytes.unwrap_or(self.memory_bytes),
            fuel: overrides.fuel.or(self.fuel),
            max_concurrency: overrides.max_concurrency.unwrap_or(self.max_concurrency),
            max_request_body: overrides.max_request_body.unwrap_or(self.max_request_body),
            max_response_body: overrides
                .max_response_body
                .unwrap_or(self.max_response_body),
            http: HttpTimeouts {
                connect: overrides
                    .http_connect_timeout_ms
                    .map_or(self.http.connect, Duration::from_millis),
                first_byte: overrides
                    .http_first_byte_timeout_ms
                    .map_or(self.http.first_byte, Duration::from_millis),
                total: overrides
                    .http_timeout_ms
                    .map_or(self.http.total, Duration::from_millis),
            },
            telemetry: self.telemetry,
            max_host_resources: overrides
                .max_host_resources
                .unwrap_or(self.max_host_resources),
            max_instance_reuse_count: overrides
                .max_instance_reuse_count
                .unwrap_or(self.max_instance_reuse_count),
        })
    }
}

/// The memory an instance tried to grow past its cap: the trap's cause.
#[derive(Debug, thiserror::Error)]
#[error("memory limit of {limit} bytes exceeded (the guest asked for {desired} bytes)")]
pub(crate) struct MemoryLimitExceeded {
    /// The cap.
    pub limit: usize,
    /// What the guest's memories would have totalled.
    pub desired: usize,
}

/// Enforces the memory cap on one store and remembers the high-water mark.
#[derive(Debug)]
pub(crate) struct MemoryLimiter {
    limit: usize,
    total: usize,
    peak: usize,
}

impl MemoryLimiter {
    /// A limiter for `limit` bytes.
    pub(crate) fn new(limit: usize) -> Self {
        MemoryLimiter {
            limit,
            total: 0,
            peak: 0,
        }
    }

    /// The most linear memory the instance held at once: for a reused
    /// instance, over all its calls so far (a memory never shrinks).
    pub(crate) fn peak(&self) -> usize {
        self.peak
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.total - current.min(self.total) + desired;
        if total > self.limit {
            // An error, not `Ok(false)`: a trap that names the limit beats
            // a guest allocator aborting with a vaguer message.
            return Err(wasmtime::Error::new(MemoryLimitExceeded {
                limit: self.limit,
                desired: total,
            }));
        }
        self.total = total;
        self.peak = self.peak.max(total);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

#[cfg(test)]
mod tests {
    use wasmtime::ResourceLimiter as _;

    use super::*;

    #[test]
    fn overrides_apply_and_are_checked() {
        let base = Limits::default();
        let lower = LimitsOverride {
            deadline_ms: Some(250),
            memory_bytes: Some(1 << 20),
            ..Default::default()
        };
        let limits = base.with(&lower).unwrap();
        assert_eq!(
            (limits.deadline, limits.memory_bytes),
            (Duration::from_millis(250), 1 << 20)
        );
        let higher = LimitsOverride {
            memory_bytes: Some(base.memory_bytes + 1),
            ..Default::default()
        };
        assert!(
            base.with(&higher)
                .unwrap_err()
                .to_string()
                .contains("--memory-limit")
        );
        let fuel = LimitsOverride {
            fuel: Some(5),
            ..Default::default()
        };
        assert!(base.with(&fuel).unwrap_err().to_string().contains("--fuel"));
        assert_eq!(
            base.max_instance_reuse_count, 1,
            "a fresh instance per call"
        );
        let reuse = |count| LimitsOverride {
            max_instance_reuse_count: Some(count),
            ..Default::default()
        };
        assert_eq!(
            base.with(&reuse(100)).unwrap().max_instance_reuse_count,
            100
        );
        assert!(
            base.with(&reuse(0))
                .unwrap_err()
                .to_string()
                .contains("at least 1")
        );
    }

    #[test]
    fn zero_counts_and_times_are_refused_naming_the_key() {
        type Set = fn(&mut LimitsOverride);
        let zeros: [(&str, Set); 5] = [
            ("max_concurrency", |o| o.max_concurrency = Some(0)),
            ("deadline_ms", |o| o.deadline_ms = Some(0)),
            ("http_connect_timeout_ms", |o| {
                o.http_connect_timeout_ms = Some(0)
            }),
            ("http_first_byte_timeout_ms", |o| {
                o.http_first_byte_timeout_ms = Some(0)
            }),
            ("http_timeout_ms", |o| o.http_timeout_ms = Some(0)),
        ];
        for (key, set) in zeros {
            let mut zero = LimitsOverride::default();
            set(&mut zero);
            let error = Limits::default().with(&zero).unwrap_err();
            assert_eq!(
                error.to_string(),
                format!("limits.{key} must be at least 1")
            );
        }
        // Zero bodies are a choice (a route that takes no body), not a mistake.
        let no_body = LimitsOverride {
            max_request_body: Some(0),
            ..Default::default()
        };
        assert_eq!(
            Limits::default().with(&no_body).unwrap().max_request_body,
            0
        );
    }

    #[test]
    fn the_limiter_caps_all_memories_together_and_tracks_the_peak() {
        let mut limiter = MemoryLimiter::new(100);
        assert!(limiter.memory_growing(0, 60, None).unwrap());
        assert!(limiter.memory_growing(60, 80, None).unwrap());
        let error = limiter.memory_growing(0, 30, None).unwrap_err();
        assert!(error.downcast_ref::<MemoryLimitExceeded>().is_some());
        assert_eq!(limiter.peak(), 80);
    }
}
