//! One HTTP/1.1 connection: read a request head, hand the request to the endpoint with its body
//! streamed from the socket, write the response, repeat while the connection stays reusable.
//!
//! Why not hyper's server: hyper gives every connection an 8 KiB response-head buffer for its
//! whole life and reads each request into an 8 KiB buffer that the parsed headers keep alive
//! until the response is sent; neither size can be set on a server. With 1,000 clients each
//! waiting for an answer that is 16 MB of the process. Here a connection holds no buffer while it
//! is idle, the head is read into a small one that is freed once its headers are copied out,
//! and the response is written straight from its body.
//!
//! Request framing follows RFC 9112: `Content-Length` (every value equal) or
//! `Transfer-Encoding: chunked`, never both (a request carrying both is refused: a proxy in
//! front may have framed it the other way); `Expect: 100-continue` is answered when the
//! endpoint first reads the body. A connection whose request body was not read to its end is
//! closed after the response, lingering briefly so that a client still sending the rest sees
//! the answer rather than a reset.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use poem::endpoint::BoxEndpoint;
use poem::http::uri::Scheme;
use poem::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, Version, header};
use poem::web::{LocalAddr, RemoteAddr};
use poem::{Body, Endpoint, IntoResponse, Request, RequestParts, Response};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::problem::Problem;

/// Largest request head (request line and headers) accepted; larger ones get 431.
const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in a request head; more get 431.
const MAX_HEADERS: usize = 100;
/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 4096;
/// Longest chunk-size line or trailer section of a chunked body.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;
/// After a response that left part of its request body unread: how long, and how many bytes,
/// the connection keeps discarding what the client still sends before it is closed.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 4 * 1024 * 1024;
/// Most bytes of an unread request body skipped (from what has already arrived) to keep the
/// connection open for another request.
const DRAIN_BYTES: usize = 128 * 1024;
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// What every connection shares.
pub(super) struct Shared {
    pub app: BoxEndpoint<'static, Response>,
    pub local: LocalAddr,
    pub header_read_timeout: Duration,
}

/// The socket and the body state of the request being served, shared with that request's
/// body reader.
struct Conn {
    io: TcpStream,
    body: Mutex<BodyState>,
}

impl Conn {
    fn body(&self) -> MutexGuard<'_, BodyState> {
        // A panic while holding the lock leaves a state that is still consistent enough to be
        // judged (the connection is then closed as "body not finished").
        self.body.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How the rest of the request body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes are left.
    Length(u64),
    /// Chunked, at this point of the chunk grammar.
    Chunked(Chunk),
    /// The body has been read to its end (or there was none).
    Done,
    /// The body broke its framing or the client went away mid-body.
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// This many bytes of chunk data are left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines up to an empty one; bytes of them seen so far.
    Trailers(usize),
}

struct BodyState {
    /// Bytes read from the socket and not consumed yet: the body's, and possibly the next
    /// request's.
    buf: BytesMut,
    framing: Framing,
    /// Bytes of the `100 Continue` interim response still to send (`None`: none asked for).
    continue_sent: Option<usize>,
}

/// A parsed request head.
struct Head {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    framing: Framing,
    /// The client allows the connection to be reused.
    keep_alive: bool,
    expect_continue: bool,
}

/// Why a request head was refused.
#[derive(Debug)]
enum HeadError {
    Bad(&'static str),
    TooLarge,
}

/// Serves one connection until it closes, fails, times out waiting for a head, or, once
/// `shutdown` turns true, has no request in progress.
pub(super) async fn serve_connection(
    io: TcpStream,
    remote: RemoteAddr,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let conn = Arc::new(Conn {
        io,
        body: Mutex::new(BodyState {
            buf: BytesMut::new(),
            framing: Framing::Done,
            continue_sent: None,
        }),
    });
    // Bytes read beyond the previous request (a pipelined next one).
    let mut buf = BytesMut::new();
    loop {
        let deadline = Instant::now() + shared.header_read_timeout;
        let head = match read_head(&conn.io, &mut buf, deadline, &mut shutdown).await {
            Ok(Some(head)) => head,
            // Closed by the client, idle at shutdown, or timed out.
            Ok(None) => return,
            Err(ReadHeadError::Io(e)) => {
                tracing::debug!(error = %e, "connection failed while reading a request head");
                return;
            }
            Err(ReadHeadError::Head(e)) => {
                let (status, detail) = match e {
                    HeadError::Bad(why) => (StatusCode::BAD_REQUEST, why),
                    HeadError::TooLarge => (
                        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        "the request head is too large",
                    ),
                };
                let resp = Problem::new(status, detail).into_response();
                let _ = write_response(&conn.io, resp, false, false, Version::HTTP_11).await;
                linger(conn).await;
                return;
            }
        };
        if buf.is_empty() {
            // Nothing pipelined: give the read buffer back instead of keeping it while the
            // request waits and runs.
            buf = BytesMut::new();
        }
        let is_head = head.method == Method::HEAD;
        let version = head.version;
        let body = if head.framing == Framing::Done {
            Body::empty()
        } else {
            let mut st = conn.body();
            st.buf = std::mem::take(&mut buf);
            st.framing = head.framing;
            st.continue_sent = head.expect_continue.then_some(0);
            drop(st);
            Body::from_async_read(BodyReader { conn: conn.clone() })
        };
        let mut http = poem::http::Request::new(());
        *http.method_mut() = head.method;
        *http.uri_mut() = head.uri;
        *http.version_mut() = head.version;
        *http.headers_mut() = head.headers;
        let (parts, ()) = http.into_parts();
        let parts = RequestParts::from((parts, shared.local.clone(), remote.clone(), Scheme::HTTP));
        let resp = shared
            .app
            .get_response(Request::from_parts(parts, body))
            .await;

        // The request and its body reader are gone now; what remains of the body decides
        // whether the connection can carry another request.
        let body_done = head.framing == Framing::Done || {
            let mut st = conn.body();
            if st.drain_available(&conn.io) {
                buf = std::mem::take(&mut st.buf);
                true
            } else {
                st.buf = BytesMut::new();
                false
            }
        };
        let reuse = head.keep_alive && body_done && !*shutdown.borrow();
        if let Err(e) = write_response(&conn.io, resp, reuse, is_head, version).await {
            tracing::debug!(error = %e, "connection failed while writing a response");
            return;
        }
        if !reuse {
            if !body_done {
                linger(conn).await;
            }
            return;
        }
    }
}

enum ReadHeadError {
    Io(io::Error),
    Head(HeadError),
}

/// Reads until `buf` holds a whole request head and parses it. `Ok(None)`: the client closed
/// the connection, the deadline passed, or shutdown began while no request had started.
async fn read_head(
    io: &TcpStream,
    buf: &mut BytesMut,
    deadline: Instant,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Option<Head>, ReadHeadError> {
    loop {
        if !buf.is_empty() {
            match parse_head(buf) {
                Ok(Some((head, len))) => {
                    buf.advance(len);
                    return Ok(Some(head));
                }
                Ok(None) if buf.len() >= MAX_HEAD => {
                    return Err(ReadHeadError::Head(HeadError::TooLarge));
                }
                Ok(None) => {}
                Err(e) => return Err(ReadHeadError::Head(e)),
            }
        }
        let idle = buf.is_empty();
        tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop), if idle => return Ok(None),
            () = tokio::time::sleep_until(deadline) => return Ok(None),
            ready = io.readable() => ready.map_err(ReadHeadError::Io)?,
        }
        buf.reserve(READ_CHUNK);
        match io.try_read_buf(buf) {
            // The client closed its side; an unfinished head is dropped with it.
            Ok(0) => return Ok(None),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(ReadHeadError::Io(e)),
        }
    }
}

/// Parses a request head at the start of `buf`: the head and its length, or `None` when more
/// bytes are needed.
fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, HeadError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Bad("malformed HTTP request head")),
    };
    let method = Method::from_bytes(req.method.unwrap_or_default().as_bytes())
        .map_err(|_| HeadError::Bad("malformed request method"))?;
    let uri = Uri::try_from(req.path.unwrap_or_default())
        .map_err(|_| HeadError::Bad("malformed request target"))?;
    let version = match req.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_encoding = false;
    let mut close = false;
    let mut keep_alive = false;
    let mut expect_continue = false;
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| HeadError::Bad("malformed header name"))?;
        let value = HeaderValue::from_bytes(h.value)
            .map_err(|_| HeadError::Bad("malformed header value"))?;
        if name == header::CONTENT_LENGTH {
            let n = std::str::from_utf8(h.value)
                .ok()
                .map(|v| v.trim_matches([' ', '\t']))
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or(HeadError::Bad("malformed Content-Length"))?;
            if content_length.is_some_and(|m| m != n) {
                return Err(HeadError::Bad("conflicting Content-Length values"));
            }
            content_length = Some(n);
        } else if name == header::TRANSFER_ENCODING {
            transfer_encoding = true;
            // Only `chunked`, once, as the last coding: no other coding is supported.
            for coding in tokens(h.value) {
                if chunked || !coding.eq_ignore_ascii_case(b"chunked") {
                    return Err(HeadError::Bad("unsupported Transfer-Encoding"));
                }
                chunked = true;
            }
        } else if name == header::CONNECTION {
            for token in tokens(h.value) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name == header::EXPECT {
            if !h.value.eq_ignore_ascii_case(b"100-continue") {
                return Err(HeadError::Bad("unsupported Expect"));
            }
            expect_continue = true;
        }
        headers.append(name, value);
    }
    let framing = match (transfer_encoding, content_length) {
        (true, Some(_)) => {
            return Err(HeadError::Bad(
                "both Content-Length and Transfer-Encoding are set",
            ));
        }
        (true, None) if !chunked || version == Version::HTTP_10 => {
            return Err(HeadError::Bad("unsupported Transfer-Encoding"));
        }
        (true, None) => Framing::Chunked(Chunk::Size),
        (false, Some(n)) if n > 0 => Framing::Length(n),
        (false, _) => Framing::Done,
    };
    let keep_alive = match version {
        Version::HTTP_10 => keep_alive && !close,
        _ => !close,
    };
    Ok(Some((
        Head {
            method,
            uri,
            version,
            headers,
            framing,
            keep_alive,
            expect_continue: expect_continue && version == Version::HTTP_11,
        },
        len,
    )))
}

/// The comma-separated tokens of a header value, trimmed, empty ones skipped.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// Streams the request body from the connection's socket for the endpoint.
struct BodyReader {
    conn: Arc<Conn>,
}

impl AsyncRead for BodyReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let conn = &*self.conn;
        let mut st = conn.body();
        while let Some(sent) = st.continue_sent
            && sent < CONTINUE.len()
        {
            ready!(conn.io.poll_write_ready(cx))?;
            match conn.io.try_write(&CONTINUE[sent..]) {
                Ok(n) => st.continue_sent = Some(sent + n),
                // Readiness was cleared: poll it again.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        loop {
            match st.step(out) {
                Step::Produced => return Poll::Ready(Ok(())),
                Step::End => return Poll::Ready(Ok(())),
                Step::Invalid(why) => {
                    st.framing = Framing::Failed;
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, why)));
                }
                Step::NeedMore => {}
            }
            if let Err(e) = ready!(conn.io.poll_read_ready(cx)) {
                st.framing = Framing::Failed;
                return Poll::Ready(Err(e));
            }
            st.buf.reserve(READ_CHUNK);
            match conn.io.try_read_buf(&mut st.buf) {
                Ok(0) => {
                    st.framing = Framing::Failed;
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the client closed the connection before the body ended",
                    )));
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    st.framing = Framing::Failed;
                    return Poll::Ready(Err(e));
                }
            }
        }
    }
}

/// What one step of decoding the buffered body bytes gave.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Bytes were copied out.
    Produced,
    /// The body is over.
    End,
    /// More bytes must be read from the socket.
    NeedMore,
    Invalid(&'static str),
}

impl BodyState {
    /// Decodes from `buf` into `out` as far as the buffered bytes allow.
    fn step(&mut self, out: &mut ReadBuf<'_>) -> Step {
        loop {
            match self.framing {
                Framing::Done => return Step::End,
                Framing::Failed => return Step::Invalid("the request body is broken"),
                Framing::Length(left) => {
                    let n = self.copy_out(left, out);
                    if n == 0 {
                        return Step::NeedMore;
                    }
                    self.framing = match left - n {
                        0 => Framing::Done,
                        left => Framing::Length(left),
                    };
                    return Step::Produced;
                }
                Framing::Chunked(Chunk::Size) => match httparse::parse_chunk_size(&self.buf) {
                    Ok(httparse::Status::Complete((len, size))) => {
                        self.buf.advance(len);
                        self.framing = Framing::Chunked(match size {
                            0 => Chunk::Trailers(0),
                            n => Chunk::Data(n),
                        });
                    }
                    Ok(httparse::Status::Partial) if self.buf.len() > MAX_CHUNK_LINE => {
                        return Step::Invalid("chunk-size line too long");
                    }
                    Ok(httparse::Status::Partial) => return Step::NeedMore,
                    Err(_) => return Step::Invalid("malformed chunk size"),
                },
                Framing::Chunked(Chunk::Data(left)) => {
                    let n = self.copy_out(left, out);
                    if n == 0 {
                        return Step::NeedMore;
                    }
                    self.framing = Framing::Chunked(match left - n {
                        0 => Chunk::DataEnd,
                        left => Chunk::Data(left),
                    });
                    return Step::Produced;
                }
                Framing::Chunked(Chunk::DataEnd) => {
                    if self.buf.len() < 2 {
                        return Step::NeedMore;
                    }
                    if &self.buf[..2] != b"\r\n" {
                        return Step::Invalid("chunk data not followed by CRLF");
                    }
                    self.buf.advance(2);
                    self.framing = Framing::Chunked(Chunk::Size);
                }
                Framing::Chunked(Chunk::Trailers(seen)) => {
                    let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") else {
                        if seen + self.buf.len() > MAX_TRAILERS {
                            return Step::Invalid("trailer section too long");
                        }
                        return Step::NeedMore;
                    };
                    self.buf.advance(end + 2);
                    self.framing = if end == 0 {
                        Framing::Done
                    } else if seen + end + 2 > MAX_TRAILERS {
                        return Step::Invalid("trailer section too long");
                    } else {
                        Framing::Chunked(Chunk::Trailers(seen + end + 2))
                    };
                }
            }
        }
    }

    /// Reads past what the endpoint left of the body, as far as it has already arrived: whether
    /// its end was reached (so the connection can carry another request). A body the client
    /// has not sent yet (it may be waiting for `100 Continue`) is not waited for.
    fn drain_available(&mut self, io: &TcpStream) -> bool {
        let mut scratch = [0u8; 1024];
        let mut budget = DRAIN_BYTES;
        loop {
            let mut out = ReadBuf::new(&mut scratch);
            match self.step(&mut out) {
                Step::End => return true,
                Step::Invalid(_) => return false,
                Step::Produced => match budget.checked_sub(out.filled().len()) {
                    Some(left) => budget = left,
                    None => return false,
                },
                Step::NeedMore => {
                    self.buf.reserve(READ_CHUNK);
                    match io.try_read_buf(&mut self.buf) {
                        Ok(n) if n > 0 => {}
                        _ => return false,
                    }
                }
            }
        }
    }

    /// Copies up to `left` buffered bytes into `out`; how many.
    fn copy_out(&mut self, left: u64, out: &mut ReadBuf<'_>) -> u64 {
        let n = self
            .buf
            .len()
            .min(out.remaining())
            .min(usize::try_from(left).unwrap_or(usize::MAX));
        out.put_slice(&self.buf[..n]);
        self.buf.advance(n);
        n as u64
    }
}

/// Writes `resp` as an HTTP/1.1 response: its headers with `Content-Length`, `Date` and, when
/// the connection will not be reused, `Connection: close` (`keep-alive` to an HTTP/1.0 client
/// whose connection will be); no body for `HEAD`, 204 and 304.
async fn write_response(
    io: &TcpStream,
    resp: Response,
    reuse: bool,
    is_head: bool,
    version: Version,
) -> io::Result<()> {
    let (parts, body) = resp.into_parts();
    let body = match body.into_bytes().await {
        Ok(b) => b,
        Err(e) => return Err(io::Error::other(e)),
    };
    let status = parts.status;
    let mut head = Vec::with_capacity(256 + parts.headers.len() * 48);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::CONNECTION
            || name == header::DATE
        {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"date: ");
    date::append(&mut head);
    head.extend_from_slice(b"\r\n");
    let bodiless = status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || status.is_informational();
    // A HEAD answer whose body the endpoint already dropped says nothing of its length.
    if !(bodiless || is_head && body.is_empty()) {
        head.extend_from_slice(b"content-length: ");
        head.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if !reuse {
        head.extend_from_slice(b"connection: close\r\n");
    } else if version == Version::HTTP_10 {
        head.extend_from_slice(b"connection: keep-alive\r\n");
    }
    head.extend_from_slice(b"\r\n");
    let body = if bodiless || is_head {
        Bytes::new()
    } else {
        body
    };
    write_all(io, &head, &body).await
}

/// Writes `a` then `b`, as one `writev` where the socket takes it.
async fn write_all(io: &TcpStream, a: &[u8], b: &[u8]) -> io::Result<()> {
    let total = a.len() + b.len();
    let mut done = 0;
    while done < total {
        let slices = if done < a.len() {
            [IoSlice::new(&a[done..]), IoSlice::new(b)]
        } else {
            [IoSlice::new(&b[done - a.len()..]), IoSlice::new(&[])]
        };
        match io.try_write_vectored(&slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => io.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Closes a connection whose client may still be sending (a body that was not read): shuts
/// the sending side, then discards what arrives for a short while, so that the client reads
/// the response instead of a reset.
async fn linger(conn: Arc<Conn>) {
    let Ok(conn) = Arc::try_unwrap(conn) else {
        return;
    };
    let mut io = conn.io;
    let _ = tokio::io::AsyncWriteExt::shutdown(&mut io).await;
    let discard = async {
        let mut buf = vec![0u8; READ_CHUNK];
        let mut seen = 0;
        while seen < LINGER_BYTES {
            match tokio::io::AsyncReadExt::read(&mut io, &mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, discard).await;
}

/// The `Date` header value, formatted once a second per thread.
mod date {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};

    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }

    pub(super) fn append(out: &mut Vec<u8>) {
        let now = SystemTime::now();
        let secs = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        CACHED.with(|c| {
            let mut c = c.borrow_mut();
            if c.0 != secs {
                *c = (secs, httpdate::fmt_http_date(now));
            }
            out.extend_from_slice(c.1.as_bytes());
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Option<(Head, usize)>, HeadError> {
        parse_head(text.as_bytes())
    }

    fn framing(text: &str) -> Framing {
        parse(text).expect("valid").expect("complete").0.framing
    }

    fn refused(text: &str) -> &'static str {
        match parse(text) {
            Err(HeadError::Bad(why)) => why,
            other => panic!("accepted {text:?}: {:?}", other.map(|h| h.map(|h| h.1))),
        }
    }

    #[test]
    fn heads_parse_with_their_framing_and_connection_reuse() {
        let (head, len) =
            parse("GET /api/a/tasks?q=x HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nX-A: 2\r\n\r\nnext")
                .expect("valid")
                .expect("complete");
        assert_eq!(
            len,
            "GET /api/a/tasks?q=x HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nX-A: 2\r\n\r\n".len()
        );
        assert_eq!(head.method, Method::GET);
        assert_eq!(head.uri.path(), "/api/a/tasks");
        assert_eq!(head.uri.query(), Some("q=x"));
        assert_eq!(head.headers.get_all("x-a").iter().count(), 2);
        assert!(head.keep_alive);
        assert_eq!(head.framing, Framing::Done);

        assert!(matches!(parse("GET / HTTP/1.1\r\nHost: h\r\n"), Ok(None)));
        assert_eq!(
            framing("POST / HTTP/1.1\r\nContent-Length: 12\r\n\r\n"),
            Framing::Length(12)
        );
        assert_eq!(
            framing("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
            Framing::Done
        );
        assert_eq!(
            framing("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"),
            Framing::Length(5)
        );
        assert_eq!(
            framing("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n"),
            Framing::Chunked(Chunk::Size)
        );
        let close = |t: &str| !parse(t).expect("valid").expect("complete").0.keep_alive;
        assert!(close("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n"));
        assert!(close("GET / HTTP/1.0\r\n\r\n"));
        assert!(!close("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
        assert!(
            parse("PUT / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")
                .expect("valid")
                .expect("complete")
                .0
                .expect_continue
        );
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        for text in [
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nExpect: something-else\r\n\r\n",
            "GET /\x01 HTTP/1.1\r\n\r\n",
            "GET / HTTP/2.0\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
        ] {
            refused(text);
        }
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "X: y\r\n".repeat(MAX_HEADERS + 1)
        );
        assert!(matches!(parse(&many), Err(HeadError::TooLarge)));
    }

    /// Decodes `wire` fed in pieces of `piece` bytes, reading into a buffer of `out_cap`: the
    /// body (or why it failed) and the bytes after it, buffered or not yet fed.
    fn decode(
        framing: Framing,
        wire: &[u8],
        piece: usize,
        out_cap: usize,
    ) -> (Result<Vec<u8>, &'static str>, Vec<u8>) {
        let mut st = BodyState {
            buf: BytesMut::new(),
            framing,
            continue_sent: None,
        };
        let mut fed = 0;
        let mut got = Vec::new();
        let mut scratch = vec![0u8; out_cap];
        loop {
            let mut out = ReadBuf::new(&mut scratch);
            let step = st.step(&mut out);
            let mut rest = st.buf.to_vec();
            rest.extend_from_slice(&wire[fed..]);
            match step {
                Step::Produced => got.extend_from_slice(out.filled()),
                Step::End => return (Ok(got), rest),
                Step::Invalid(why) => return (Err(why), rest),
                Step::NeedMore if fed == wire.len() => return (Err("ran out of input"), rest),
                Step::NeedMore => {
                    let n = piece.min(wire.len() - fed);
                    st.buf.extend_from_slice(&wire[fed..fed + n]);
                    fed += n;
                }
            }
        }
    }

    #[test]
    fn bodies_decode_however_the_bytes_arrive_and_leave_the_next_request() {
        let chunked =
            b"5\r\nhello\r\n1;ext=1\r\n \r\n6\r\nworld!\r\n0\r\nTrailer: x\r\n\r\nGET /next";
        for piece in [1, 2, 3, 7, 64] {
            for cap in [1, 4, 1024] {
                let (body, rest) = decode(Framing::Chunked(Chunk::Size), chunked, piece, cap);
                assert_eq!(
                    body.as_deref(),
                    Ok(&b"hello world!"[..]),
                    "piece {piece}, cap {cap}"
                );
                assert_eq!(rest, b"GET /next", "piece {piece}, cap {cap}");
                let (body, rest) = decode(Framing::Length(5), b"helloGET /next", piece, cap);
                assert_eq!(body.as_deref(), Ok(&b"hello"[..]));
                assert_eq!(rest, b"GET /next");
            }
        }
        // A body cut short is not taken for a whole one.
        let (body, _) = decode(Framing::Length(10), b"hello", 3, 64);
        assert_eq!(body, Err("ran out of input"));
        let (body, _) = decode(Framing::Chunked(Chunk::Size), b"5\r\nhello\r\n", 3, 64);
        assert_eq!(body, Err("ran out of input"));
    }

    #[test]
    fn broken_chunked_bodies_fail() {
        for wire in [
            &b"zz\r\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhelloXX0\r\n\r\n",
            b"ffffffffffffffffff\r\n",
        ] {
            let (body, _) = decode(Framing::Chunked(Chunk::Size), wire, 64, 64);
            assert!(body.is_err(), "{:?} decoded", String::from_utf8_lossy(wire));
        }
        let long_line = format!("5;{}\r\n", "e".repeat(2 * MAX_CHUNK_LINE));
        let (body, _) = decode(Framing::Chunked(Chunk::Size), long_line.as_bytes(), 64, 64);
        assert_eq!(body, Err("chunk-size line too long"));
        let trailers = format!("0\r\n{}", "T: v\r\n".repeat(MAX_TRAILERS / 6 + 10));
        let (body, _) = decode(Framing::Chunked(Chunk::Size), trailers.as_bytes(), 64, 64);
        assert_eq!(body, Err("trailer section too long"));
    }

    proptest::proptest! {
        #[test]
        fn any_chunking_of_any_body_decodes_to_the_body(
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..600),
            cuts in proptest::collection::vec(1usize..80, 1..20),
            piece in 1usize..50,
            cap in 1usize..64,
        ) {
            let mut wire = Vec::new();
            let mut rest = &body[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = cuts[i % cuts.len()].min(rest.len());
                wire.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                wire.extend_from_slice(&rest[..n]);
                wire.extend_from_slice(b"\r\n");
                rest = &rest[n..];
                i += 1;
            }
            wire.extend_from_slice(b"0\r\n\r\nNEXT");
            let (got, after) = decode(Framing::Chunked(Chunk::Size), &wire, piece, cap);
            proptest::prop_assert_eq!(got, Ok(body.clone()));
            proptest::prop_assert_eq!(after, b"NEXT".to_vec());
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_parsers(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
        ) {
            let _ = parse_head(&bytes);
            let mut framed = b"POST / HTTP/1.1\r\n".to_vec();
            framed.extend_from_slice(&bytes);
            let _ = parse_head(&framed);
            let _ = decode(Framing::Chunked(Chunk::Size), &bytes, 7, 5);
        }
    }
}
