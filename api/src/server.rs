//! The connection loop of `allot serve`: HTTP/1.1 over each accepted TCP
//! connection, with the limits no handler can enforce.
//!
//! ```text
//! accept ─▶ connection task ─▶ hyper (header read timeout) ─▶ router
//!                │                    ▲
//!                └── IdleTimeout ─────┘  closes a connection idle with no request in flight
//! shutdown ─▶ stop accepting ─▶ close idle connections ─▶ wait for requests in flight
//!                                                        until `api.shutdown_timeout`
//! ```
//!
//! - A client has `api.header_read_timeout` to send a request's headers: hyper
//!   closes a connection still sending them (a half-sent request) and one that
//!   stays silent that long after its last answer.
//! - [`IdleTimeout`] closes a connection that, with no request in flight, has
//!   read and written nothing for `api.idle_timeout` (a stalled body, a client
//!   that stopped reading its answer).
//! - At shutdown a connection with no request in flight is closed at once; the
//!   others finish their request within `api.shutdown_timeout`, after which
//!   they are closed too, so no client can hold a stopping server.
//!
//! With `api.tls_cert` set, each connection is TLS: its handshake must end
//! within `api.header_read_timeout`, and the idle timeout counts its
//! encrypted bytes.
//!
//! Each request carries the peer's address as [`ConnectInfo`], which the
//! anonymous rate limit keys on.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// The connection limits, from `[api]`.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// `api.header_read_timeout`.
    pub header_read: Duration,
    /// `api.idle_timeout`.
    pub idle: Duration,
    /// `api.shutdown_timeout`.
    pub shutdown: Duration,
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops as the
/// module documentation says. With `tls`, every connection must complete a
/// TLS handshake within `api.header_read_timeout` before its first request.
pub async fn serve_connections(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let (stop, stopped) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let accepted = Accepted { peer, app: app.clone(), limits, stopped: stopped.clone() };
                    connections.spawn(connection(stream, accepted, tls.clone()));
                }
                Err(error) => {
                    // Out of file descriptors, or a connection reset before it
                    // was accepted: wait a moment rather than spin.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let _ = stop.send(true);
    let drained = tokio::time::timeout(limits.shutdown, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "closing the connections whose requests did not finish within api.shutdown_timeout"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// What a connection is served with.
struct Accepted {
    peer: SocketAddr,
    app: Router,
    limits: ConnectionLimits,
    stopped: watch::Receiver<bool>,
}

/// One connection, over TLS when `tls` is set, until it ends, times out or
/// the server stops.
async fn connection(stream: TcpStream, accepted: Accepted, tls: Option<TlsAcceptor>) {
    let activity = Arc::new(Activity::new());
    let stream = IdleTimeout::new(stream, accepted.limits.idle, Arc::clone(&activity));
    match tls {
        None => http_connection(stream, accepted, activity).await,
        Some(acceptor) => {
            let handshake = acceptor.accept(stream);
            match tokio::time::timeout(accepted.limits.header_read, handshake).await {
                Ok(Ok(stream)) => http_connection(stream, accepted, activity).await,
                Ok(Err(error)) => {
                    tracing::debug!(%error, peer = %accepted.peer, "TLS handshake failed");
                }
                Err(_) => {
                    tracing::debug!(peer = %accepted.peer, "TLS handshake timed out");
                }
            }
        }
    }
}

/// HTTP/1.1 over one connection's byte stream.
async fn http_connection<S>(stream: S, accepted: Accepted, activity: Arc<Activity>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Accepted {
        peer,
        app,
        limits,
        mut stopped,
    } = accepted;
    let io = TokioIo::new(stream);
    let requests = Arc::clone(&activity);
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let in_flight = InFlight::enter(Arc::clone(&requests));
        let app = app.clone();
        async move {
            let response = app.oneshot(request.map(Body::new)).await;
            drop(in_flight);
            response
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read);
    let served = builder.serve_connection(io, service);
    let stop = async move {
        // The guard `wait_for` returns must not live across an await.
        let _ = stopped.wait_for(|stop| *stop).await.map(|_| ());
    };
    tokio::pin!(served);
    tokio::select! {
        result = served.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%error, %peer, "connection ended");
            }
        }
        () = stop => {
            if activity.in_flight.load(Ordering::Acquire) == 0 {
                // Nothing to finish: a half-sent request is no request.
                return;
            }
            served.as_mut().graceful_shutdown();
            let _ = served.await;
        }
    }
}

/// What a connection is doing, shared by its IO and its requests.
struct Activity {
    /// The connection's start.
    origin: Instant,
    /// Requests handed to the router and not answered yet.
    in_flight: AtomicUsize,
    /// When the last request was answered, in milliseconds since `origin`.
    last_answer_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            origin: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_answer_ms: AtomicU64::new(0),
        }
    }

    fn last_answer(&self) -> Instant {
        self.origin + Duration::from_millis(self.last_answer_ms.load(Ordering::Acquire))
    }
}

/// A request in flight, counted until it is answered.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn enter(activity: Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let since = u64::try_from(self.0.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.last_answer_ms.store(since, Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A stream that fails with `TimedOut` once it has been idle (no byte read or
/// written, no request in flight) for its timeout.
pub struct IdleTimeout<S> {
    inner: S,
    timeout: Duration,
    last_io: Instant,
    sleep: Pin<Box<Sleep>>,
    activity: Arc<Activity>,
}

impl<S> IdleTimeout<S> {
    fn new(inner: S, timeout: Duration, activity: Arc<Activity>) -> IdleTimeout<S> {
        let now = Instant::now();
        IdleTimeout {
            inner,
            timeout,
            last_io: now,
            sleep: Box::pin(tokio::time::sleep_until(now + timeout)),
            activity,
        }
    }

    /// Whether the connection has been idle for the timeout; otherwise the
    /// task is woken when it would be.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if self.activity.in_flight.load(Ordering::Acquire) > 0 {
            return false;
        }
        let deadline = self.last_io.max(self.activity.last_answer()) + self.timeout;
        if self.sleep.deadline() != deadline {
            self.sleep.as_mut().reset(deadline);
        }
        self.sleep.as_mut().poll(cx).is_ready()
    }

    fn timed_out<T>(&self) -> Poll<io::Result<T>> {
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the connection was idle for api.idle_timeout",
        )))
    }

    /// What a write that returned `polled` gives back: bytes written count as
    /// activity, and a write still pending past the idle timeout fails.
    fn written(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match polled {
            Poll::Ready(result) => {
                if matches!(result, Ok(written) if written > 0) {
                    self.last_io = Instant::now();
                }
                Poll::Ready(result)
            }
            Poll::Pending if self.expired(cx) => self.timed_out(),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleTimeout<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.last_io = Instant::now();
                }
                Poll::Ready(result)
            }
            Poll::Pending if this.expired(cx) => this.timed_out(),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.written(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.written(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending if this.expired(cx) => this.timed_out(),
            other => other,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const IDLE: Duration = Duration::from_millis(300);

    #[tokio::test]
    async fn an_idle_stream_times_out_but_not_while_a_request_is_in_flight() {
        let (client, server) = tokio::io::duplex(64);
        let activity = Arc::new(Activity::new());
        let mut stream = IdleTimeout::new(server, IDLE, Arc::clone(&activity));
        let mut buf = [0u8; 8];

        // Busy: a request in flight keeps the connection however long it takes.
        let request = InFlight::enter(Arc::clone(&activity));
        let waited = tokio::time::timeout(IDLE * 3, stream.read(&mut buf)).await;
        assert!(waited.is_err(), "a busy connection timed out");
        drop(request);

        // Idle: the answer just went out, so the clock starts there.
        let started = Instant::now();
        let error = stream.read(&mut buf).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        let waited = started.elapsed();
        assert!(
            waited >= IDLE - Duration::from_millis(20) && waited < IDLE * 3,
            "{waited:?}"
        );
        drop(client);
    }

    #[tokio::test]
    async fn bytes_moving_keep_a_stream_alive() {
        let (mut client, server) = tokio::io::duplex(64);
        let activity = Arc::new(Activity::new());
        let mut stream = IdleTimeout::new(server, IDLE, activity);
        let writer = tokio::spawn(async move {
            for _ in 0..4 {
                tokio::time::sleep(IDLE / 2).await;
                client.write_all(b"x").await.unwrap();
            }
            client
        });
        let mut buf = [0u8; 1];
        for _ in 0..4 {
            stream.read_exact(&mut buf).await.unwrap();
        }
        let _client = writer.await.unwrap();
        let error = stream.read(&mut buf).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }
}
