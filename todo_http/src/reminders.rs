//! The reminder scheduler as the standalone server runs it.
//!
//! The scheduler itself is the store's ([`Store::run_reminder_scheduler`]): it claims due
//! reminders (exactly once across instances sharing a PostgreSQL database) and hands each to a
//! callback. [`run_reminder_scheduler`] runs it with [`announce`] as that callback; `serve`
//! (`server::run`) starts it beside the HTTP server and stops it at shutdown. A host that
//! embeds the API runs it the same way, next to its own server:
//!
//! ```no_run
//! # async fn host(store: todo_store::Store) {
//! let (stop, mut stopped) = tokio::sync::watch::channel(false);
//! let scheduler = tokio::spawn(todo_http::reminders::run_reminder_scheduler(
//!     store.clone(),
//!     async move {
//!         let _ = stopped.wait_for(|s| *s).await;
//!     },
//! ));
//! // … serve the API until shutdown, then:
//! let _ = stop.send(true);
//! let _ = scheduler.await;
//! # }
//! ```
//!
//! or calls [`Store::run_reminder_scheduler`] with a callback of its own.

use std::future::Future;

use todo_store::{FiredReminder, Store};

/// Name of the counter of fired reminders.
pub const FIRED_METRIC: &str = "todo_reminders_fired_total";

/// Runs `store`'s reminder scheduler until `shutdown` resolves, passing each fired reminder to
/// [`announce`]. A round in progress when `shutdown` resolves finishes first (one short
/// transaction); the loop never waits for the next round.
pub async fn run_reminder_scheduler(store: Store, shutdown: impl Future<Output = ()>) {
    store
        .run_reminder_scheduler(shutdown, |fired| announce(&fired))
        .await;
}

/// What the server does with a fired reminder: logs it at info (task and reminder ids only,
/// never user content) and counts it in `todo_reminders_fired_total`. The `reminder.fired`
/// event needs nothing from here: the store logged it in the user's change log in the
/// transaction that fired it, and `/events` streams it from there like any change.
pub fn announce(fired: &FiredReminder) {
    tracing::info!(
        task_id = %fired.task.id,
        reminder_id = %fired.reminder.id,
        scheduled_for = %fired.scheduled_for,
        "reminder fired"
    );
    metrics::counter!(FIRED_METRIC).increment(1);
}
