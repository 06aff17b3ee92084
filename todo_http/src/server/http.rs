//! [`serve`]: hyper's HTTP/1.1 and HTTP/2 (h2c) connections around a poem endpoint, with the
//! limits a server facing the internet needs.
//!
//! hyper parses and frames every message (and refuses what a proxy in front could frame another
//! way); this module only decides which connections exist and for how long, and checks `Host`.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use poem::http::uri::{Authority, Scheme};
use poem::http::{StatusCode, Version, header};
use poem::web::{LocalAddr, RemoteAddr};
use poem::{Addr, Endpoint, EndpointExt, IntoResponse, Request, Response};

use super::io::conn_io;
use crate::problem::Problem;

/// Connection-level limits of [`serve`].
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// A request head (request line and headers) must arrive in full within this long of the
    /// server starting to wait for it, that is of the connection opening or of the previous
    /// response being sent; otherwise the connection is closed. An idle keep-alive connection is
    /// closed after it too. Default 30 s.
    pub header_read_timeout: Duration,
    /// A client that stops reading its response for this long (the server's writes make no
    /// progress) loses its connection. Default 30 s.
    pub write_timeout: Duration,
    /// Most client connections open at once; further ones wait in the listen backlog until one
    /// closes. (The process's open-file limit, `ulimit -n`, must be above it.) Default 10,000.
    pub max_connections: usize,
    /// After the shutdown signal, how long in-flight requests may finish before the remaining
    /// connections are dropped. Default 10 s.
    pub shutdown_grace: Duration,
    /// HTTP/2: most streams (requests) open at once on one connection. Default 100.
    pub h2_max_concurrent_streams: u32,
    /// Largest request head accepted, in bytes: an HTTP/1.1 head beyond it gets 431, an HTTP/2
    /// header list beyond it resets the stream. Default 64 KiB.
    pub max_header_bytes: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            shutdown_grace: Duration::from_secs(10),
            h2_max_concurrent_streams: 100,
            max_header_bytes: 64 * 1024,
        }
    }
}

/// Serves `app` on `listener` over HTTP/1.1 and, by prior knowledge, HTTP/2 (h2c) until
/// `shutdown` completes. Then it stops accepting (new connections are refused), lets in-flight
/// requests finish for up to `opts.shutdown_grace`, and returns. Idle keep-alive connections
/// close at once on shutdown.
///
/// Compared with `poem::Server`, it bounds how long a client may take to send a request head or
/// to read a response, and how many connections are open at once, so slow or abusive clients
/// cannot hold resources without end; and no connection is ever reset: a closing connection
/// first sends its FIN, then reads and discards what the client still sends for a moment.
pub async fn serve<E>(
    listener: tokio::net::TcpListener,
    app: E,
    opts: &ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()>
where
    E: Endpoint + 'static,
{
    let app: Arc<poem::endpoint::BoxEndpoint<'static, Response>> =
        Arc::new(app.map_to_response().boxed());
    let local = LocalAddr(Addr::SocketAddr(listener.local_addr()?));
    let builder = Arc::new(builder(opts));
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(opts.max_connections.max(1)));
    let mut conns = tokio::task::JoinSet::new();
    let write_timeout = opts.write_timeout;
    tokio::pin!(shutdown);
    loop {
        let accepted = async {
            let slot = slots.clone().acquire_owned().await;
            (slot, listener.accept().await)
        };
        let (slot, (stream, peer)) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            // Reap finished connections (their tasks' memory is kept until joined).
            Some(_) = conns.join_next() => continue,
            (slot, accepted) = accepted => match (slot, accepted) {
                (Ok(slot), Ok(c)) => (slot, c),
                (Err(_), _) => break,
                (Ok(_), Err(e)) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = service(
            app.clone(),
            local.clone(),
            RemoteAddr(Addr::SocketAddr(peer)),
        );
        let io = TokioIo::new(conn_io(stream, write_timeout));
        let builder = builder.clone();
        let watch = graceful.watcher();
        conns.spawn(async move {
            let _open = crate::metrics::OpenConnection::new();
            let conn = builder.serve_connection_with_upgrades(io, service);
            if let Err(e) = watch.watch(conn).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    // Connections the kernel completed but nobody accepted yet would be reset when the listener
    // closes, with the request their client may already have sent: take each in and answer that
    // one request (a client that sends nothing within a second is closed).
    let backlog = Arc::new(builder_once(opts));
    for stream in accept_backlog(listener) {
        let service = service(
            app.clone(),
            local.clone(),
            RemoteAddr(Addr::SocketAddr(stream.1)),
        );
        let io = TokioIo::new(conn_io(stream.0, write_timeout));
        let backlog = backlog.clone();
        conns.spawn(async move {
            let _open = crate::metrics::OpenConnection::new();
            let _ = backlog.serve_connection(io, service).await;
        });
    }
    tracing::info!(connections = conns.len(), "no longer accepting; draining");
    let drained = async {
        graceful.shutdown().await;
        while conns.join_next().await.is_some() {}
    };
    if tokio::time::timeout(opts.shutdown_grace, drained)
        .await
        .is_err()
    {
        tracing::warn!(
            grace_secs = opts.shutdown_grace.as_secs_f64(),
            "grace period over: dropping the connections still open"
        );
    }
    conns.shutdown().await;
    Ok(())
}

/// The connection builder: HTTP/1.1 with its header timeout and half-closed clients allowed,
/// HTTP/2 by prior knowledge with bounded streams and headers.
fn builder(opts: &ServeOptions) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout)
        .half_close(true)
        .keep_alive(true)
        .max_buf_size(opts.max_header_bytes.max(8192));
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(opts.h2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(opts.max_header_bytes).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(20)
        .keep_alive_interval(None);
    b
}

/// The builder for connections taken from the backlog at shutdown: one request each.
fn builder_once(opts: &ServeOptions) -> auto::Builder<TokioExecutor> {
    let mut b = builder(opts);
    b.http1()
        .keep_alive(false)
        .header_read_timeout(opts.header_read_timeout.min(Duration::from_secs(1)));
    b
}

/// Closes the listener, returning the connections the kernel had completed but that were not
/// accepted yet.
fn accept_backlog(
    listener: tokio::net::TcpListener,
) -> Vec<(tokio::net::TcpStream, std::net::SocketAddr)> {
    let mut out = Vec::new();
    let Ok(listener) = listener.into_std() else {
        return out;
    };
    // The listener is non-blocking: accept until the backlog is empty.
    while let Ok((s, peer)) = listener.accept() {
        if s.set_nonblocking(true).is_err() {
            continue;
        }
        if let Ok(s) = tokio::net::TcpStream::from_std(s) {
            let _ = s.set_nodelay(true);
            out.push((s, peer));
        }
    }
    out
}

type HyperResponse =
    hyper::Response<http_body_util::combinators::BoxBody<bytes::Bytes, std::io::Error>>;

/// The poem endpoint as a hyper service for one connection.
fn service(
    app: Arc<poem::endpoint::BoxEndpoint<'static, Response>>,
    local: LocalAddr,
    remote: RemoteAddr,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = HyperResponse,
    Error = Infallible,
    Future = impl Future<Output = Result<HyperResponse, Infallible>> + Send + 'static,
> + Clone
+ Send
+ 'static {
    hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let (app, local, remote) = (app.clone(), local.clone(), remote.clone());
        async move {
            if let Err(detail) = check_host(&req) {
                let resp = Problem::new(StatusCode::BAD_REQUEST, detail)
                    .with_header(
                        header::CONNECTION,
                        poem::http::HeaderValue::from_static("close"),
                    )
                    .into_response();
                return Ok(resp.into());
            }
            let req = Request::from((req, local, remote, Scheme::HTTP));
            Ok(app.get_response(req).await.into())
        }
    })
}

/// RFC 9112 §3.2: an HTTP/1.1 request must carry exactly one `Host`, and any `Host` must be a
/// valid authority (no user info). HTTP/2 names the host in `:authority` instead.
fn check_host<B>(req: &hyper::Request<B>) -> Result<(), &'static str> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err("more than one Host header");
    }
    match first {
        None if req.version() == Version::HTTP_11 => Err("the Host header is required"),
        None => Ok(()),
        Some(v) => {
            let valid = std::str::from_utf8(v.as_bytes())
                .ok()
                .filter(|s| !s.contains('@'))
                .is_some_and(|s| s.is_empty() || s.parse::<Authority>().is_ok());
            // An empty Host is allowed when the target has no authority (RFC 9112 §3.2).
            if valid {
                Ok(())
            } else {
                Err("the Host header is not a valid host[:port]")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::check_host;
    use poem::http::{Request, Version};

    fn req(version: Version, hosts: &[&str]) -> Request<()> {
        let mut b = Request::builder().uri("/healthz").version(version);
        for h in hosts {
            b = b.header("host", *h);
        }
        b.body(()).expect("request")
    }

    #[test]
    fn host_rules_of_rfc_9112() {
        assert!(check_host(&req(Version::HTTP_11, &["example.com"])).is_ok());
        assert!(check_host(&req(Version::HTTP_11, &["127.0.0.1:8080"])).is_ok());
        assert!(check_host(&req(Version::HTTP_11, &["[::1]:8080"])).is_ok());
        assert!(check_host(&req(Version::HTTP_10, &[])).is_ok());
        assert!(check_host(&req(Version::HTTP_2, &[])).is_ok());
        assert!(check_host(&req(Version::HTTP_11, &[])).is_err());
        assert!(check_host(&req(Version::HTTP_11, &["a", "b"])).is_err());
        assert!(check_host(&req(Version::HTTP_11, &["a", "a"])).is_err());
        assert!(check_host(&req(Version::HTTP_11, &["user@example.com"])).is_err());
        assert!(check_host(&req(Version::HTTP_11, &["exa mple.com"])).is_err());
        assert!(check_host(&req(Version::HTTP_11, &["example.com/path"])).is_err());
        assert!(check_host(&req(Version::HTTP_10, &["bad host"])).is_err());
    }
}
