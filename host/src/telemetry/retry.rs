//! When a failed export is tried again: the OTLP specification's rules
//! (and what the OTLP crate does for gRPC and metrics). A collector that
//! answers 429, 502, 503 or 504, or cannot be reached, is tried again
//! after an exponential backoff with jitter, or after its `Retry-After`;
//! every other answer is final (a 400 would fail the same way again).
//! Retries stay within the export timeout: a dead collector costs the
//! export its timeout, never a request (exports run off the request path,
//! and the queue in front of them is bounded).

use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, StatusCode, header::RETRY_AFTER};

/// The first backoff; each retry doubles it, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// The longest backoff between two attempts (the crate's gRPC policy).
const MAX_BACKOFF: Duration = Duration::from_millis(1600);

/// Attempts per export, the first included.
pub(super) const MAX_ATTEMPTS: u32 = 5;

/// Whether an answer with `status` may succeed when sent again.
pub(super) fn retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 502 | 503 | 504)
}

/// What the collector asked for in `Retry-After` (seconds, or an HTTP
/// date), if anything.
pub(super) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

/// The backoffs of one export, in order.
pub(super) struct Backoff {
    next: Duration,
    deadline: Instant,
}

impl Backoff {
    /// Backoffs for an export that must be done within `timeout` of now.
    pub(super) fn within(timeout: Duration) -> Self {
        Backoff {
            next: FIRST_BACKOFF,
            deadline: Instant::now() + timeout,
        }
    }

    /// Time left before the export's deadline.
    pub(super) fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// How long to wait before the next attempt: what the collector asked
    /// for, else the next backoff with jitter (half to all of it, so
    /// replicas that failed together do not retry together). `None` when
    /// the wait would end past the deadline: give up now rather than
    /// sleep into it.
    pub(super) fn wait(&mut self, asked: Option<Duration>) -> Option<Duration> {
        let backoff = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        let wait = asked.unwrap_or_else(|| jittered(backoff));
        // The attempt after the wait needs time too.
        (wait + FIRST_BACKOFF < self.remaining()).then_some(wait)
    }
}

/// A random duration between half of `backoff` and all of it.
fn jittered(backoff: Duration) -> Duration {
    use std::hash::{BuildHasher as _, Hasher as _};
    // A randomly keyed hasher's output: random enough for jitter, and no
    // random-number crate for one number.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let half = backoff / 2;
    half + Duration::from_nanos(random % (half.as_nanos() as u64).max(1))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn only_overload_and_gateway_answers_are_retried() {
        for status in [429, 502, 503, 504] {
            assert!(retryable(StatusCode::from_u16(status).unwrap()), "{status}");
        }
        for status in [200, 400, 401, 403, 404, 413, 500, 501] {
            assert!(
                !retryable(StatusCode::from_u16(status).unwrap()),
                "{status}"
            );
        }
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_a_date() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&headers), Some(Duration::ZERO));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn backoffs_grow_with_jitter_and_stop_at_the_deadline() {
        let mut backoff = Backoff::within(Duration::from_secs(60));
        let mut ceiling = FIRST_BACKOFF;
        for _ in 0..8 {
            let wait = backoff.wait(None).unwrap();
            assert!(
                wait >= ceiling / 2 && wait <= ceiling,
                "{wait:?} for {ceiling:?}"
            );
            ceiling = (ceiling * 2).min(MAX_BACKOFF);
        }
        assert_eq!(
            backoff.wait(Some(Duration::from_secs(2))),
            Some(Duration::from_secs(2))
        );
        // A wait past the deadline is not taken.
        assert_eq!(backoff.wait(Some(Duration::from_secs(120))), None);
        let mut short = Backoff::within(Duration::from_millis(150));
        assert_eq!(short.wait(Some(Duration::from_millis(100))), None);
    }
}
