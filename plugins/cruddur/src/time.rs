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

/// Writes the fields one by one, two digits at a time: chrono's
/// `format("%Y-…")` parses its format string on every call, and
/// `core::fmt`'s padding was next — a tenth of a home_activities request's
/// guest time (perf, with comb's `--perf-map`).
fn write_isoformat(out: &mut String, time: &NaiveDateTime) {
    let (date, clock) = (time.date(), time.time());
    // A leap second shows as 60, as Python would; never as 1_000_000 µs.
    let second = clock.second() + clock.nanosecond() / 1_000_000_000;
    let micros = clock.nanosecond() % 1_000_000_000 / 1_000;
    match u32::try_from(date.year()) {
        Ok(year) if year <= 9999 => push_digits(out, year, 4),
        // Outside Python's years: as `{:04}` writes them.
        _ => {
            let _ = write!(out, "{:04}", date.year());
        }
    }
    for (separator, value) in [
        ('-', date.month()),
        ('-', date.day()),
        ('T', clock.hour()),
        (':', clock.minute()),
        (':', second),
    ] {
        out.push(separator);
        push_digits(out, value, 2);
    }
    // Python prints microseconds only when there are some.
    if micros != 0 {
        out.push('.');
        push_digits(out, micros, 6);
    }
}

/// "00" to "99", back to back.
const PAIRS: &str = "00010203040506070809101112131415161718192021222324252627282930313233343536373839404142434445464748495051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899";

/// Appends the last `digits` (an even number) decimal digits of `value`,
/// zero-padded.
fn push_digits(out: &mut String, value: u32, digits: u32) {
    for pair in (0..digits / 2).rev() {
        let at = (value / 100_u32.pow(pair) % 100) as usize * 2;
        out.push_str(&PAIRS[at..at + 2]);
    }
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

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
        let late = DateTime::parse_from_rfc3339("9999-12-31T23:59:59.999999Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(isoformat(&late), "9999-12-31T23:59:59.999999+00:00");
        let before_year_one = NaiveDate::from_ymd_opt(-12, 3, 4)
            .unwrap()
            .and_hms_opt(5, 6, 7)
            .unwrap();
        assert_eq!(isoformat_naive(&before_year_one), "-012-03-04T05:06:07");
    }
}
