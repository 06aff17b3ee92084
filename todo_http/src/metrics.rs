//! `GET /metrics`: Prometheus text format, through the `metrics` facade and
//! `metrics-exporter-prometheus`'s renderer.
//!
//! Requests are counted and timed as they finish; gauges that describe a state (requests in
//! flight and queued, the database pool) are read when the page is scraped. The recorder is
//! process-wide: the first API built installs it, unless the host installed its own `metrics`
//! recorder first, in which case our metrics go to the host's recorder and `/metrics` says so.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use poem::http::{Method, StatusCode};
use todo_store::Store;

use crate::Limits;

/// Request latency histogram buckets, in seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How often histogram samples are folded into their buckets when nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The Prometheus renderer of this process, installed as the global `metrics` recorder on first
/// use; `None` when another recorder was installed first.
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("todo_http_request_duration_seconds".into()),
                    LATENCY_BUCKETS,
                )
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            let upkeep = handle.clone();
            // Histogram samples wait in per-metric queues until upkeep folds them in; without a
            // scrape they would pile up, so a thread folds them every few seconds.
            let spawned = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP_EVERY);
                        upkeep.run_upkeep();
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "no metrics upkeep thread: histograms fold on scrape only");
            }
            Some(handle)
        })
        .as_ref()
}

fn describe() {
    metrics::describe_counter!(
        "todo_http_requests_total",
        "HTTP requests answered, by method, route template and status."
    );
    metrics::describe_histogram!(
        "todo_http_request_duration_seconds",
        metrics::Unit::Seconds,
        "Time from a request's arrival at the API to its response head, by method and route."
    );
    metrics::describe_gauge!(
        "todo_http_open_connections",
        "Client connections open (HTTP/1.1 and HTTP/2)."
    );
    metrics::describe_gauge!(
        "todo_http_requests_in_flight",
        "Requests accepted and not yet answered: active plus queued."
    );
    metrics::describe_gauge!(
        "todo_http_requests_queued",
        "Requests waiting for one of the max-active slots."
    );
    metrics::describe_counter!(
        crate::reminders::FIRED_METRIC,
        "Reminders fired by this process's reminder scheduler."
    );
    metrics::describe_counter!(
        crate::webhooks::DELIVERIES_METRIC,
        "Webhook delivery attempts by this process's sender, by outcome: `delivered` (2xx), `retry` (failed, retried later), `failed` (failed, no attempt left)."
    );
    metrics::describe_gauge!(
        "todo_http_event_streams_open",
        "Event streams (`/events`) open on this server."
    );
    metrics::describe_gauge!(
        "todo_db_pool_connections",
        "Database pool connections: `max` the pool may open, `open` now, `in_use` handed out."
    );
}

/// Counts one open connection while it lives.
pub(crate) struct OpenConnection;

impl OpenConnection {
    pub(crate) fn new() -> Self {
        metrics::gauge!("todo_http_open_connections").increment(1.0);
        OpenConnection
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        metrics::gauge!("todo_http_open_connections").decrement(1.0);
    }
}

/// Records one answered request. `route` is a route template, never a raw path.
pub(crate) fn record_request(
    method: &Method,
    route: &'static str,
    status: StatusCode,
    took: Duration,
) {
    let method = match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    metrics::counter!(
        "todo_http_requests_total",
        "method" => method,
        "route" => route,
        "status" => status.as_str().to_owned(),
    )
    .increment(1);
    metrics::histogram!(
        "todo_http_request_duration_seconds",
        "method" => method,
        "route" => route,
    )
    .record(took.as_secs_f64());
}

/// The metrics page: state gauges read now, then everything rendered; `None` when another
/// recorder than ours is installed.
pub(crate) fn render(store: &Store, limits: &Limits) -> Option<String> {
    let handle = prometheus()?;
    let (in_flight, queued) = limits.load();
    metrics::gauge!("todo_http_requests_in_flight").set(in_flight as f64);
    metrics::gauge!("todo_http_requests_queued").set(queued as f64);
    let pool = store.pool_stats();
    for (state, n) in [
        ("max", pool.max),
        ("open", pool.open),
        ("in_use", pool.in_use),
    ] {
        metrics::gauge!("todo_db_pool_connections", "state" => state).set(f64::from(n));
    }
    Some(handle.render())
}
