//! Accepting connections for the tonic servers, within [`ConnLimits`].
//!
//! One task per listener accepts; a failed `accept` (out of file
//! descriptors, ...) is logged and retried after a pause that doubles up to
//! [`ACCEPT_BACKOFF_MAX`] instead of spinning a core. A connection over the
//! listener's limit is closed at once. Each TLS handshake runs in its own
//! task, bounded by the handshake timeout, so a stalled ClientHello holds
//! neither the accept loop nor a descriptor for long; a refused or timed-out
//! handshake is logged with the caller's address (never with key material).
//! Every accepted connection is closed after the idle timeout without a
//! received byte. Log lines about refused connections are throttled, so a
//! flood cannot flood the log.
//!
//! The TLS handshake happens here rather than in tonic, which neither bounds
//! it nor logs refusals above debug level; the resulting
//! `tokio_rustls::server::TlsStream` gives tonic the peer's certificates
//! (`Request::peer_certs`) exactly as its own handshake would.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tracing::{debug, warn};

use crate::defaults::{ACCEPT_BACKOFF_MAX, ACCEPT_BACKOFF_MIN};
use crate::limits::ConnLimits;

/// Accepted connections, as tonic's `serve_with_incoming*` takes them.
pub type Incoming<S> = ReceiverStream<io::Result<Conn<S>>>;

/// Accept TLS connections on `listener` (`name` appears in logs).
pub fn tls(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    limits: ConnLimits,
    name: &'static str,
) -> Incoming<TlsStream<TcpStream>> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    accept_loop(listener, limits, name, limits.idle_timeout, move |tcp| {
        let acceptor = acceptor.clone();
        async move { acceptor.accept(tcp).await }
    })
}

/// Accept plaintext connections on `listener` (the health port): the first
/// bytes must arrive within the handshake timeout.
pub fn plain(listener: TcpListener, limits: ConnLimits, name: &'static str) -> Incoming<TcpStream> {
    accept_loop(
        listener,
        limits,
        name,
        limits.handshake_timeout,
        |tcp| async move { Ok(tcp) },
    )
}

fn accept_loop<S, F, Fut>(
    listener: TcpListener,
    limits: ConnLimits,
    name: &'static str,
    first_read_within: Duration,
    handshake: F,
) -> Incoming<S>
where
    S: Send + 'static,
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = io::Result<S>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(16);
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let log = Arc::new(Throttle::default());
    tokio::spawn(async move {
        let mut backoff = Duration::ZERO;
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
                // The server stopped: drop the listener.
                _ = tx.closed() => return,
            };
            let (tcp, remote) = match accepted {
                Ok(a) => {
                    backoff = Duration::ZERO;
                    a
                }
                Err(e) if per_connection(&e) => {
                    debug!(listener = name, error = %e, "accept: connection failed");
                    continue;
                }
                Err(e) => {
                    backoff = (backoff * 2).clamp(ACCEPT_BACKOFF_MIN, ACCEPT_BACKOFF_MAX);
                    if let Some(suppressed) = log.allow() {
                        warn!(listener = name, error = %e, pause_ms = backoff.as_millis() as u64, suppressed,
                            "accept failed (out of file descriptors?): pausing");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => continue,
                        _ = tx.closed() => return,
                    }
                }
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                if let Some(suppressed) = log.allow() {
                    warn!(listener = name, %remote, max = limits.max_connections, suppressed,
                        "connection limit reached: connection closed");
                }
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (tx, log) = (tx.clone(), log.clone());
            let shake = handshake(tcp);
            tokio::spawn(async move {
                match tokio::time::timeout(limits.handshake_timeout, shake).await {
                    Ok(Ok(io)) => {
                        let conn = Conn::new(io, permit, first_read_within, limits.idle_timeout);
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Ok(Err(e)) => {
                        if let Some(suppressed) = log.allow() {
                            warn!(listener = name, %remote, error = %e, suppressed, "TLS handshake refused");
                        }
                    }
                    Err(_) => {
                        if let Some(suppressed) = log.allow() {
                            warn!(listener = name, %remote, suppressed,
                                "no TLS handshake within {:?}: connection closed", limits.handshake_timeout);
                        }
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Errors of `accept` that concern one connection only: accept again at once.
fn per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// At most [`Throttle::LINES`] log lines per [`Throttle::WINDOW`]; the next
/// line after a quiet spell says how many were left out.
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    state: Mutex<ThrottleState>,
}

#[derive(Debug, Default)]
struct ThrottleState {
    window: Option<Instant>,
    lines: u32,
    suppressed: u64,
}

impl Throttle {
    const LINES: u32 = crate::defaults::REFUSAL_LOG_LINES;
    const WINDOW: Duration = crate::defaults::REFUSAL_LOG_WINDOW;

    /// `Some(lines left out since the last one)` if a line may be logged now.
    pub(crate) fn allow(&self) -> Option<u64> {
        let mut st = self.state.lock().expect("throttle lock");
        let now = Instant::now();
        if st
            .window
            .is_none_or(|w| now.duration_since(w) >= Self::WINDOW)
        {
            st.window = Some(now);
            st.lines = 0;
        }
        if st.lines < Self::LINES {
            st.lines += 1;
            Some(std::mem::take(&mut st.suppressed))
        } else {
            st.suppressed += 1;
            None
        }
    }
}

/// An accepted connection: holds its slot of the listener's limit, and
/// fails reads once nothing was received for the idle timeout.
#[derive(Debug)]
pub struct Conn<S> {
    io: S,
    _permit: OwnedSemaphorePermit,
    idle: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl<S> Conn<S> {
    fn new(io: S, permit: OwnedSemaphorePermit, first: Duration, idle: Duration) -> Self {
        Conn {
            io,
            _permit: permit,
            idle,
            deadline: Box::pin(tokio::time::sleep(first)),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Conn<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    let next = tokio::time::Instant::now() + this.idle;
                    this.deadline.as_mut().reset(next);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "nothing received within the idle timeout",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Conn<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl<S: Connected> Connected for Conn<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_lets_ten_lines_through_then_counts() {
        let t = Throttle::default();
        for _ in 0..10 {
            assert_eq!(t.allow(), Some(0));
        }
        assert_eq!(t.allow(), None);
        assert_eq!(t.allow(), None);
        t.state.lock().unwrap().window = Some(Instant::now() - Throttle::WINDOW);
        assert_eq!(
            t.allow(),
            Some(2),
            "the next line says how many were left out"
        );
    }
}
