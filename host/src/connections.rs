//! Accepting connections: what a client controls is bounded here, before
//! any request reaches the router.
//!
//! axum's `serve` keeps a connection as long as the client does: a client
//! that sends half a request, or opens connections and sends nothing, holds
//! a file descriptor each until comb runs out and both listeners stop
//! answering. Here each listener has
//! - a cap on open connections: past it, accepting waits until one closes;
//! - a header-read timeout: a request's head must arrive within it (HTTP/1;
//!   hyper's, which also covers the wait for the next request on a
//!   keep-alive connection);
//! - an idle timeout: a connection with no bytes either way for this long
//!   is closed, gracefully (a request in flight still gets its answer);
//! - a bounded drain at shutdown: connections get `drain` to finish, then
//!   are abandoned.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{Router, extract::ConnectInfo};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use opentelemetry::StringValue;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, watch},
};
use tower::ServiceExt as _;

/// The client end of a connection, carried by every request on it as
/// `ConnectInfo<Peer>`: its address, and the IP as the server span's
/// `client.address`, formatted once per connection rather than per request.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    pub address: SocketAddr,
    pub ip: StringValue,
}

impl Peer {
    fn new(address: SocketAddr) -> Self {
        Peer {
            address,
            ip: StringValue::from(Arc::<str>::from(address.ip().to_string())),
        }
    }
}

/// The default cap on connections open at once, per listener.
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// The default time a request's head may take to arrive (10 s).
pub(crate) const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The default time a connection may stay silent (60 s).
pub(crate) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The default time in-flight requests get at shutdown (15 s: past the
/// default call deadline of 10 s).
pub(crate) const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

/// How one listener treats its connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Time for a request's head to arrive.
    pub header_read_timeout: Duration,
    /// Time a connection may send and receive nothing.
    pub idle_timeout: Duration,
    /// Time in-flight requests get once shutdown starts.
    pub drain_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }
}

/// Serves `app` on `listener` until `stop` turns true, then lets open
/// connections finish for at most the drain timeout. The router sees each
/// peer's address as [`ConnectInfo<SocketAddr>`].
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) {
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    loop {
        // At the cap, stop accepting (the kernel's backlog holds the rest)
        // rather than accept and drop.
        let permit = tokio::select! {
            permit = open.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            _ = stopped(&mut stop) => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!("accepting a connection: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        let _ = stream.set_nodelay(true);
        let (builder, app, stop) = (builder.clone(), app.clone(), stop.clone());
        tokio::spawn(async move {
            let _permit = permit;
            connection(&builder, stream, peer, app, limits.idle_timeout, stop).await;
        });
    }
    // Every connection holds a permit until it ends.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(limits.drain_timeout, open.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            open = limits.max_connections - open.available_permits(),
            "connections still open after the drain timeout of {:?}: abandoned",
            limits.drain_timeout
        );
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`: drop it here.
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Serves one connection until it ends, it is idle too long, or shutdown.
async fn connection(
    builder: &auto::Builder<TokioExecutor>,
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    idle_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let started = Instant::now();
    let activity = Arc::new(AtomicU64::new(0));
    let io = TokioIo::new(Watched {
        inner: stream,
        started,
        activity: activity.clone(),
    });
    let client = Peer::new(peer);
    let service = hyper::service::service_fn(move |mut request: http::Request<_>| {
        request.extensions_mut().insert(ConnectInfo(client.clone()));
        app.clone().oneshot(request)
    });
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        let last = Duration::from_millis(activity.load(Ordering::Relaxed));
        let idle_at = started + last + idle_timeout;
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%peer, "connection ended: {error}");
                }
                return;
            }
            _ = tokio::time::sleep_until(idle_at.into()) => {
                // Activity since the timer was set moves it. Else close,
                // letting a request in flight finish; silent that long
                // again while closing (a client that reads nothing), drop.
                let now = Duration::from_millis(activity.load(Ordering::Relaxed));
                if now == last {
                    if closing {
                        tracing::debug!(%peer, "dropping a connection that stays silent");
                        return;
                    }
                    tracing::debug!(%peer, "closing an idle connection");
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
            _ = stopped(&mut stop), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

/// A stream that notes when bytes last went either way, in milliseconds
/// since the connection started.
struct Watched {
    inner: TcpStream,
    started: Instant,
    activity: Arc<AtomicU64>,
}

impl Watched {
    fn touch(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.activity.store(now, Ordering::Relaxed);
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
