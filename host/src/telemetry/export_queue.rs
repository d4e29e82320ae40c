//! The export queue: items (spans, or log records) waiting for export,
//! bounded in count and in bytes, and shared between plugins without
//! reserving room for any.
//!
//! Any owner (a plugin, or "" for comb's spans of no plugin) may fill the
//! whole queue while nobody else needs the room: one busy plugin behind a
//! healthy collector loses nothing to a share it cannot use. When an item
//! finds the queue full, the owner holding the most makes room: its oldest
//! queued item is pushed out ("longest queue drop", as router buffers
//! share a port). When the arriving item's owner is that owner, the
//! arriving item is dropped instead. So a plugin flooding a stalled
//! collector loses its own items, never a quiet plugin's.
//!
//! Exports in flight count until they end, but at most half of either
//! bound is ever in flight: the other half is queued, and can always be
//! pushed out for an arriving owner.

use std::collections::{HashMap, VecDeque};

use opentelemetry_sdk::error::OTelSdkResult;

/// What the queue holds: an item that knows whose it is.
pub(super) trait Item: Send + 'static {
    /// Whose share of the export queue it counts in: its plugin's name, ""
    /// for comb's own items of no plugin.
    fn owner(&self) -> &str;
}

/// The most item data one export request carries, estimated: collectors
/// refuse larger requests whole (4 MiB for gRPC by default, less for some
/// HTTP receivers), and with them every other plugin's items in the batch.
pub(super) const EXPORT_CHUNK_BYTES: usize = 1024 * 1024;

/// How many items a batch takes from one owner before the next owner's
/// turn: batches interleave owners, so a backlog of one plugin's items
/// does not hold another's back for a whole batch.
const TURN: usize = 64;

/// Items waiting for export and being exported, by owner.
#[derive(Debug)]
pub(super) struct FairQueue<T> {
    /// What it holds, for its warnings: "span", "log record".
    item: &'static str,
    owners: HashMap<String, Owner<T>>,
    /// Owners with queued items, in the order batches take from them.
    turns: VecDeque<String>,
    max_items: usize,
    max_bytes: usize,
    /// Queued and in flight.
    items: usize,
    bytes: usize,
    in_flight_items: usize,
    in_flight_bytes: usize,
    dropped: u64,
    /// The owner last found heaviest, and pushes-out since that scan.
    heaviest: Option<String>,
    since_scan: usize,
}

/// One owner's items.
#[derive(Debug)]
struct Owner<T> {
    queued: VecDeque<(T, usize)>,
    queued_bytes: usize,
    in_flight_items: usize,
    in_flight_bytes: usize,
    /// Whether its dropping was logged since it last had nothing queued.
    warned: bool,
}

impl<T> Default for Owner<T> {
    fn default() -> Self {
        Owner {
            queued: VecDeque::new(),
            queued_bytes: 0,
            in_flight_items: 0,
            in_flight_bytes: 0,
            warned: false,
        }
    }
}

impl<T> Owner<T> {
    fn items(&self) -> usize {
        self.queued.len() + self.in_flight_items
    }

    fn bytes(&self) -> usize {
        self.queued_bytes + self.in_flight_bytes
    }
}

/// What one export took, as runs of consecutive items of one owner:
/// (owner, items, bytes). Handed back with [`FairQueue::release`].
pub(super) type Taken = Vec<(String, usize, usize)>;

/// Items taken for one export, and whose they were, to hand back once
/// the export is over.
#[derive(Debug)]
pub(super) struct Batch<T> {
    pub(super) items: Vec<(T, usize)>,
    owners: Taken,
}

/// What became of an arriving item.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Admitted {
    /// Queued, nothing dropped.
    Queued,
    /// Queued after pushing out the oldest items of the owner holding the
    /// most; or dropped, when its own owner holds the most.
    Dropped {
        /// The owner whose items were dropped, when this is the first drop
        /// of its episode (to log once).
        first_of: Option<String>,
    },
}

/// How many pushes-out may follow the owner last found heaviest before
/// the owners are scanned again: a scan visits every owner with items,
/// and a stalled collector behind a thousand busy plugins would scan a
/// thousand owners per arriving span. Between scans an arriving item
/// still only ever takes from an owner holding more than its own.
const RESCAN_EVERY: usize = 64;

impl<T> FairQueue<T> {
    /// A queue of at most `max_items` `item`s and about `max_bytes` bytes.
    pub(super) fn new(item: &'static str, max_items: usize, max_bytes: usize) -> Self {
        FairQueue {
            item,
            owners: HashMap::new(),
            turns: VecDeque::new(),
            max_items,
            max_bytes,
            items: 0,
            bytes: 0,
            in_flight_items: 0,
            in_flight_bytes: 0,
            dropped: 0,
            heaviest: None,
            since_scan: 0,
        }
    }

    /// What it holds: "span", "log record".
    pub(super) fn item(&self) -> &'static str {
        self.item
    }

    /// Items dropped or pushed out so far.
    pub(super) fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Items waiting for a batch.
    pub(super) fn queued(&self) -> usize {
        self.items - self.in_flight_items
    }

    /// Whether nothing is queued or in flight.
    pub(super) fn is_empty(&self) -> bool {
        self.items == 0
    }

    /// Queues `item`, about `bytes` large, making room as the module says.
    pub(super) fn admit(&mut self, item: T, bytes: usize) -> Admitted
    where
        T: Item,
    {
        let owner = item.owner();
        let mut outcome = Admitted::Queued;
        if bytes > self.max_bytes {
            return self.count_drop(owner);
        }
        while self.items + 1 > self.max_items || self.bytes + bytes > self.max_bytes {
            // Pushing out a lighter owner's item would make it the loser
            // for holding less: then the arriving item goes instead (and
            // when nothing is queued to push out, which only an item larger
            // than what may be in flight meets).
            let Some(evict) = self.heavier_than(owner, bytes) else {
                return self.count_drop(owner);
            };
            outcome = self.count_drop(&evict);
            let entry = self.owners.get_mut(&evict).expect("found above");
            let (_, size) = entry.queued.pop_front().expect("has queued items");
            entry.queued_bytes -= size;
            self.items -= 1;
            self.bytes -= size;
            if entry.queued.is_empty() {
                // Rare: the heaviest owner has little queued.
                if entry.items() == 0 {
                    self.owners.remove(&evict);
                }
                self.turns.retain(|name| *name != evict);
            } else {
                self.heaviest = Some(evict);
            }
        }
        // A String per owner's episode, not per item.
        if !self.owners.contains_key(owner) {
            self.owners.insert(owner.to_owned(), Owner::default());
        }
        let entry = self.owners.get_mut(owner).expect("inserted above");
        if entry.queued.is_empty() {
            self.turns.push_back(owner.to_owned());
        }
        entry.queued.push_back((item, bytes));
        entry.queued_bytes += bytes;
        self.items += 1;
        self.bytes += bytes;
        outcome
    }

    /// Counts a drop of `owner`'s; names it when it starts an episode.
    fn count_drop(&mut self, owner: &str) -> Admitted {
        self.dropped += 1;
        let first = match self.owners.get_mut(owner) {
            Some(entry) => !std::mem::replace(&mut entry.warned, true),
            // Nothing of its queued: every drop of it is news.
            None => true,
        };
        Admitted::Dropped {
            first_of: first.then(|| owner.to_owned()),
        }
    }

    /// The owner to push an item out of for an arriving item of `owner`
    /// of `bytes`: the heaviest with items queued, if it holds more than
    /// `owner` would. The last one found, for up to [`RESCAN_EVERY`]
    /// pushes-out, while it still holds more.
    fn heavier_than(&mut self, owner: &str, bytes: usize) -> Option<String> {
        if self.since_scan < RESCAN_EVERY
            && let Some(last) = self.heaviest.take()
            && last != owner
            && self.owners.get(&last).is_some_and(|e| !e.queued.is_empty())
            && self.weighs_more(&last, owner, bytes)
        {
            self.since_scan += 1;
            return Some(last);
        }
        self.since_scan = 0;
        let heaviest = self.heaviest_with_queued()?;
        (heaviest != owner && self.weighs_more(heaviest, owner, bytes)).then(|| heaviest.to_owned())
    }

    /// How much of the queue an owner holding `items` and `bytes` takes:
    /// the larger of its fractions of the two bounds, as a fraction of
    /// `u128` arithmetic (no float rounding between close owners).
    fn weight(&self, items: usize, bytes: usize) -> u128 {
        let by_items = items as u128 * self.max_bytes.max(1) as u128;
        let by_bytes = bytes as u128 * self.max_items.max(1) as u128;
        by_items.max(by_bytes)
    }

    /// Whether `heaviest` holds more than `owner` would with an arriving
    /// item of `bytes`.
    fn weighs_more(&self, heaviest: &str, owner: &str, bytes: usize) -> bool {
        let weight_of = |name: &str, extra_items, extra_bytes| {
            let (items, held) = self
                .owners
                .get(name)
                .map_or((0, 0), |entry| (entry.items(), entry.bytes()));
            self.weight(items + extra_items, held + extra_bytes)
        };
        weight_of(heaviest, 0, 0) > weight_of(owner, 1, bytes)
    }

    /// The owner holding the most among those with items still queued
    /// (items in flight cannot be taken back). A scan of the owners, only
    /// while the queue is full.
    fn heaviest_with_queued(&self) -> Option<&str> {
        self.owners
            .iter()
            .filter(|(_, entry)| !entry.queued.is_empty())
            .max_by_key(|(_, entry)| self.weight(entry.items(), entry.bytes()))
            .map(|(name, _)| name.as_str())
    }

    /// Takes up to `max_items` queued items for one export, owners taking
    /// turns, within what may be in flight (half of each bound); `None`
    /// when nothing may go now.
    pub(super) fn take_batch(&mut self, max_items: usize) -> Option<Batch<T>> {
        let room_items = (self.max_items / 2).saturating_sub(self.in_flight_items);
        let room_bytes = (self.max_bytes / 2).saturating_sub(self.in_flight_bytes);
        let limit = max_items.min(room_items);
        let mut batch = Batch {
            items: Vec::new(),
            owners: Vec::new(),
        };
        let mut bytes = 0;
        'turns: while batch.items.len() < limit {
            let Some(name) = self.turns.pop_front() else {
                break;
            };
            let Some(entry) = self.owners.get_mut(&name) else {
                continue;
            };
            let (mut taken, mut taken_bytes) = (0, 0);
            while taken < TURN && batch.items.len() < limit {
                let Some(&(_, size)) = entry.queued.front() else {
                    break;
                };
                // One item always goes, so a single big item cannot stall.
                if bytes + size > room_bytes && !(batch.items.is_empty() && taken == 0) {
                    self.turns.push_front(name.clone());
                    if taken > 0 {
                        self.settle_taken(&name, taken, taken_bytes, &mut batch);
                    }
                    break 'turns;
                }
                let item = entry.queued.pop_front().expect("front checked");
                entry.queued_bytes -= size;
                batch.items.push(item);
                bytes += size;
                taken += 1;
                taken_bytes += size;
            }
            let more = !entry.queued.is_empty();
            if taken > 0 {
                self.settle_taken(&name, taken, taken_bytes, &mut batch);
            }
            if more {
                self.turns.push_back(name);
            }
        }
        (!batch.items.is_empty()).then_some(batch)
    }

    /// Moves `items` and `bytes` of `owner` from queued to in flight.
    fn settle_taken(&mut self, owner: &str, items: usize, bytes: usize, batch: &mut Batch<T>) {
        let entry = self.owners.get_mut(owner).expect("taken from it");
        entry.in_flight_items += items;
        entry.in_flight_bytes += bytes;
        self.in_flight_items += items;
        self.in_flight_bytes += bytes;
        batch.owners.push((owner.to_owned(), items, bytes));
    }

    /// Hands back what an export took, once it is over (sent, failed or
    /// abandoned).
    pub(super) fn release(&mut self, owners: Taken) {
        for (owner, items, bytes) in owners {
            self.items -= items;
            self.bytes -= bytes;
            self.in_flight_items -= items;
            self.in_flight_bytes -= bytes;
            if let Some(entry) = self.owners.get_mut(&owner) {
                entry.in_flight_items -= items;
                entry.in_flight_bytes -= bytes;
                if entry.items() == 0 {
                    self.owners.remove(&owner);
                }
            }
        }
    }
}

impl<T> Batch<T> {
    /// Splits the batch: its items, and the receipt to hand back with
    /// [`FairQueue::release`].
    pub(super) fn into_parts(self) -> (Vec<(T, usize)>, Taken) {
        (self.items, self.owners)
    }
}

/// Sends `batch` through `send` in requests of at most
/// [`EXPORT_CHUNK_BYTES`] (each item with its estimated size), so a plugin
/// with heavy spans or log records costs at most its own chunk, never the
/// batch (a guest's data per call is bounded well below a chunk); the
/// last error, if any request failed.
pub(super) async fn in_chunks<T, F, Fut>(batch: Vec<(T, usize)>, mut send: F) -> OTelSdkResult
where
    F: FnMut(Vec<T>) -> Fut,
    Fut: std::future::Future<Output = OTelSdkResult>,
{
    let mut result = Ok(());
    let mut chunk = Vec::new();
    let mut chunk_bytes = 0;
    let mut items = batch.into_iter().peekable();
    while let Some((item, size)) = items.next() {
        chunk_bytes += size;
        chunk.push(item);
        let full = items
            .peek()
            .is_some_and(|(_, next)| chunk_bytes + next > EXPORT_CHUNK_BYTES);
        if full || items.peek().is_none() {
            if let Err(error) = send(std::mem::take(&mut chunk)).await {
                result = Err(error);
            }
            chunk_bytes = 0;
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A test item: its owner and a number.
    #[derive(Debug)]
    struct Owned(&'static str, u32);

    impl Item for Owned {
        fn owner(&self) -> &str {
            self.0
        }
    }

    /// Admits `count` items of `owner`, each `bytes` large; how many
    /// were queued without anything dropped.
    fn fill(
        queue: &mut FairQueue<Owned>,
        owner: &'static str,
        count: usize,
        bytes: usize,
    ) -> usize {
        (0..count)
            .filter(|&i| queue.admit(Owned(owner, i as u32), bytes) == Admitted::Queued)
            .count()
    }

    fn held_by(queue: &FairQueue<Owned>, owner: &str) -> usize {
        queue.owners.get(owner).map_or(0, Owner::items)
    }

    #[test]
    fn one_owner_alone_may_fill_the_whole_queue() {
        let mut queue = FairQueue::new("span", 100, usize::MAX);
        assert_eq!(fill(&mut queue, "busy", 100, 10), 100, "no share held back");
        // Past the bound, the owner holding the most (itself) loses the
        // arriving item, once logged.
        assert_eq!(
            queue.admit(Owned("busy", 0), 10),
            Admitted::Dropped {
                first_of: Some("busy".into())
            }
        );
        assert_eq!(
            queue.admit(Owned("busy", 0), 10),
            Admitted::Dropped { first_of: None }
        );
        assert_eq!((queue.items, queue.dropped()), (100, 2));
    }

    #[test]
    fn an_arriving_owner_pushes_out_the_flooders_oldest_down_to_an_even_split() {
        let mut queue = FairQueue::new("span", 100, usize::MAX);
        fill(&mut queue, "flood", 100, 10);
        // A quiet plugin and comb's spans of no plugin still get in: each
        // pushes out one of the flood's, the oldest.
        for i in 0..30 {
            let owner = if i % 2 == 0 { "quiet" } else { "" };
            assert!(matches!(
                queue.admit(Owned(owner, 1000 + i), 10),
                Admitted::Dropped { .. }
            ));
        }
        assert_eq!(held_by(&queue, "flood"), 70);
        assert_eq!(
            queue.owners["flood"].queued.front().unwrap().0.1,
            30,
            "oldest went first"
        );
        // Down to an even split: then the flooder keeps what it has and
        // the quiet one, at its fair share, loses its own newest.
        fill(&mut queue, "quiet", 100, 10);
        assert_eq!(
            (held_by(&queue, "quiet"), held_by(&queue, "flood")),
            (42, 43)
        );
        assert_eq!(held_by(&queue, ""), 15);
        assert_eq!(queue.items, 100);
    }

    #[test]
    fn bytes_count_as_items_do() {
        let mut queue = FairQueue::new("span", 1000, 1000);
        assert_eq!(fill(&mut queue, "heavy", 10, 100), 10);
        // Ten light items of another owner: the first pushes out one heavy
        // item, whose room the other nine take.
        assert_eq!(fill(&mut queue, "light", 10, 10), 9);
        assert_eq!(
            held_by(&queue, "heavy"),
            9,
            "one heavy item made room for ten"
        );
        assert!(queue.bytes <= 1000);
        // An item larger than the whole queue never gets in, and takes
        // nobody's room.
        assert!(matches!(
            queue.admit(Owned("huge", 0), 5000),
            Admitted::Dropped { .. }
        ));
        assert_eq!(held_by(&queue, "heavy"), 9);
    }

    #[test]
    fn batches_take_turns_and_at_most_half_is_ever_in_flight() {
        let mut queue = FairQueue::new("span", 1000, usize::MAX);
        fill(&mut queue, "a", 900, 1);
        fill(&mut queue, "b", 10, 1);
        let batch = queue.take_batch(100).unwrap();
        let (items, receipt) = batch.into_parts();
        assert_eq!(items.len(), 100);
        // b's ten went in the first batch, after a's first turn.
        assert_eq!(
            receipt,
            vec![
                ("a".into(), TURN, TURN),
                ("b".into(), 10, 10),
                ("a".into(), 26, 26)
            ]
        );
        // Half the count is in flight at most: 400 more go, not 500.
        let more: usize = std::iter::from_fn(|| queue.take_batch(1000))
            .map(|batch| batch.items.len())
            .sum();
        assert_eq!(more, 400);
        // Room hands back with the receipt; in-flight items are counted
        // until then, so the queue stays bounded.
        assert_eq!(queue.items, 910);
        queue.release(receipt);
        assert_eq!((queue.items, queue.in_flight_items), (810, 400));
        assert!(!queue.owners.contains_key("b"), "b has nothing left");
    }

    #[test]
    fn in_flight_items_are_not_pushed_out() {
        let mut queue = FairQueue::new("span", 10, usize::MAX);
        fill(&mut queue, "flood", 10, 1);
        let _in_flight = queue.take_batch(100).unwrap();
        assert_eq!(queue.queued(), 5);
        // Five queued can make room; then nothing can, and the arriving
        // item is dropped.
        assert_eq!(fill(&mut queue, "quiet", 10, 1), 0);
        assert_eq!(held_by(&queue, "quiet"), 5);
        assert_eq!(queue.items, 10);
    }

    /// Records the number of items in each request.
    #[derive(Clone, Default)]
    struct Requests(Arc<Mutex<Vec<usize>>>);

    impl Requests {
        async fn send(&self, chunk: Vec<u32>) -> OTelSdkResult {
            self.0.lock().unwrap().push(chunk.len());
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_batch_goes_out_in_requests_of_bounded_size() {
        let requests = Requests::default();
        // Ten heavy items (300 KiB each) among a hundred light ones.
        let batch = (0..100)
            .map(|i| (i, if i % 10 == 0 { 300 * 1024 } else { 10 }))
            .collect();
        in_chunks(batch, |chunk| requests.send(chunk))
            .await
            .unwrap();
        let sizes = requests.0.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 100, "every item sent once");
        // At most three heavy items fit in a request of 1 MiB.
        assert!(sizes.len() >= 4, "{sizes:?}");
        // A batch of light items is one request.
        let requests = Requests::default();
        in_chunks((0..512).map(|i| (i, 100)).collect(), |chunk| {
            requests.send(chunk)
        })
        .await
        .unwrap();
        assert_eq!(*requests.0.lock().unwrap(), vec![512]);
    }
}
