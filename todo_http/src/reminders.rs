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
/// never user content), counts it in `todo_reminders_fired_total`, and hands it to the hook
/// where the `reminder.fired` event and webhook deliveries will be published (`publish_reminder_fired`,
/// empty for now).
pub fn announce(fired: &FiredReminder) {
    tracing::info!(
        task_id = %fired.task.id,
        reminder_id = %fired.reminder.id,
        scheduled_for = %fired.scheduled_for,
        "reminder fired"
    );
    metrics::counter!(FIRED_METRIC).increment(1);
    publish_reminder_fired(fired);
}

/// Where a fired reminder becomes a `reminder.fired` event on `/events` and a webhook
/// delivery. Neither exists yet; until then this does nothing.
fn publish_reminder_fired(_fired: &FiredReminder) {}
