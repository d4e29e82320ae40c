//! The export queues: bounded in items and in bytes, a share of each per
//! plugin, and each batch of spans sent in requests of bounded size. The
//! span queue and the log record queue (`log_queue.rs`) share the bounds.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use opentelemetry::KeyValue;
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    trace::{BatchSpanProcessor, Span, SpanData, SpanProcessor},
};

/// The most span data one export request carries, estimated: collectors
/// refuse larger requests whole (4 MiB for gRPC by default, less for some
/// HTTP receivers), and with them every other plugin's spans in the batch.
const EXPORT_CHUNK_BYTES: usize = 1024 * 1024;

/// The most span data waiting for export or being exported, estimated.
/// The SDK's queue bounds only the number of spans, and a plugin's call may
/// put up to its telemetry budget (256 KiB) into one span: behind a
/// stalled collector, 8192 such spans would hold 2 GiB. Ordinary spans
/// are under 1 KiB, so this is never reached by honest traffic.
pub(super) const EXPORT_QUEUE_BYTES: usize = 64 * 1024 * 1024;

/// The part of the export queue the spans of one plugin's calls may hold,
/// and comb's spans of no plugin: half. A plugin (or a client) flooding
/// spans behind a slow collector then loses that plugin's spans (or a
/// client's 404s, theirs), never all of the other plugins'.
const PLUGIN_SHARE_DIVISOR: usize = 2;

/// Items (spans, or log records) admitted for export and not yet
/// exported, by count and bytes, in all and per plugin.
///
/// Admission counts an item until its export is over, so the count also
/// covers the SDK's own queue: kept within the queue's size, the SDK never
/// drops an item behind comb's back, and what is dropped is counted here.
#[derive(Debug)]
pub(super) struct ExportBudget {
    /// What the queue holds, for its warnings: "span", "log record".
    item: &'static str,
    items: AtomicUsize,
    bytes: AtomicUsize,
    max_items: usize,
    max_bytes: usize,
    dropped: AtomicU64,
    /// What each plugin's items hold, by plugin name ("" for spans of no
    /// plugin); only owners with items in the queue have an entry.
    plugins: Mutex<HashMap<String, Share>>,
}

/// One plugin's items in the export queue.
#[derive(Debug, Default)]
struct Share {
    items: usize,
    bytes: usize,
    /// Whether its dropping was logged since it last had nothing queued.
    warned: bool,
}

/// Whose share `span` counts in: the plugin whose call it belongs to, by
/// its first `plugin.name`, which comb sets when it starts the server,
/// invocation, guest and outgoing spans of a plugin's calls (a guest
/// cannot set `plugin.*` keys); "" (no plugin's name) for comb's spans of
/// no plugin, such as a 404's.
fn owner_of(span: &SpanData) -> &str {
    let name = span
        .attributes
        .iter()
        .find(|kv| kv.key.as_str() == crate::spans::attributes::PLUGIN_NAME);
    match name.map(|kv| &kv.value) {
        Some(opentelemetry::Value::String(name)) => name.as_str(),
        _ => "",
    }
}

impl ExportBudget {
    /// A queue of at most `max_items` spans and `max_bytes` bytes.
    pub(super) fn new(max_items: usize, max_bytes: usize) -> Self {
        Self::of("span", max_items, max_bytes)
    }

    /// A queue of at most `max_items` `item`s and `max_bytes` bytes.
    pub(super) fn of(item: &'static str, max_items: usize, max_bytes: usize) -> Self {
        ExportBudget {
            item,
            items: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            max_items,
            max_bytes,
            dropped: AtomicU64::new(0),
            plugins: Mutex::default(),
        }
    }

    /// Takes room for `span`, or counts it dropped.
    fn admit(&self, span: &SpanData) -> bool {
        self.admit_item(owner_of(span), estimated_size(span))
    }

    /// Takes room for an item of `owner` of about `bytes`, or counts it
    /// dropped: room in the queue, and room in its owner's share. Reserves
    /// first and backs out when over, so concurrent ends never overshoot.
    pub(super) fn admit_item(&self, owner: &str, bytes: usize) -> bool {
        let item = self.item;
        let items = self.items.fetch_add(1, Ordering::Relaxed);
        let held = self.bytes.fetch_add(bytes, Ordering::Relaxed);
        if items >= self.max_items || held + bytes > self.max_bytes {
            self.release(1, bytes);
            if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::warn!(
                    "the {item} export queue is full; dropping {item}s until the collector \
                     catches up"
                );
            }
            return false;
        }
        let mut plugins = self.plugins();
        if !plugins.contains_key(owner) {
            // Only while the owner has spans queued: a String per episode,
            // not per span.
            plugins.insert(owner.to_owned(), Share::default());
        }
        let share = plugins.get_mut(owner).expect("inserted above");
        if share.items < self.max_items / PLUGIN_SHARE_DIVISOR
            && share.bytes + bytes <= self.max_bytes / PLUGIN_SHARE_DIVISOR
        {
            share.items += 1;
            share.bytes += bytes;
            return true;
        }
        let warn = !std::mem::replace(&mut share.warned, true);
        drop(plugins);
        self.release(1, bytes);
        self.dropped.fetch_add(1, Ordering::Relaxed);
        match owner {
            _ if !warn => {}
            "" => tracing::warn!(
                "{item}s of no plugin (such as 404s) fill half the {item} export queue; \
                 dropping them until the collector catches up"
            ),
            plugin => tracing::warn!(
                plugin,
                "the plugin's {item}s fill half the {item} export queue; dropping them until \
                 the collector catches up"
            ),
        }
        false
    }

    /// Items dropped so far.
    pub(super) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn release(&self, items: usize, bytes: usize) {
        self.items.fetch_sub(items, Ordering::Relaxed);
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    fn plugins(&self) -> std::sync::MutexGuard<'_, HashMap<String, Share>> {
        // Counts stay consistent: nothing in the lock can panic halfway.
        self.plugins.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds `batch`'s room until the returned guard drops.
    pub(super) fn held(&self, batch: &[SpanData]) -> Held<'_> {
        self.held_items(
            batch
                .iter()
                .map(|span| (owner_of(span), estimated_size(span))),
        )
    }

    /// Holds the room of `items` (owner, bytes) until the returned guard
    /// drops.
    pub(super) fn held_items<'o>(&self, items: impl Iterator<Item = (&'o str, usize)>) -> Held<'_> {
        let mut plugins: Vec<(String, Share)> = Vec::new();
        let mut bytes = 0;
        let mut count = 0;
        for (owner, size) in items {
            count += 1;
            bytes += size;
            let index = match plugins.iter().position(|(name, _)| name == owner) {
                Some(index) => index,
                None => {
                    plugins.push((owner.to_owned(), Share::default()));
                    plugins.len() - 1
                }
            };
            plugins[index].1.items += 1;
            plugins[index].1.bytes += size;
        }
        Held {
            budget: self,
            items: count,
            bytes,
            plugins,
        }
    }
}

/// A batch's room in the [`ExportBudget`], released on drop.
pub(super) struct Held<'a> {
    budget: &'a ExportBudget,
    items: usize,
    bytes: usize,
    plugins: Vec<(String, Share)>,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if !self.plugins.is_empty() {
            let mut shares = self.budget.plugins();
            for (plugin, held) in &self.plugins {
                if let Some(share) = shares.get_mut(plugin) {
                    share.items -= held.items.min(share.items);
                    share.bytes -= held.bytes.min(share.bytes);
                    if share.items == 0 {
                        shares.remove(plugin);
                    }
                }
            }
        }
        self.budget.release(self.items, self.bytes);
    }
}

/// The batch span processor behind an [`ExportBudget`].
#[derive(Debug)]
pub(super) struct Budgeted {
    pub(super) batch: BatchSpanProcessor,
    pub(super) budget: Arc<ExportBudget>,
}

impl SpanProcessor for Budgeted {
    fn on_start(&self, span: &mut Span, cx: &opentelemetry::Context) {
        self.batch.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.budget.admit(&span) {
            self.batch.on_end(span);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.batch.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let dropped = self.budget.dropped();
        if dropped > 0 {
            // The same field the SDK's own warning uses, for scripts.
            tracing::warn!(
                dropped_span_count = dropped,
                "spans dropped because the export queue was full"
            );
        }
        self.batch.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.batch.set_resource(resource);
    }
}

/// Sends `batch` through `send` in requests of at most
/// [`EXPORT_CHUNK_BYTES`] (each item's size by `size`), so a plugin with
/// heavy spans or log records costs at most its own chunk, never the
/// batch (a guest's data per call is bounded well below a chunk); the
/// last error, if any request failed.
pub(super) async fn in_chunks<T, F, Fut>(
    batch: Vec<T>,
    size: impl Fn(&T) -> usize,
    mut send: F,
) -> OTelSdkResult
where
    F: FnMut(Vec<T>) -> Fut,
    Fut: std::future::Future<Output = OTelSdkResult>,
{
    let mut result = Ok(());
    let mut chunk = Vec::new();
    let mut chunk_bytes = 0;
    let mut items = batch.into_iter().peekable();
    while let Some(item) = items.next() {
        chunk_bytes += size(&item);
        chunk.push(item);
        let full = items
            .peek()
            .is_some_and(|next| chunk_bytes + size(next) > EXPORT_CHUNK_BYTES);
        if full || items.peek().is_none() {
            if let Err(error) = send(std::mem::take(&mut chunk)).await {
                result = Err(error);
            }
            chunk_bytes = 0;
        }
    }
    result
}

/// About how many bytes `span` takes encoded: its strings, and 8 bytes per
/// number (2 per bool), lists counted element by element — a plugin's
/// `s64-list` of 32 768 numbers is 256 KiB, not one value; ids, times and
/// framing are small next to a chunk.
pub(super) fn estimated_size(span: &SpanData) -> usize {
    fn attributes(attributes: &[KeyValue]) -> usize {
        attributes
            .iter()
            .map(|kv| kv.key.as_str().len() + value_size(&kv.value) + 4)
            .sum()
    }
    64 + span.name.len()
        + attributes(&span.attributes)
        + span
            .events
            .iter()
            .map(|event| 16 + event.name.len() + attributes(&event.attributes))
            .sum::<usize>()
        + match &span.status {
            opentelemetry::trace::Status::Error { description } => description.len(),
            _ => 0,
        }
}

/// About how many bytes an attribute's value takes encoded (see
/// [`estimated_size`]).
fn value_size(value: &opentelemetry::Value) -> usize {
    use opentelemetry::{Array, Value};
    match value {
        Value::String(s) => s.as_str().len(),
        Value::Array(Array::String(list)) => list.iter().map(|s| s.as_str().len() + 2).sum(),
        Value::Array(Array::I64(list)) => 8 * list.len(),
        Value::Array(Array::F64(list)) => 8 * list.len(),
        Value::Array(Array::Bool(list)) => 2 * list.len(),
        _ => 8,
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{Arc, Mutex},
        time::SystemTime,
    };

    use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status};
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};

    use opentelemetry_sdk::trace::SpanExporter;

    use super::{super::on_runtime::OnRuntime, *};

    /// Records the number of spans in each export request.
    #[derive(Debug, Clone, Default)]
    struct Requests(Arc<Mutex<Vec<usize>>>);

    impl SpanExporter for Requests {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0.lock().unwrap().push(batch.len());
            Ok(())
        }
    }

    fn span_with(bytes: usize) -> SpanData {
        SpanData {
            span_context: SpanContext::empty_context(),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: "span".into(),
            start_time: SystemTime::UNIX_EPOCH,
            end_time: SystemTime::UNIX_EPOCH,
            attributes: vec![KeyValue::new("app.value", "x".repeat(bytes))],
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: Default::default(),
        }
    }

    /// A span of `bytes` in a call of plugin `name`.
    fn plugin_span(name: &str, bytes: usize) -> SpanData {
        let mut span = span_with(bytes);
        span.attributes
            .insert(0, KeyValue::new("plugin.name", name.to_owned()));
        span
    }

    #[test]
    fn number_lists_count_by_their_length() {
        let mut span = span_with(0);
        span.attributes = vec![
            KeyValue::new(
                "app.s64",
                opentelemetry::Value::Array(vec![1_i64; 32 * 1024].into()),
            ),
            KeyValue::new(
                "app.f64",
                opentelemetry::Value::Array(vec![1.0; 1024].into()),
            ),
            KeyValue::new(
                "app.bool",
                opentelemetry::Value::Array(vec![true; 1024].into()),
            ),
        ];
        assert!(estimated_size(&span) >= 256 * 1024 + 8 * 1024 + 2 * 1024);
    }

    #[tokio::test]
    async fn spans_waiting_for_export_are_bounded_in_bytes_and_count_until_exported() {
        // Each span another plugin's, so that only the whole queue's bounds apply.
        let heavy = |i: usize| plugin_span(&format!("p{i}"), 100 * 1024);
        let size = estimated_size(&heavy(0));
        let budget = Arc::new(ExportBudget::new(1000, 3 * size));
        let admitted: Vec<_> = (0..5)
            .map(heavy)
            .filter(|span| budget.admit(span))
            .collect();
        assert_eq!(admitted.len(), 3, "three heavy spans fit, not five");
        assert_eq!(budget.dropped.load(Ordering::Relaxed), 2);
        // The export hands the room back once it is over.
        let exporter =
            OnRuntime::new(Requests::default(), &Arc::default()).releasing(budget.clone());
        exporter.export(admitted).await.unwrap();
        assert_eq!(budget.bytes.load(Ordering::Relaxed), 0);
        assert!(budget.admit(&heavy(9)), "room again after the export");
        // Light spans stop at the count, the SDK queue's size.
        let budget = ExportBudget::new(3, usize::MAX);
        let light = |i: usize| plugin_span(&format!("p{i}"), 10);
        assert_eq!((0..5).filter(|&i| budget.admit(&light(i))).count(), 3);
        // An abandoned export (its future dropped) releases too.
        drop(budget.held(&[light(0), light(1)]));
        assert_eq!(budget.items.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn one_plugins_spans_take_at_most_half_the_queue() {
        let budget = Arc::new(ExportBudget::new(100, usize::MAX));
        let flood: Vec<_> = (0..100)
            .map(|_| plugin_span("flood", 10))
            .filter(|span| budget.admit(span))
            .collect();
        assert_eq!(flood.len(), 50, "half the count");
        // Spans of no plugin (a 404's) and another plugin's still get in.
        let others: Vec<_> = (0..30)
            .map(|i| match i % 2 {
                0 => span_with(10),
                _ => plugin_span("quiet", 10),
            })
            .filter(|span| budget.admit(span))
            .collect();
        assert_eq!(others.len(), 30);
        assert_eq!(budget.dropped.load(Ordering::Relaxed), 50);
        // Exported, the flood's share is free again, and its entry gone.
        let exporter =
            OnRuntime::new(Requests::default(), &Arc::default()).releasing(budget.clone());
        exporter.export(flood).await.unwrap();
        assert!(!budget.plugins().contains_key("flood"));
        assert!(budget.admit(&plugin_span("flood", 10)));
        // So do spans of no plugin, up to their own half.
        let nobody = (0..100)
            .map(|_| span_with(10))
            .filter(|span| budget.admit(span))
            .count();
        assert_eq!(nobody, 50 - 15, "15 were admitted above");
        // The share holds for bytes as well: half of 4 heavy spans.
        let heavy = plugin_span("heavy", 1000);
        let budget = ExportBudget::new(1000, 4 * estimated_size(&heavy));
        assert_eq!((0..4).filter(|_| budget.admit(&heavy)).count(), 2);
    }

    #[tokio::test]
    async fn a_batch_goes_out_in_requests_of_bounded_size() {
        let requests = Requests::default();
        let exporter = OnRuntime::new(requests.clone(), &Arc::default());
        // Ten heavy spans (300 KiB each) among a hundred light ones.
        let batch = (0..100)
            .map(|i| span_with(if i % 10 == 0 { 300 * 1024 } else { 10 }))
            .collect();
        exporter.export(batch).await.unwrap();
        let sizes = requests.0.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 100, "every span sent once");
        // At most three heavy spans fit in a request of 1 MiB.
        assert!(sizes.len() >= 4, "{sizes:?}");
        // A batch of light spans is one request.
        let requests = Requests::default();
        let exporter = OnRuntime::new(requests.clone(), &Arc::default());
        exporter
            .export((0..512).map(|_| span_with(100)).collect())
            .await
            .unwrap();
        assert_eq!(*requests.0.lock().unwrap(), vec![512]);
    }
}
