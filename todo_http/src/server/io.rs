//! The socket under each connection: a write timeout, and a close that never resets.
//!
//! Closing a TCP socket whose receive buffer still holds bytes makes the kernel send RST instead
//! of FIN, and a client that gets RST may lose the response it was reading (or a request it had
//! just sent on a keep-alive connection the server was closing sees a "connection reset" instead
//! of a clean close it can retry). So a connection's socket is not closed where hyper drops it:
//! it sends FIN, then reads and discards what the client still sends until the client closes
//! too, for at most [`LINGER_TIME`] and [`LINGER_BYTES`] (a "lingering close", as nginx and
//! Apache do). No crate offers this for a tokio socket; it is the few lines below.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_io_timeout::TimeoutStream;

/// How long a closed connection keeps discarding what its client still sends.
const LINGER_TIME: Duration = Duration::from_secs(2);
/// Most bytes discarded that way.
const LINGER_BYTES: usize = 1024 * 1024;

/// What hyper reads and writes: the socket, with writes that fail after stalling for the write
/// timeout, closed with a lingering close.
pub(crate) type ConnIo = Pin<Box<TimeoutStream<Lingering>>>;

/// Wraps an accepted socket.
pub(crate) fn conn_io(stream: TcpStream, write_timeout: Duration) -> ConnIo {
    let mut io = TimeoutStream::new(Lingering(Some(stream)));
    io.set_write_timeout(Some(write_timeout).filter(|d| !d.is_zero()));
    Box::pin(io)
}

/// A socket that is closed with a lingering close when dropped (inside a tokio runtime).
pub(crate) struct Lingering(Option<TcpStream>);

impl Lingering {
    fn stream(&mut self) -> io::Result<Pin<&mut TcpStream>> {
        self.0
            .as_mut()
            .map(Pin::new)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        if let (Some(stream), Ok(rt)) = (self.0.take(), tokio::runtime::Handle::try_current()) {
            rt.spawn(linger(stream));
        }
    }
}

/// Sends FIN, then discards input until the client closes (or the limits pass), then closes.
pub(crate) async fn linger(mut stream: TcpStream) {
    let _ = stream.shutdown().await;
    let mut buf = [0u8; 4096];
    let mut left = LINGER_BYTES;
    let discard = async {
        while left > 0 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, discard).await;
}

impl AsyncRead for Lingering {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.stream() {
            Ok(s) => s.poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.stream() {
            Ok(s) => s.poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.stream() {
            Ok(s) => s.poll_write_vectored(cx, bufs),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.stream() {
            Ok(s) => s.poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.stream() {
            Ok(s) => s.poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}
