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

/// Writes the fields one by one, digits by hand: chrono's `format("%Y-…")`
/// parses its format string on every call, and `core::fmt`'s padding was
/// next — a tenth of a home_activities request's guest time (perf, with
/// wasmtime's perf map).
fn write_isoformat(out: &mut String, time: &NaiveDateTime) {
    let (date, clock) = (time.date(), time.time());
    // A leap second shows as 60, as Python would; never as 1_000_000 µs.
    let second = clock.second() + clock.nanosecond() / 1_000_000_000;
    let micros = clock.nanosecond() % 1_000_000_000 / 1_000;
    match u32::try_from(date.year()) {
        Ok(year) => push_padded(out, year, 4),
        // Before year 0 (Python has none): the sign, as `{:04}` writes it.
        Err(_) => {
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
        push_padded(out, value, 2);
    }
    // Python prints microseconds only when there are some.
    if micros != 0 {
        out.push('.');
        push_padded(out, micros, 6);
    }
}

/// Appends `value` in decimal, zero-padded to at least `width` digits.
fn push_padded(out: &mut String, mut value: u32, width: usize) {
    let mut digits = [b'0'; 10];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    let start = start.min(digits.len().saturating_sub(width));
    // ASCII digits: always UTF-8, and one copy instead of a push per char.
    out.push_str(std::str::from_utf8(&digits[start..]).unwrap_or_default());
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
