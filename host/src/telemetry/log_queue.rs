//! The log record export queue: plugins' records behind the same bounds
//! as spans (an [`ExportBudget`]: a count, bytes, and half of each for one
//! plugin), then the SDK's batch processor, whose thread exports them on
//! comb's runtime in requests of bounded size.

use std::{sync::Arc, time::Duration};

use opentelemetry::{InstrumentationScope, logs::AnyValue};
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    logs::{BatchLogProcessor, LogProcessor, SdkLogRecord},
};

use super::export_queue::ExportBudget;

/// Records waiting for export, at most; also the SDK queue's size, so it
/// never drops one behind comb's back. A call logs at most 256 lines.
pub(super) const LOG_QUEUE_RECORDS: usize = 8192;

/// The most record data waiting for export, estimated: a call may log
/// 64 KiB, so 8192 records of a hostile plugin's could otherwise hold
/// 512 MiB behind a stalled collector.
pub(super) const LOG_QUEUE_BYTES: usize = 32 * 1024 * 1024;

/// Records per export request, before the byte bound cuts it.
pub(super) const LOG_EXPORT_BATCH: usize = 1024;

/// Whose share a record counts in: its plugin, the scope of the logger
/// comb made for it (see `crate::logs`).
pub(super) fn owner(scope: &InstrumentationScope) -> &str {
    scope.name()
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

/// The batch log processor behind an [`ExportBudget`].
#[derive(Debug)]
pub(super) struct BudgetedLogs {
    pub(super) batch: BatchLogProcessor,
    pub(super) budget: Arc<ExportBudget>,
}

impl LogProcessor for BudgetedLogs {
    fn emit(&self, record: &mut SdkLogRecord, scope: &InstrumentationScope) {
        if self.budget.admit_item(owner(scope), estimated_size(record)) {
            self.batch.emit(record, scope);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.batch.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let dropped = self.budget.dropped();
        if dropped > 0 {
            tracing::warn!(
                dropped_log_record_count = dropped,
                "log records dropped because the export queue was full"
            );
        }
        self.batch.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.batch.set_resource(resource);
    }
}
