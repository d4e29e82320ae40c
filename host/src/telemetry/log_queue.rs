//! Log records into comb's [`Pipeline`]: the one log processor on the
//! logger provider, whose records are whose (the plugin its logger was
//! made for), how large they are, and their exporter.

use std::{sync::Arc, time::Duration};

use opentelemetry::{InstrumentationScope, logs::AnyValue};
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    logs::{LogBatch, LogExporter as _, LogProcessor, SdkLogRecord},
};

use super::{
    export_queue::Item,
    pipeline::{Exporter, Pipeline},
};

/// Records waiting for export, at most. A call logs at most 256 lines.
pub(super) const LOG_QUEUE_RECORDS: usize = 8192;

/// The most record data waiting for export, estimated: a call may log
/// 64 KiB, so 8192 records of a hostile plugin's could otherwise hold
/// 512 MiB behind a stalled collector.
pub(super) const LOG_QUEUE_BYTES: usize = 32 * 1024 * 1024;

/// Records per export request, before the byte bound cuts it.
pub(super) const LOG_EXPORT_BATCH: usize = 1024;

/// How long a flush the SDK asks for (`force_flush`) may wait.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// One record and the scope of the logger that emitted it.
#[derive(Debug)]
pub(super) struct LogItem {
    record: SdkLogRecord,
    scope: InstrumentationScope,
}

/// Whose share a record counts in: its plugin, the scope of the logger
/// comb made for it (see `crate::logs`): data comb sets, not read back.
impl Item for LogItem {
    fn owner(&self) -> &str {
        self.scope.name()
    }
}

/// About how many bytes `record` takes encoded: its body and attributes,
/// counted as spans' are.
pub(super) fn estimated_size(record: &SdkLogRecord) -> usize {
    fn any(value: &AnyValue) -> usize {
        match value {
            AnyValue::String(s) => s.as_str().len(),
            AnyValue::Bytes(bytes) => bytes.len(),
            AnyValue::ListAny(list) => list.iter().map(|v| any(v) + 2).sum(),
            AnyValue::Map(map) => map.iter().map(|(k, v)| k.as_str().len() + any(v) + 4).sum(),
            AnyValue::Boolean(_) => 2,
            // Numbers, and what a later version adds.
            _ => 8,
        }
    }
    64 + record.body().map_or(0, any)
        + record
            .attributes_iter()
            .map(|(key, value)| key.as_str().len() + any(value) + 4)
            .sum::<usize>()
}

/// comb's log record pipeline as the logger provider's one processor.
#[derive(Debug)]
pub(super) struct LogIntake(pub(super) Arc<Pipeline<LogItem>>);

impl LogProcessor for LogIntake {
    fn emit(&self, record: &mut SdkLogRecord, scope: &InstrumentationScope) {
        let size = estimated_size(record);
        let item = LogItem {
            record: record.clone(),
            scope: scope.clone(),
        };
        self.0.push(item, size);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.flush(FLUSH_TIMEOUT)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown(timeout)
    }

    /// The exporter has it, set before the pipeline starts.
    fn set_resource(&mut self, _resource: &Resource) {}
}

/// The OTLP crate's log exporter, either transport.
#[derive(Debug)]
pub(super) struct LogSender(pub(super) opentelemetry_otlp::LogExporter);

impl Exporter<LogItem> for LogSender {
    async fn send(&self, items: Vec<LogItem>) -> OTelSdkResult {
        let records: Vec<_> = items
            .iter()
            .map(|item| (&item.record, &item.scope))
            .collect();
        // The SDK's constructor for a batch of borrowed records, which it
        // documents as meant for its own use (its batch processor's).
        self.0.export(LogBatch::new(&records)).await
    }
}
