//! Timestamps as the ported Python services write them.
//!
//! The services compute every timestamp relative to "now" at request time
//! and emit it with Python's `datetime.isoformat()`: microseconds only when
//! they are not zero, and `+00:00` for UTC (plugins run in UTC; WASI gives
//! them no time zone).

use std::fmt::Write as _;

use chrono::{DateTime, Datelike as _, NaiveDateTime, Timelike as _, Utc};

pub use chrono::Duration;

/// The current time in UTC, from WASI's wall clock.
pub fn now() -> DateTime<Utc> {
    DateTime::<Utc>::from(std::time::SystemTime::now())
}

/// `datetime.isoformat()` of an aware UTC time:
/// `2023-02-25T18:39:27.123456+00:00`.
pub fn isoformat(time: &DateTime<Utc>) -> String {
    let mut out = String::with_capacity(32);
    write_isoformat(&mut out, &time.naive_utc());
    out.push_str("+00:00");
    out
}

/// `datetime.isoformat()` of a naive time (no offset), as `datetime.now()`
/// without a time zone prints: `2023-02-25T18:39:27.123456`.
pub fn isoformat_naive(time: &NaiveDateTime) -> String {
    let mut out = String::with_capacity(32);
    write_isoformat(&mut out, time);
    out
}

/// Writes the fields one by one: chrono's `format("%Y-…")` parses its
/// format string on every call, which was the largest single cost of a
/// home_activities request.
fn write_isoformat(out: &mut String, time: &NaiveDateTime) {
    let (date, clock) = (time.date(), time.time());
    // A leap second shows as 60, as Python would; never as 1_000_000 µs.
    let second = clock.second() + clock.nanosecond() / 1_000_000_000;
    let micros = clock.nanosecond() % 1_000_000_000 / 1_000;
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{second:02}",
        date.year(),
        date.month(),
        date.day(),
        clock.hour(),
        clock.minute(),
    );
    // Python prints microseconds only when there are some.
    if micros != 0 {
        let _ = write!(out, ".{micros:06}");
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
        let early = DateTime::parse_from_rfc3339("0999-01-02T03:04:05.000007Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(isoformat(&early), "0999-01-02T03:04:05.000007+00:00");
    }
}
