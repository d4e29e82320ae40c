//! Timestamps as the ported Python services write them.
//!
//! The services compute every timestamp relative to "now" at request time
//! and emit it with Python's `datetime.isoformat()`: microseconds only when
//! they are not zero, and `+00:00` for UTC (plugins run in UTC; WASI gives
//! them no time zone).

use chrono::{DateTime, NaiveDateTime, Utc};

pub use chrono::Duration;

/// The current time in UTC, from WASI's wall clock.
pub fn now() -> DateTime<Utc> {
    DateTime::<Utc>::from(std::time::SystemTime::now())
}

/// `datetime.isoformat()` of an aware UTC time:
/// `2023-02-25T18:39:27.123456+00:00`.
pub fn isoformat(time: &DateTime<Utc>) -> String {
    format!("{}+00:00", isoformat_naive(&time.naive_utc()))
}

/// `datetime.isoformat()` of a naive time (no offset), as `datetime.now()`
/// without a time zone prints: `2023-02-25T18:39:27.123456`.
pub fn isoformat_naive(time: &NaiveDateTime) -> String {
    // Python prints microseconds only when there are some.
    if time.and_utc().timestamp_subsec_micros() == 0 {
        time.format("%Y-%m-%dT%H:%M:%S").to_string()
    } else {
        time.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isoformat_matches_python() {
        let time = DateTime::parse_from_rfc3339("2023-02-25T18:39:27.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(isoformat(&time), "2023-02-25T18:39:27.123456+00:00");
        let whole = DateTime::parse_from_rfc3339("2023-02-25T18:39:27Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(isoformat(&whole), "2023-02-25T18:39:27+00:00");
        assert_eq!(isoformat_naive(&whole.naive_utc()), "2023-02-25T18:39:27");
    }
}
