//! A Rust guest's panic, as its stderr reports it. std's panic hook writes
//! `thread '…' panicked at FILE:LINE:COL:` and then the message; this is
//! the one place that reads that text. The trap's message is the report
//! ([`report`]); Rollbar's title and grouping take its parts
//! ([`GuestPanic`], from [`crate::runtime::InvokeError::panic`]).

/// What std's panic hook writes before the location.
const PANICKED_AT: &str = "panicked at ";

/// Lines of a report kept: the header, the message, and what follows it
/// (a note, or a message of several lines).
const REPORT_LINES: usize = 8;

/// The panic report in what a guest wrote to stderr, if it panicked: from
/// the header on, [`REPORT_LINES`] lines.
pub(super) fn report(stderr: &str) -> Option<String> {
    let start = stderr.lines().position(|line| line.contains(PANICKED_AT))?;
    let lines: Vec<&str> = stderr.lines().skip(start).take(REPORT_LINES).collect();
    Some(lines.join("\n"))
}

/// A panic report's parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestPanic<'a> {
    /// Where it panicked (`src/lib.rs:20:32`).
    pub location: &'a str,
    /// What it said: the line after the header.
    pub message: &'a str,
}

impl<'a> GuestPanic<'a> {
    /// The parts of a [`report`], if `report` is one.
    pub(super) fn parse(report: &'a str) -> Option<Self> {
        let mut lines = report.lines();
        let (_, location) = lines.next()?.split_once(PANICKED_AT)?;
        Some(GuestPanic {
            location: location.trim_end_matches(':'),
            message: lines.next().unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_starts_at_the_header_and_parses_into_place_and_message() {
        let stderr = "log line\nthread '<unnamed>' (1) panicked at src/lib.rs:20:32:\nboom\nnote: run with RUST_BACKTRACE=1\n";
        let report = report(stderr).unwrap();
        assert!(report.starts_with("thread '<unnamed>' (1) panicked at src/lib.rs:20:32:\nboom"));
        assert_eq!(
            GuestPanic::parse(&report),
            Some(GuestPanic {
                location: "src/lib.rs:20:32",
                message: "boom"
            })
        );
        assert_eq!(super::report("no panic here\n"), None);
        assert_eq!(GuestPanic::parse("memory limit of 64 MiB"), None);
    }
}
