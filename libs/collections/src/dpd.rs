//! Days past due (DPD): `as_of − dpd_due_date`, and the buckets collections teams report by.

use chrono::NaiveDate;

/// A DPD bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DpdBucket {
    /// DPD ≤ 0 (not yet due, or due today).
    Current,
    /// DPD 1 to 30.
    Days1To30,
    /// DPD 31 to 60.
    Days31To60,
    /// DPD 61 to 90.
    Days61To90,
    /// DPD ≥ 91.
    Over90,
    /// No readable due date.
    Unknown,
}

impl DpdBucket {
    /// Every bucket, in order.
    pub const ALL: [DpdBucket; 6] = [
        DpdBucket::Current,
        DpdBucket::Days1To30,
        DpdBucket::Days31To60,
        DpdBucket::Days61To90,
        DpdBucket::Over90,
        DpdBucket::Unknown,
    ];

    /// The bucket's name on the wire: `current`, `1-30`, `31-60`, `61-90`, `90+`, `unknown`.
    pub fn name(self) -> &'static str {
        match self {
            DpdBucket::Current => "current",
            DpdBucket::Days1To30 => "1-30",
            DpdBucket::Days31To60 => "31-60",
            DpdBucket::Days61To90 => "61-90",
            DpdBucket::Over90 => "90+",
            DpdBucket::Unknown => "unknown",
        }
    }

    /// The bucket of a wire name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.name() == name)
    }

    /// The bucket of a number of days past due (`None`: no due date).
    pub fn of(dpd_days: Option<i64>) -> Self {
        match dpd_days {
            None => DpdBucket::Unknown,
            Some(d) if d <= 0 => DpdBucket::Current,
            Some(d) if d <= 30 => DpdBucket::Days1To30,
            Some(d) if d <= 60 => DpdBucket::Days31To60,
            Some(d) if d <= 90 => DpdBucket::Days61To90,
            Some(_) => DpdBucket::Over90,
        }
    }

    /// The position of the bucket in [`DpdBucket::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The days past due of the bucket, inclusive (`None`: unbounded); `None` for `Unknown`.
    pub fn dpd_bounds(self) -> Option<(Option<i64>, Option<i64>)> {
        match self {
            DpdBucket::Current => Some((None, Some(0))),
            DpdBucket::Days1To30 => Some((Some(1), Some(30))),
            DpdBucket::Days31To60 => Some((Some(31), Some(60))),
            DpdBucket::Days61To90 => Some((Some(61), Some(90))),
            DpdBucket::Over90 => Some((Some(91), None)),
            DpdBucket::Unknown => None,
        }
    }
}

/// Days past due on `as_of` of a deal due on `due`: negative before the due date; `None`
/// without a due date.
pub fn dpd_days(due: Option<NaiveDate>, as_of: NaiveDate) -> Option<i64> {
    due.map(|due| as_of.signed_duration_since(due).num_days())
}

/// Days past due on day number `as_of` of a deal due on day number `due` (days since CE).
pub fn dpd_days_between(due: Option<i32>, as_of: i32) -> Option<i64> {
    due.map(|due| i64::from(as_of) - i64::from(due))
}

/// A due date as the export carries it once normalised: `YYYY-MM-DD`; `None` when unreadable.
pub fn parse_due_date(text: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()
}
