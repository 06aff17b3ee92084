//! The parts of `cargo xtask bench` about keeping clients in step, measured over HTTP against the
//! release server like the other rows:
//!
//! - **sync** (`--only sync`): the heavy user's initial sync (`GET /changes` without `since`,
//!   paged at 1,000 records until `has_more` is false), an incremental sync after a few writes,
//!   and `POST /batch` of 100 creates (run by `bench.rs` through the load generator).
//!
//! Every function here measures and returns numbers; `bench.rs` decides what runs and renders
//! the table with [`render_sync`].

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Instant;

use hyper::Method;

use crate::load::{self, Sender, User, percentile};
use crate::seed::Gen;

/// Page size of the syncs: the API's largest.
pub const SYNC_LIMIT: u32 = 1000;

/// A series of latencies (nanoseconds), summarised by nearest rank.
#[derive(Debug, Clone, Default)]
pub struct Series {
    /// How many.
    pub n: usize,
    /// Median.
    pub p50: u64,
    /// 95th percentile.
    pub p95: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest.
    pub max: u64,
}

impl Series {
    /// Summarises `v`.
    pub fn of(mut v: Vec<u64>) -> Self {
        v.sort_unstable();
        Series {
            n: v.len(),
            p50: percentile(&v, 50.0),
            p95: percentile(&v, 95.0),
            p99: percentile(&v, 99.0),
            max: v.last().copied().unwrap_or(0),
        }
    }
}

/// One row of the sync table.
#[derive(Debug, Clone)]
pub struct SyncRow {
    /// What was measured.
    pub what: String,
    /// Connections.
    pub conns: usize,
    /// The latencies.
    pub lat: Series,
    /// Throughput, with its unit.
    pub throughput: String,
    /// Failed requests.
    pub errors: u64,
}

// ---------------------------------------------------------------------------------------------
// Sync.

/// One page of `GET /changes`: records on it, `meta.next`, `meta.has_more`.
struct Page {
    records: usize,
    next: String,
    has_more: bool,
}

/// `s` percent-encoded for a query string (everything but RFC 3986's unreserved characters).
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Reads a `/changes` body: how many records, `next`, `has_more`.
fn parse_page(body: &[u8]) -> Result<Page, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("changes body: {e}"))?;
    let count = |k: &str| v["data"][k].as_array().map_or(0, Vec::len);
    Ok(Page {
        records: count("tasks") + count("lists") + count("deleted"),
        next: v["meta"]["next"]
            .as_str()
            .ok_or("changes body without meta.next")?
            .to_owned(),
        has_more: v["meta"]["has_more"].as_bool().unwrap_or(false),
    })
}

async fn changes_page(
    sender: &mut Sender,
    addr: SocketAddr,
    user: &User,
    since: Option<&str>,
) -> Result<Page, String> {
    let mut path = format!("/api/{}/changes?limit={SYNC_LIMIT}", user.id);
    if let Some(s) = since {
        let _ = write!(path, "&since={}", query_escape(s));
    }
    let req = load::user_request(addr, user, Method::GET, &path, None);
    let (status, body) = load::exchange(sender, req).await?;
    if status != 200 {
        return Err(format!("GET /changes: HTTP {status}"));
    }
    parse_page(&body)
}

/// The result of [`initial_sync`].
pub struct InitialSync {
    /// The row: total time per sync.
    pub row: SyncRow,
    /// The token the last sync ended with (for the incremental syncs).
    pub token: String,
}

/// `runs` initial syncs of `user` over one keep-alive connection: `GET /changes` without
/// `since`, then with each page's `next` until `has_more` is false. Each sync's time includes
/// reading every page's JSON, as a client does.
pub async fn initial_sync(
    addr: SocketAddr,
    user: &User,
    runs: usize,
) -> Result<InitialSync, String> {
    let mut sender = load::connect(addr).await?;
    let (mut times, mut records, mut pages, mut token) = (Vec::new(), 0, 0, String::new());
    for _ in 0..runs.max(1) {
        let t0 = Instant::now();
        let (mut n, mut p) = (0usize, 0usize);
        let mut since: Option<String> = None;
        loop {
            let page = changes_page(&mut sender, addr, user, since.as_deref()).await?;
            n += page.records;
            p += 1;
            since = Some(page.next);
            if !page.has_more {
                break;
            }
        }
        times.push(t0.elapsed().as_nanos() as u64);
        (records, pages) = (n, p);
        token = since.unwrap_or_default();
    }
    let lat = Series::of(times);
    let rate = records as f64 / (lat.p50 as f64 / 1e9).max(1e-9);
    Ok(InitialSync {
        row: SyncRow {
            what: format!(
                "initial sync of {} ({records} records in {pages} pages of up to {SYNC_LIMIT}), total per sync",
                user.id
            ),
            conns: 1,
            lat,
            throughput: format!("{rate:.0} records/s at p50"),
            errors: 0,
        },
        token,
    })
}

/// `runs` incremental syncs of `user`: each after `writes` merge patches of random tasks of
/// its own (not timed), `GET /changes?since=<the last next>` is timed. Starts from `token`.
pub async fn incremental_sync(
    addr: SocketAddr,
    user: &User,
    mut token: String,
    runs: usize,
    writes: usize,
) -> Result<SyncRow, String> {
    if user.task_ids.is_empty() {
        return Err(format!("{} has no tasks to write", user.id));
    }
    let mut sender = load::connect(addr).await?;
    let mut rng = Gen::new(0x5ac_0001);
    let (mut times, mut records, mut errors) = (Vec::new(), 0usize, 0u64);
    for _ in 0..runs.max(1) {
        for _ in 0..writes {
            let id = user.task_ids[rng.below(user.task_ids.len())];
            let body = serde_json::json!({ "title": rng.title() }).to_string();
            let req = load::user_request(
                addr,
                user,
                Method::PATCH,
                &format!("/api/{}/tasks/{id}", user.id),
                Some(("application/merge-patch+json", body)),
            );
            let (status, _) = load::exchange(&mut sender, req).await?;
            if status != 200 {
                return Err(format!("PATCH before an incremental sync: HTTP {status}"));
            }
        }
        let t0 = Instant::now();
        let page = changes_page(&mut sender, addr, user, Some(&token)).await?;
        times.push(t0.elapsed().as_nanos() as u64);
        // Every sync must see the writes made since the last one.
        if page.records == 0 {
            errors += 1;
        }
        records += page.records;
        token = page.next;
    }
    let n = times.len().max(1);
    Ok(SyncRow {
        what: format!(
            "incremental sync of {} after {writes} patches (`since` = the last `next`)",
            user.id
        ),
        conns: 1,
        lat: Series::of(times),
        throughput: format!("{:.1} records per sync", records as f64 / n as f64),
        errors,
    })
}

// ---------------------------------------------------------------------------------------------
// Output.

fn ms(ns: u64) -> String {
    crate::bench::ms(ns)
}

/// Prints a sync row to stdout.
pub fn print_sync_row(r: &SyncRow) {
    println!(
        "  sync   {} @ {} conns: p50 {} ms  p95 {} ms  p99 {} ms  max {} ms  ({} runs)  {}  errors {}",
        r.what,
        r.conns,
        ms(r.lat.p50),
        ms(r.lat.p95),
        ms(r.lat.p99),
        ms(r.lat.max),
        r.lat.n,
        r.throughput,
        r.errors
    );
}

/// The sync section: its table, then `notes` (one paragraph each).
pub fn render_sync(w: &mut String, rows: &[SyncRow], notes: &[String]) {
    let _ = writeln!(w, "\n### Sync and batches\n");
    let _ = writeln!(
        w,
        "Over HTTP like the rows above. The initial sync pages through `GET /changes` without \
         `since`, {SYNC_LIMIT} records a page, until `has_more` is false, on one keep-alive \
         connection, timed from the first request to the last page read and parsed (the \
         loader parses each page's JSON, as a client does); `runs` is how many times. The \
         incremental sync is one `GET /changes?since=` after patches of the same user (not \
         timed). `POST /batch` sends 100 `create` operations per request in a closed loop; its \
         ops/s counts operations.\n"
    );
    let _ = writeln!(
        w,
        "| measurement | conns | runs | p50 ms | p95 ms | p99 ms | max ms | throughput | errors |"
    );
    let _ = writeln!(w, "|---|--:|--:|--:|--:|--:|--:|--:|--:|");
    for r in rows {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.what,
            r.conns,
            r.lat.n,
            ms(r.lat.p50),
            ms(r.lat.p95),
            ms(r.lat.p99),
            ms(r.lat.max),
            r.throughput,
            r.errors
        );
    }
    for n in notes {
        let _ = writeln!(w, "\n{n}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_escaped_for_the_query() {
        assert_eq!(query_escape("aZ09-._~"), "aZ09-._~");
        assert_eq!(query_escape("a+b/c=="), "a%2Bb%2Fc%3D%3D");
    }

    #[test]
    fn pages_are_counted() {
        let p = parse_page(
            br#"{"data":{"tasks":[{},{}],"lists":[{}],"deleted":[]},"meta":{"next":"t","has_more":true}}"#,
        )
        .unwrap();
        assert_eq!((p.records, p.next.as_str(), p.has_more), (3, "t", true));
        assert!(parse_page(b"{}").is_err());
    }
}
