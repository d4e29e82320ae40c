//! Watching the plugins folder: every change (debounced) triggers one
//! reload, run by the task that owns the [`Plugins`].

use std::time::Duration;

use anyhow::{Context as _, Result};
use notify_debouncer_mini::{DebounceEventResult, new_debouncer, notify::RecursiveMode};

use super::{Plugins, SETTLE_TIME};

/// How long the folder must be quiet before a reload: one copy or save
/// makes a burst of events, and one reload should answer the whole burst.
pub const DEBOUNCE: Duration = Duration::from_millis(150);

/// Loads the folder now, then keeps reloading it on every change until the
/// runtime shuts down. Returns once the first load is published.
pub async fn load_and_watch(mut plugins: Plugins) -> Result<()> {
    reload_until_settled(&mut plugins).await?;
    let (changed_tx, mut changed_rx) = tokio::sync::mpsc::channel::<()>(1);
    let mut debouncer = new_debouncer(DEBOUNCE, move |events: DebounceEventResult| {
        if let Err(error) = &events {
            tracing::warn!("watching the plugins folder: {error}");
        }
        // A full channel already holds a pending reload, which will see
        // this change too.
        let _ = changed_tx.try_send(());
    })
    .context("starting the plugins folder watcher")?;
    debouncer
        .watcher()
        .watch(plugins.dir(), RecursiveMode::NonRecursive)
        .with_context(|| format!("watching {}", plugins.dir().display()))?;
    tokio::spawn(async move {
        // The debouncer lives as long as this task: dropping it stops the watch.
        let _debouncer = debouncer;
        while changed_rx.recv().await.is_some() {
            if let Err(error) = reload_until_settled(&mut plugins).await {
                tracing::error!("reloading plugins: {error:#}");
            }
        }
    });
    Ok(())
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
