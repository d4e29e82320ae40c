//! A request body that must keep coming: a minimum data rate after a grace
//! period, and a deadline for the whole body.
//!
//! Without them a client that sends a request head and then one body byte
//! every few seconds holds its connection, and the request's task, for as
//! long as it likes: forty such clients took comb off the air behind a cap
//! of 32 connections. The rule is Kestrel's (`MinRequestBodyDataRate`: on
//! average at least 240 bytes a second once 5 s have passed) plus nginx's
//! whole-body deadline. The clock runs from the first read: a handler that
//! never reads the body costs the client nothing.

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// How long a body may take before its rate is checked (Kestrel's 5 s).
const RATE_GRACE: Duration = Duration::from_secs(5);

/// The default time a whole request body may take (30 s).
pub(crate) const DEFAULT_BODY_DEADLINE: Duration = Duration::from_secs(30);

/// The default minimum body data rate, bytes a second (Kestrel's).
pub(crate) const DEFAULT_MIN_BODY_RATE: u64 = 240;

/// How a request body must arrive.
#[derive(Debug, Clone, Copy)]
pub struct BodyPace {
    /// The whole body must arrive within this time of the first read.
    pub deadline: Duration,
    /// After the grace period, the body's average rate must stay at least
    /// this many bytes a second; 0 turns the check off.
    pub min_rate: u64,
    /// How long a body may take before its rate is checked.
    pub grace: Duration,
}

impl Default for BodyPace {
    fn default() -> Self {
        BodyPace {
            deadline: DEFAULT_BODY_DEADLINE,
            min_rate: DEFAULT_MIN_BODY_RATE,
            grace: RATE_GRACE,
        }
    }
}

/// Why a body was given up on: the request answers 408.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyTimeout {
    /// The whole body did not arrive within the deadline.
    #[error("the request body did not arrive within {0:?}")]
    Deadline(Duration),
    /// It came slower than the minimum rate.
    #[error("the request body came at {rate} bytes/s, below the minimum of {min_rate}")]
    TooSlow {
        /// Its average rate so far.
        rate: u64,
        /// The minimum.
        min_rate: u64,
    },
}

impl BodyPace {
    /// When the check after `now` is due, for a body whose reading started
    /// at `started`: the end of the grace period, then every second, never
    /// past the deadline.
    fn next_check(&self, started: Instant, now: Instant) -> Instant {
        let deadline = started + self.deadline;
        let grace_over = started + self.grace;
        let next = match self.min_rate {
            0 => deadline,
            _ if now < grace_over => grace_over,
            _ => now + Duration::from_secs(1),
        };
        next.min(deadline)
    }

    /// At a check: whether a body that brought `received` bytes since
    /// `started` is behind this pace.
    fn behind(&self, received: u64, started: Instant, now: Instant) -> Option<BodyTimeout> {
        let elapsed = now.duration_since(started);
        if elapsed >= self.deadline {
            return Some(BodyTimeout::Deadline(self.deadline));
        }
        if self.min_rate == 0 || elapsed < self.grace {
            return None;
        }
        let rate = (received as f64 / elapsed.as_secs_f64()) as u64;
        (rate < self.min_rate).then_some(BodyTimeout::TooSlow {
            rate,
            min_rate: self.min_rate,
        })
    }
}

/// `inner`, failing with [`BodyTimeout`] when it falls behind its pace.
pub(crate) struct PacedBody<B> {
    inner: B,
    pace: BodyPace,
    /// When reading started: the first read.
    started: Option<Instant>,
    /// The next check; made the first time the client keeps comb waiting
    /// (a body already there, or none at all, needs no timer).
    timer: Option<Pin<Box<Sleep>>>,
    received: u64,
    done: bool,
}

impl<B> PacedBody<B> {
    pub(crate) fn new(inner: B, pace: BodyPace) -> Self {
        PacedBody {
            inner,
            pace,
            started: None,
            timer: None,
            received: 0,
            done: false,
        }
    }
}

impl<B> Body for PacedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        let started = *this.started.get_or_insert_with(Instant::now);
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                }
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error.into()))),
            Poll::Ready(None) => {
                this.done = true;
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        // Waiting for the client: wake at the next check, and check.
        let pace = this.pace;
        let timer = this.timer.get_or_insert_with(|| {
            let check = pace.next_check(started, Instant::now());
            Box::pin(tokio::time::sleep_until(check))
        });
        loop {
            ready!(timer.as_mut().poll(cx));
            let now = Instant::now();
            if let Some(timeout) = pace.behind(this.received, started, now) {
                this.done = true;
                return Poll::Ready(Some(Err(Box::new(timeout))));
            }
            timer.as_mut().reset(pace.next_check(started, now));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::{BodyExt as _, StreamBody};

    use super::*;

    /// A body that sends `chunk` bytes every `every`, `count` times.
    fn trickle(
        chunk: usize,
        every: Duration,
        count: usize,
    ) -> impl Body<Data = Bytes, Error = Infallible> + Unpin {
        let stream = futures_util::stream::unfold(0, move |sent| async move {
            if sent == count {
                return None;
            }
            tokio::time::sleep(every).await;
            Some((Ok(Frame::data(Bytes::from(vec![b'x'; chunk]))), sent + 1))
        });
        StreamBody::new(Box::pin(stream))
    }

    async fn read(
        body: impl Body<Data = Bytes, Error = Infallible> + Unpin,
        pace: BodyPace,
    ) -> Result<usize, String> {
        match PacedBody::new(body, pace).collect().await {
            Ok(collected) => Ok(collected.to_bytes().len()),
            Err(error) => Err(error.to_string()),
        }
    }

    /// The defaults, scaled down fiftyfold in time.
    const PACE: BodyPace = BodyPace {
        deadline: Duration::from_millis(600),
        min_rate: 240,
        grace: Duration::from_millis(100),
    };

    #[tokio::test]
    async fn a_body_below_the_minimum_rate_fails_once_the_grace_period_is_over() {
        let started = Instant::now();
        // A byte every 40 ms: 25 bytes a second.
        let slow = trickle(1, Duration::from_millis(40), 1000);
        let error = read(slow, PACE).await.unwrap_err();
        assert!(error.contains("below the minimum of 240"), "{error}");
        assert!(started.elapsed() >= PACE.grace);
    }

    #[tokio::test]
    async fn a_body_at_its_pace_arrives_whole() {
        // 1 KiB every 5 ms: ~200 KiB a second.
        let steady = trickle(1024, Duration::from_millis(5), 20);
        assert_eq!(read(steady, PACE).await, Ok(20 * 1024));
        // With the rate check off, any rate within the deadline.
        let off = BodyPace {
            min_rate: 0,
            ..PACE
        };
        assert_eq!(
            read(trickle(1, Duration::from_millis(40), 5), off).await,
            Ok(5)
        );
    }

    #[tokio::test]
    async fn the_whole_body_must_arrive_within_the_deadline() {
        let started = Instant::now();
        // Fast enough, but endless.
        let endless = trickle(1024, Duration::from_millis(5), usize::MAX);
        let error = read(endless, PACE).await.unwrap_err();
        assert!(error.contains("did not arrive within 600ms"), "{error}");
        assert!(started.elapsed() >= PACE.deadline);
    }
}
