//! Promises to pay (PTP), set by a human agent or an AI call, and their status on a day.

use chrono::{DateTime, Datelike, NaiveDate, Utc};

/// Who set a promise to pay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PtpChannel {
    /// A human agent (`ptp_date_human`, `broken_ptp_date_human`).
    Human,
    /// An AI call (`ptp_date_ai`, `broken_ptp_date_ai`).
    Ai,
}

impl PtpChannel {
    /// Both channels, in order.
    pub const ALL: [PtpChannel; 2] = [PtpChannel::Human, PtpChannel::Ai];

    /// `human` or `ai`.
    pub fn name(self) -> &'static str {
        match self {
            PtpChannel::Human => "human",
            PtpChannel::Ai => "ai",
        }
    }

    /// A stable number for the channel (0 human, 1 AI), for storage keys.
    pub fn code(self) -> u8 {
        match self {
            PtpChannel::Human => 0,
            PtpChannel::Ai => 1,
        }
    }
}

/// A deal's promise to pay on one channel, as of one day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PtpStatus {
    /// No promise on the channel.
    None,
    /// The PTP day (UTC) is the as-of day or later, and the promise is not marked broken.
    Open,
    /// The PTP day passed without the promise being marked broken.
    Kept,
    /// The vendor marked the promise broken (`broken_ptp_date_*` is set).
    Broken,
}

/// What a deal's channel says whatever the day: no promise, a broken one, or one for a day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PtpFact {
    None,
    Broken,
    /// Not broken, promised for this day (days since CE, UTC).
    Promised(i32),
}

impl PtpFact {
    /// The fact of a channel whose promise is for `promised` and is marked broken or not.
    pub fn of(promised: Option<DateTime<Utc>>, broken: bool) -> Self {
        if broken {
            return PtpFact::Broken;
        }
        match promised {
            Some(at) => PtpFact::Promised(at.date_naive().num_days_from_ce()),
            None => PtpFact::None,
        }
    }

    /// The status on `as_of`.
    pub fn status(self, as_of: NaiveDate) -> PtpStatus {
        self.status_on(as_of.num_days_from_ce())
    }

    /// The status on day number `as_of` (days since CE).
    pub fn status_on(self, as_of: i32) -> PtpStatus {
        match self {
            PtpFact::None => PtpStatus::None,
            PtpFact::Broken => PtpStatus::Broken,
            PtpFact::Promised(day) if day >= as_of => PtpStatus::Open,
            PtpFact::Promised(_) => PtpStatus::Kept,
        }
    }
}
