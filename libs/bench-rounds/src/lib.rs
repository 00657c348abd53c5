//! Interleaved benchmark rounds (issue #18): each round measures the baseline and every other
//! variant once, in turn, so a noisy neighbour shows as spread rather than as one wrong number.
//! The report gives, per variant, the median and range of its measures and of its ratio to the
//! baseline *of the same round*.
//!
//! ```
//! let mut rounds = bench_rounds::Rounds::new("rows/s", &["raw csv parse", "import"]);
//! for _ in 0..5 {
//!     rounds.record(0, 1_900_000.0);
//!     rounds.record(1, 180_000.0);
//! }
//! let import = &rounds.summaries()[1];
//! assert_eq!(import.median, 180_000.0);
//! ```

use std::fmt::Write;

/// How many rounds a benchmark runs: `BENCH_ROUNDS` from the environment, at least 1; 5 when
/// unset or unreadable.
pub fn rounds() -> usize {
    std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(5, |n| n.max(1))
}

/// Median, least and greatest of some measures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// `None` for no measures; NaN measures are left out.
    pub fn of(values: &[f64]) -> Option<Spread> {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
        sorted.sort_by(f64::total_cmp);
        let (first, last) = (*sorted.first()?, *sorted.last()?);
        let mid = sorted.len() / 2;
        let median = if sorted.len() % 2 == 1 {
            sorted[mid]
        } else {
            (sorted[mid - 1] + sorted[mid]) / 2.0
        };
        Some(Spread {
            median,
            min: first,
            max: last,
        })
    }
}

/// One variant over every round.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub name: String,
    pub rounds: usize,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// The variant's measure over the baseline's in the same round; `None` for the baseline
    /// itself and when no round has both.
    pub ratio: Option<Spread>,
}

/// The measures of a benchmark's variants, round by round; variant 0 is the baseline.
#[derive(Debug, Clone)]
pub struct Rounds {
    unit: String,
    names: Vec<String>,
    /// Per variant, its measure in each round (`None`: not measured in that round).
    values: Vec<Vec<Option<f64>>>,
    /// Whether variant 0 is a baseline the others are divided by.
    baseline: bool,
}

impl Rounds {
    /// `variants[0]` is the baseline. Measures are in `unit` (e.g. "rows/s", "ms").
    pub fn new(unit: &str, variants: &[&str]) -> Rounds {
        Rounds {
            unit: unit.to_owned(),
            names: variants.iter().map(|v| (*v).to_owned()).collect(),
            values: vec![Vec::new(); variants.len()],
            baseline: true,
        }
    }

    /// Measures without a baseline (a peak memory, a latency percentile): the report gives
    /// median and range only.
    pub fn without_baseline(unit: &str, variants: &[&str]) -> Rounds {
        Rounds {
            baseline: false,
            ..Rounds::new(unit, variants)
        }
    }

    /// Records the measure of `variant` in its next round: a variant's n-th measure belongs to
    /// round n. So within a round call in any order, but once for every variant: a variant
    /// skipped in one round would pair its next measure with the wrong round's baseline.
    ///
    /// # Panics
    /// When `variant` is not one of those named at [`Rounds::new`] (a bug in the benchmark).
    pub fn record(&mut self, variant: usize, value: f64) {
        assert!(variant < self.names.len(), "no variant {variant}");
        let round = self.values[variant].len();
        for (v, values) in self.values.iter_mut().enumerate() {
            if v != variant && values.len() < round {
                values.resize(round, None);
            }
        }
        self.values[variant].push(Some(value));
    }

    /// Every measured variant's spread and ratio to the baseline, in the order named (a variant
    /// without any measure is left out).
    pub fn summaries(&self) -> Vec<Summary> {
        let baseline = self.values.first().cloned().unwrap_or_default();
        self.names
            .iter()
            .zip(&self.values)
            .enumerate()
            .filter_map(|(i, (name, values))| {
                let measured: Vec<f64> = values
                    .iter()
                    .flatten()
                    .copied()
                    .filter(|v| !v.is_nan())
                    .collect();
                let spread = Spread::of(&measured)?;
                let ratios: Vec<f64> = values
                    .iter()
                    .zip(&baseline)
                    .filter_map(|(v, b)| Some((*v)? / (*b)?))
                    .collect();
                Some(Summary {
                    name: name.clone(),
                    rounds: measured.len(),
                    median: spread.median,
                    min: spread.min,
                    max: spread.max,
                    ratio: if i == 0 || !self.baseline {
                        None
                    } else {
                        Spread::of(&ratios)
                    },
                })
            })
            .collect()
    }

    /// The report as a table: median, range, and the ratio to the baseline.
    pub fn report(&self) -> String {
        let mut out = String::new();
        let w = self
            .names
            .iter()
            .map(|n| n.chars().count())
            .max()
            .unwrap_or(0)
            .max(7);
        // "median " and the unit, at least as wide as the figures.
        let u = self.unit.chars().count().max(11) + 7;
        let _ = writeln!(
            out,
            "{:<w$} {:>6} {:>u$} {:>27} {:>22}",
            "variant",
            "rounds",
            format!("median {}", self.unit),
            "range",
            if self.baseline {
                "ratio to baseline"
            } else {
                ""
            }
        );
        for s in self.summaries() {
            let ratio = s.ratio.map_or_else(
                || if self.baseline { "(baseline)" } else { "" }.to_owned(),
                |r| format!("{:.3} ({:.3}–{:.3})", r.median, r.min, r.max),
            );
            let range = format!("{:.2}–{:.2}", s.min, s.max);
            let _ = writeln!(
                out,
                "{:<w$} {:>6} {:>u$.2} {:>27} {:>22}",
                s.name, s.rounds, s.median, range, ratio
            );
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_odd_and_even_counts() {
        assert_eq!(
            Spread::of(&[3.0, 1.0, 2.0]),
            Some(Spread {
                median: 2.0,
                min: 1.0,
                max: 3.0
            })
        );
        assert_eq!(
            Spread::of(&[4.0, 1.0, 2.0, 3.0]).map(|s| s.median),
            Some(2.5)
        );
        assert_eq!(Spread::of(&[]), None);
        assert_eq!(Spread::of(&[f64::NAN, 5.0]).map(|s| s.median), Some(5.0));
    }

    #[test]
    fn ratios_pair_each_measure_with_the_baseline_of_its_own_round() {
        let mut rounds = Rounds::new("rows/s", &["baseline", "measured"]);
        // A slow round slows both: the ratio stays where it is.
        for (baseline, measured) in [(100.0, 50.0), (40.0, 20.0), (100.0, 50.0)] {
            rounds.record(0, baseline);
            rounds.record(1, measured);
        }
        let s = rounds.summaries();
        assert_eq!(s[0].ratio, None);
        assert_eq!((s[0].median, s[0].min, s[0].max), (100.0, 40.0, 100.0));
        let ratio = s[1].ratio.unwrap();
        assert_eq!((ratio.median, ratio.min, ratio.max), (0.5, 0.5, 0.5));
        assert_eq!(s[1].rounds, 3);
    }

    #[test]
    fn a_variant_missing_from_a_round_pairs_with_nothing() {
        let mut rounds = Rounds::new("ms", &["baseline", "a", "b"]);
        rounds.record(0, 2.0);
        rounds.record(1, 4.0);
        rounds.record(0, 1.0);
        rounds.record(1, 3.0);
        rounds.record(2, 10.0);
        let s = rounds.summaries();
        // b measured only in round two, against that round's baseline.
        assert_eq!(s[2].ratio.map(|r| r.median), Some(10.0));
        assert_eq!(s[1].ratio.map(|r| (r.min, r.max)), Some((2.0, 3.0)));
        let report = rounds.report();
        assert!(report.contains("(baseline)"), "{report}");
        assert!(report.contains("2.500 (2.000–3.000)"), "{report}");
    }

    #[test]
    fn measures_without_a_baseline_have_no_ratio() {
        let mut rounds = Rounds::without_baseline("MB", &["first", "second"]);
        for (a, b) in [(100.0, 120.0), (110.0, 90.0)] {
            rounds.record(0, a);
            rounds.record(1, b);
        }
        let s = rounds.summaries();
        assert!(s.iter().all(|s| s.ratio.is_none()), "{s:?}");
        assert_eq!((s[1].median, s[1].min, s[1].max), (105.0, 90.0, 120.0));
        let report = rounds.report();
        assert!(!report.contains("baseline"), "{report}");
        assert!(report.contains("90.00–120.00"), "{report}");
    }
}
