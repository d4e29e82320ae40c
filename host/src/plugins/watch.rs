//! Watching the plugins folder: every real change (debounced) triggers one
//! reload, run by the task that owns the [`Plugins`]. The same task takes
//! what the registry poller finds, so one writer publishes every table.

use std::time::Duration;

use anyhow::{Context as _, Result};
use notify::{
    EventKind, RecursiveMode, Watcher as _,
    event::{AccessKind, AccessMode, MetadataKind, ModifyKind},
};

use super::{Plugins, SETTLE_TIME, Update};

/// A registry's rounds of checks, as a source hands them over: the first
/// round always arrives (possibly empty), so the first load can tell when
/// every reference has been tried.
pub(crate) type Rounds = tokio::sync::mpsc::Receiver<Vec<Update>>;

/// How long the folder must be quiet before a reload: one copy or save
/// makes a burst of events, and one reload should answer the whole burst.
pub(crate) const DEBOUNCE: Duration = Duration::from_millis(150);

/// The log line that says the first load is done: every file in the folder
/// at start, and every registry reference, is serving or rejected.
pub(crate) const FIRST_LOAD_DONE: &str = "first load of the plugins done";

/// Watches the folder and loads it, in the background: the listener does
/// not wait for plugins (a cold compile of large components takes minutes),
/// they come in as they load. Then keeps reloading on every change (and
/// loading what the registry poller pulls) until the runtime shuts down,
/// calling `first_load_done` once the first load of the folder and the
/// first round of `pulled` (every reference's first pull) are done. Returns
/// once the watch is set up.
pub(crate) fn load_and_watch(
    mut plugins: Plugins,
    mut pulled: Option<Rounds>,
    first_load_done: impl FnOnce() + Send + 'static,
) -> Result<()> {
    let (changed_tx, mut changed_rx) = tokio::sync::mpsc::channel::<()>(1);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        match event {
            Ok(event) if !is_change(&event.kind) => return,
            Ok(_) => {}
            Err(error) => tracing::warn!("watching the plugins folder: {error}"),
        }
        // A full channel already holds a pending reload, which will see
        // this change too.
        let _ = changed_tx.try_send(());
    })
    .context("starting the plugins folder watcher")?;
    watcher
        .watch(plugins.dir(), RecursiveMode::NonRecursive)
        .with_context(|| format!("watching {}", plugins.dir().display()))?;
    tokio::spawn(async move {
        // The watcher lives as long as this task: dropping it stops the watch.
        let _watcher = watcher;
        if let Err(error) = reload_until_settled(&mut plugins).await {
            tracing::error!("loading plugins: {error:#}");
        }
        if let Some(first_round) = pulled.as_mut() {
            match first_round.recv().await {
                Some(updates) => plugins.apply(updates).await,
                None => pulled = None,
            }
        }
        let routes = plugins.routes().load().routes().len();
        first_load_done();
        tracing::info!(routes, "{FIRST_LOAD_DONE}");
        if routes == 0 {
            tracing::warn!(
                folder = %plugins.dir().display(),
                "no plugin routes to serve yet; every request gets 404 until a plugin is added"
            );
        }
        loop {
            tokio::select! {
                changed = changed_rx.recv() => {
                    if changed.is_none() {
                        return;
                    }
                    // Wait for the burst to end, then answer all of it at once.
                    tokio::time::sleep(DEBOUNCE).await;
                    while changed_rx.try_recv().is_ok() {}
                    if let Err(error) = reload_until_settled(&mut plugins).await {
                        tracing::error!("reloading plugins: {error:#}");
                    }
                }
                Some(updates) = next_round(&mut pulled) => plugins.apply(updates).await,
            }
        }
    });
    Ok(())
}

/// The registry poller's next round; never, without references.
async fn next_round(pulled: &mut Option<Rounds>) -> Option<Vec<Update>> {
    match pulled {
        Some(rounds) => rounds.recv().await,
        None => std::future::pending().await,
    }
}

/// Whether an event can change what a reload loads: a file created,
/// written, renamed, removed or re-timed. Opening, reading and closing a
/// file unwritten are not: comb's own reads of the folder report those,
/// and counting them made every reload trigger the next.
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Modify(ModifyKind::Metadata(metadata)) => {
            matches!(metadata, MetadataKind::WriteTime | MetadataKind::Any)
        }
        _ => true,
    }
}

/// Reloads, and again after [`SETTLE_TIME`] while files are still being
/// written (a slow copy produces no further events once it stops).
pub async fn reload_until_settled(plugins: &mut Plugins) -> Result<()> {
    loop {
        let outcome = plugins.reload().await?;
        if outcome.settling == 0 {
            return Ok(());
        }
        tokio::time::sleep(SETTLE_TIME).await;
    }
}

#[cfg(test)]
mod tests {
    use notify::event::{CreateKind, RemoveKind, RenameMode};

    use super::*;

    #[test]
    fn only_real_changes_trigger_a_reload() {
        assert!(is_change(&EventKind::Create(CreateKind::File)));
        assert!(is_change(&EventKind::Remove(RemoveKind::File)));
        assert!(is_change(&EventKind::Modify(ModifyKind::Name(
            RenameMode::To
        ))));
        assert!(is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(!is_change(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
    }
}
