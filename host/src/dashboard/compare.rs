//! Two versions of one plugin compared (a canary and the plugin, or any
//! two builds seen in the window): the candidate's latency percentiles,
//! error rate, CPU and memory minus the baseline's, each with an interval
//! that holds the true difference with at least 95 % confidence, and
//! whether there are calls enough to say anything.
//!
//! The percentile intervals are distribution-free: from the ranks an
//! order statistic falls between (a binomial's normal approximation),
//! read off each version's histogram at 97.5 % each, so the difference's
//! interval holds with at least 95 % (Bonferroni); latency is skewed, and
//! this does not pretend otherwise. Error rates: Agresti and Caffo's
//! interval for a difference of proportions (one success and one failure
//! added to each), which stays sensible at 0 errors.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Calls each version needs before the page calls a difference shown:
/// fewer, and one slow call moves a p95.
pub(crate) const ENOUGH_CALLS: u64 = 30;

/// z for a two-sided 97.5 % interval per version.
const Z_PER_VERSION: f64 = 2.241;

/// z for a two-sided 95 % interval.
const Z: f64 = 1.960;

/// The candidate minus the baseline, and the interval it lies in.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Difference {
    /// The difference of the estimates.
    pub estimate: f64,
    /// The interval's low end; `None` when the calls cannot bound it.
    pub low: Option<f64>,
    /// The interval's high end; `None` when the calls cannot bound it.
    pub high: Option<f64>,
    /// Whether the interval leaves zero out: a difference shown.
    pub shown: bool,
}

impl Difference {
    fn new(estimate: f64, low: Option<f64>, high: Option<f64>) -> Self {
        Difference {
            estimate,
            low,
            high,
            shown: low.is_some_and(|low| low > 0.0) || high.is_some_and(|high| high < 0.0),
        }
    }
}

/// One version's numbers that a comparison reads.
pub(crate) struct Sample<'a> {
    /// Calls answered, and of them failed.
    pub requests: u64,
    pub errors: u64,
    /// Latency, guest CPU and memory histograms, with the unit each
    /// count stands for.
    pub latency: (&'a Histogram<u32>, f64),
    pub cpu: (&'a Histogram<u32>, f64),
    pub memory: (&'a Histogram<u32>, f64),
}

/// A candidate version against a baseline.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Comparison {
    /// The baseline's build (`version (digest)`).
    pub baseline: String,
    /// The candidate's.
    pub candidate: String,
    /// Whether both have [`ENOUGH_CALLS`] calls.
    pub enough: bool,
    /// Median latency, ms.
    pub p50_ms: Option<Difference>,
    /// 95th percentile latency, ms.
    pub p95_ms: Option<Difference>,
    /// Error rate, as a fraction.
    pub error_rate: Option<Difference>,
    /// Median guest CPU per call, ms.
    pub cpu_p50_ms: Option<Difference>,
    /// Median peak memory per call, MiB.
    pub memory_p50_mib: Option<Difference>,
}

/// `candidate` against `baseline`.
pub(crate) fn compare(
    (baseline_name, baseline): (&str, &Sample<'_>),
    (candidate_name, candidate): (&str, &Sample<'_>),
) -> Comparison {
    Comparison {
        baseline: baseline_name.to_owned(),
        candidate: candidate_name.to_owned(),
        enough: baseline.requests >= ENOUGH_CALLS && candidate.requests >= ENOUGH_CALLS,
        p50_ms: quantile_difference(baseline.latency, candidate.latency, 0.50),
        p95_ms: quantile_difference(baseline.latency, candidate.latency, 0.95),
        error_rate: rate_difference(
            (baseline.errors, baseline.requests),
            (candidate.errors, candidate.requests),
        ),
        cpu_p50_ms: quantile_difference(baseline.cpu, candidate.cpu, 0.50),
        memory_p50_mib: quantile_difference(baseline.memory, candidate.memory, 0.50),
    }
}

/// The `q` quantile's estimate and interval in one histogram, in its
/// unit: the order statistics at the ranks the quantile falls between;
/// an end is `None` when its rank is past the calls there are.
fn quantile_interval(
    (histogram, unit): (&Histogram<u32>, f64),
    q: f64,
) -> Option<(f64, Option<f64>, Option<f64>)> {
    let n = histogram.len() as f64;
    if n == 0.0 {
        return None;
    }
    let spread = Z_PER_VERSION * (n * q * (1.0 - q)).sqrt();
    // The k-th smallest call (1-based), read half a rank in so that the
    // histogram's rounding lands on it.
    let at_rank = |k: f64| histogram.value_at_quantile((k - 0.5) / n) as f64 * unit;
    let low = (n * q - spread).floor();
    let high = (n * q + spread).ceil() + 1.0;
    Some((
        histogram.value_at_quantile(q) as f64 * unit,
        (low >= 1.0).then(|| at_rank(low)),
        (high <= n).then(|| at_rank(high)),
    ))
}

fn quantile_difference(
    baseline: (&Histogram<u32>, f64),
    candidate: (&Histogram<u32>, f64),
    q: f64,
) -> Option<Difference> {
    let (b, b_low, b_high) = quantile_interval(baseline, q)?;
    let (c, c_low, c_high) = quantile_interval(candidate, q)?;
    let span = |from: Option<f64>, minus: Option<f64>| Some(from? - minus?);
    Some(Difference::new(
        c - b,
        span(c_low, b_high),
        span(c_high, b_low),
    ))
}

/// Agresti–Caffo: the difference of error rates, each with one error and
/// one success added.
fn rate_difference(
    (baseline_errors, baseline_n): (u64, u64),
    (candidate_errors, candidate_n): (u64, u64),
) -> Option<Difference> {
    if baseline_n == 0 || candidate_n == 0 {
        return None;
    }
    let rate = |errors: u64, n: u64| errors as f64 / n as f64;
    let adjusted = |errors: u64, n: u64| (errors as f64 + 1.0) / (n as f64 + 2.0);
    let (pb, pc) = (
        adjusted(baseline_errors, baseline_n),
        adjusted(candidate_errors, candidate_n),
    );
    let spread = Z
        * (pb * (1.0 - pb) / (baseline_n as f64 + 2.0)
            + pc * (1.0 - pc) / (candidate_n as f64 + 2.0))
            .sqrt();
    Some(Difference::new(
        rate(candidate_errors, candidate_n) - rate(baseline_errors, baseline_n),
        Some((pc - pb - spread).max(-1.0)),
        Some((pc - pb + spread).min(1.0)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram(values: impl IntoIterator<Item = u64>) -> Histogram<u32> {
        let mut histogram = Histogram::new_with_bounds(1, 1_000_000, 2).unwrap();
        for value in values {
            histogram.record(value).unwrap();
        }
        histogram
    }

    #[test]
    fn a_clear_shift_is_shown_and_noise_is_not() {
        // 200 calls each: the candidate 20 units slower everywhere.
        let base = histogram((0..200).map(|i| 100 + i % 10));
        let slower = histogram((0..200).map(|i| 120 + i % 10));
        let same = histogram((0..200).map(|i| 100 + (i * 7) % 10));
        let shift = quantile_difference((&base, 1.0), (&slower, 1.0), 0.5).unwrap();
        assert!(
            shift.shown && (15.0..=25.0).contains(&shift.estimate),
            "{shift:?}"
        );
        let none = quantile_difference((&base, 1.0), (&same, 1.0), 0.5).unwrap();
        assert!(!none.shown, "{none:?}");
        // Few calls: a wide interval.
        let few = histogram([100, 140, 90]);
        let wide = quantile_difference((&base, 1.0), (&few, 1.0), 0.95).unwrap();
        assert!(!wide.shown && wide.high.is_none(), "{wide:?}");
    }

    #[test]
    fn error_rates_differ_when_the_counts_say_so() {
        let worse = rate_difference((0, 200), (40, 200)).unwrap();
        assert!(
            worse.shown && (worse.estimate - 0.2).abs() < 1e-9,
            "{worse:?}"
        );
        let zero = rate_difference((0, 50), (0, 50)).unwrap();
        assert!(
            !zero.shown && zero.low < Some(0.0) && zero.high > Some(0.0),
            "{zero:?}"
        );
        let small = rate_difference((0, 10), (1, 10)).unwrap();
        assert!(!small.shown, "{small:?}");
        assert_eq!(rate_difference((0, 0), (1, 10)), None);
    }
}
