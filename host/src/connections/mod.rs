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
//!   are abandoned;
//! - a request body pace (`body.rs`): a minimum data rate and a deadline
//!   for the whole body, on either protocol;
//! - for HTTP/2 too, the header-read timeout: a connection with no request
//!   in flight for that long is closed (hyper has it for HTTP/1 only; an
//!   HTTP/2 client could otherwise trickle one stream's headers forever).

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{Router, extract::ConnectInfo};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use opentelemetry::StringValue;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{Notify, Semaphore, watch},
};
use tower::ServiceExt as _;

pub(crate) use self::body::BodyPace;
use self::body::PacedBody;
pub(crate) use self::body::{BodyTimeout, DEFAULT_BODY_DEADLINE, DEFAULT_MIN_BODY_RATE};

mod body;

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
    /// How a request body must arrive.
    pub body: BodyPace,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            body: BodyPace::default(),
        }
    }
}

/// Serves `app` on `listener` until `stop` turns true, then lets open
/// connections finish for at most the drain timeout. The router sees each
/// peer as [`ConnectInfo<Peer>`].
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
    // Connections idle between requests close when this fires.
    let shed = Arc::new(Notify::new());
    loop {
        // Below the cap, take a slot; at it, stop accepting (the kernel's
        // backlog holds the rest) until one client waits, then make room.
        let permit = open.clone().try_acquire_owned().ok();
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors: connections idle between
                    // requests give theirs back; wait rather than spin.
                    tracing::warn!("accepting a connection: {error}");
                    shed.notify_waiters();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        let permit = match permit {
            Some(permit) => permit,
            None => {
                // At the cap with a client waiting: connections idle
                // between requests (keep-alive) are closed first, as nginx
                // reuses its idle connections when it runs out, so the new
                // client is served rather than left in the backlog.
                shed.notify_waiters();
                tokio::select! {
                    permit = open.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
                    _ = stopped(&mut stop) => break,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let (builder, app, stop, shed) = (builder.clone(), app.clone(), stop.clone(), shed.clone());
        tokio::spawn(async move {
            let _permit = permit;
            connection(&builder, stream, peer, app, limits, stop, &shed).await;
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

/// File descriptors comb keeps out of the connection caps: plugin files
/// and the compile cache, OTLP and Rollbar exports, registries, outgoing
/// HTTP calls of plugins.
pub(crate) const FD_HEADROOM: u64 = 256;

/// Raises the soft limit on open files to the hard one, as Go's runtime
/// and nginx do (the soft default, 1024 or less, is there for programs that
/// use `select`), and returns the limit now in force.
pub(crate) fn raise_open_files_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let (soft, hard) = (limit.current, limit.maximum);
    if let (Some(current), hard) = (soft, hard)
        && hard.is_none_or(|hard| hard > current)
    {
        let raised = rustix::process::Rlimit {
            current: hard,
            maximum: hard,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => tracing::info!(
                "open files: soft limit raised from {current} to {}",
                hard.map_or("unlimited".to_owned(), |hard| hard.to_string())
            ),
            Err(error) => {
                tracing::warn!("open files: raising the soft limit of {current}: {error}");
                return current;
            }
        }
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// The connection cap each of `listeners` gets: `wanted`, or less so that
/// all of them together stay [`FD_HEADROOM`] under `open_files`.
pub(crate) fn connection_cap(wanted: usize, listeners: usize, open_files: u64) -> usize {
    let budget = open_files.saturating_sub(FD_HEADROOM) / listeners.max(1) as u64;
    wanted
        .min(usize::try_from(budget).unwrap_or(usize::MAX))
        .max(1)
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`: drop it here.
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Serves one connection until it ends, it is idle too long (or without
/// a request for the header-read timeout), or shutdown.
async fn connection(
    builder: &auto::Builder<TokioExecutor>,
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
    shed: &Notify,
) {
    let started = Instant::now();
    let activity = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(Requests {
        started,
        in_flight: AtomicUsize::new(0),
        answered: AtomicU64::new(0),
        last: AtomicU64::new(0),
    });
    let io = TokioIo::new(Watched {
        inner: stream,
        started,
        activity: activity.clone(),
        lingering: None,
    });
    let client = Peer::new(peer);
    let (counted, pace) = (requests.clone(), limits.body);
    let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
        let mut request = request.map(|body| axum::body::Body::new(PacedBody::new(body, pace)));
        request.extensions_mut().insert(ConnectInfo(client.clone()));
        let in_flight = InFlight::new(counted.clone());
        let answer = app.clone().oneshot(request);
        async move {
            let answer = answer.await;
            drop(in_flight);
            answer
        }
    });
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let mut closing = false;
    // A connection closed with no request in flight gets this long to go
    // (HTTP/2's GOAWAY exchange), then is dropped: a client that keeps
    // pinging must not keep it open.
    let mut drop_at = None;
    loop {
        let last = Duration::from_millis(activity.load(Ordering::Relaxed));
        let idle_at = started + last + limits.idle_timeout;
        // No request in flight since `since`: the next one's head is due
        // within the header-read timeout.
        let headless_at = requests
            .idle_since()
            .map(|since| started + since + limits.header_read_timeout);
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
            _ = sleep_until_some(headless_at), if !closing => {
                if requests.idle_since().is_some_and(|since| started + since + limits.header_read_timeout <= Instant::now()) {
                    tracing::debug!(%peer, "closing a connection with no request for the header-read timeout");
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                    drop_at = Some(Instant::now() + LINGER);
                }
            }
            _ = shed.notified(), if !closing => {
                if requests.kept_alive() {
                    tracing::debug!(%peer, "closing a connection idle between requests: comb is at its cap");
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                    drop_at = Some(Instant::now() + LINGER);
                }
            }
            _ = sleep_until_some(drop_at) => {
                tracing::debug!(%peer, "dropping a connection that did not close");
                return;
            }
            _ = stopped(&mut stop), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

/// Sleeps until `at`, or for ever when there is no `at`.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// The requests of one connection: how many are in flight, how many were
/// answered, and when the last one started or ended (ms since the
/// connection started).
struct Requests {
    started: Instant,
    in_flight: AtomicUsize,
    answered: AtomicU64,
    last: AtomicU64,
}

impl Requests {
    fn touch(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last.store(now, Ordering::Relaxed);
    }

    /// Since when no request has been in flight, if none is.
    fn idle_since(&self) -> Option<Duration> {
        (self.in_flight.load(Ordering::Acquire) == 0)
            .then(|| Duration::from_millis(self.last.load(Ordering::Relaxed)))
    }

    /// Whether the connection is kept alive between requests: one was
    /// answered and none is in flight. Only these are closed to make room
    /// at the cap (as nginx reuses only such connections): one that has
    /// not sent its first request yet may be about to.
    fn kept_alive(&self) -> bool {
        self.answered.load(Ordering::Relaxed) > 0 && self.idle_since().is_some()
    }
}

/// One request in flight, counted from its head to its answer.
struct InFlight(Arc<Requests>);

impl InFlight {
    fn new(requests: Arc<Requests>) -> Self {
        requests.in_flight.fetch_add(1, Ordering::AcqRel);
        requests.touch();
        InFlight(requests)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.answered.fetch_add(1, Ordering::Relaxed);
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How long a closing connection reads and discards what the client still
/// sends, after comb's last byte (nginx's `lingering_time`, shortened).
const LINGER: Duration = Duration::from_secs(2);

/// A stream that notes when bytes last went either way, in milliseconds
/// since the connection started, and closes lingering.
///
/// Closing a socket with unread bytes in it sends a reset, and a reset
/// makes the client's kernel drop what it had not yet read: a client still
/// sending the body comb refused (a 408, a 413) would lose the answer that
/// says why. So shutting down sends FIN, then reads and discards until the
/// client closes too or [`LINGER`] passes, as nginx's lingering close does.
struct Watched {
    inner: TcpStream,
    started: Instant,
    activity: Arc<AtomicU64>,
    lingering: Option<Pin<Box<tokio::time::Sleep>>>,
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
        let this = &mut *self;
        if this.lingering.is_none() {
            std::task::ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
            this.lingering = Some(Box::pin(tokio::time::sleep(LINGER)));
        }
        let Some(lingering) = this.lingering.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let mut discard = [0; 4096];
        loop {
            if lingering.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
            let mut buf = ReadBuf::new(&mut discard);
            match Pin::new(&mut this.inner).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => continue,
                // The client closed too (or the socket failed): done.
                Poll::Ready(_) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_caps_of_all_listeners_stay_under_the_open_files_limit() {
        // Plenty: each listener gets what was asked for.
        assert_eq!(connection_cap(1024, 2, 1 << 20), 1024);
        // 512 open files, two listeners: (512 - 256) / 2 each.
        assert_eq!(connection_cap(1024, 2, 512), 128);
        // Never none.
        assert_eq!(connection_cap(1024, 3, 100), 1);
    }
}
