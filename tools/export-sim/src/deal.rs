//! D16 "Collections Cases" rows: how they are made up, how they change, and how the live API
//! writes them (with its quirks, docs/domain.md §1).

use std::collections::HashMap;

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeDelta, Utc};
use serde_json::{Map, Value};

use super::json::Out;
use super::rng::SplitMix64;

const STAGES: [&str; 6] = [
    "stage_new",
    "stage_contacted",
    "stage_ptp",
    "stage_negotiation",
    "stage_paid",
    "stage_closed",
];
const NEW: u8 = 0;
const CONTACTED: u8 = 1;
const PTP: u8 = 2;
const NEGOTIATION: u8 = 3;
const PAID: u8 = 4;
const CLOSED: u8 = 5;

const PIPELINES: [&str; 3] = ["Early Collections", "Late Collections", "Legal"];
const LEGAL: u8 = 2;

const COMMS_PIPELINES: [&str; 5] = [
    "Standard Outreach",
    "Soft Reminder",
    "Intensive Outreach",
    "AI Voice First",
    "Legal Notice",
];
const LEGAL_NOTICE: u8 = 4;

const AGENTS: [&str; 12] = [
    "Mariam Al-Shehri",
    "Omar Haddad",
    "Aisha Rahman",
    "Yusuf Karim",
    "Fatima Noor",
    "Khalid Mansour",
    "Layla Aziz",
    "Priya Nair",
    "Daniel Okafor",
    "Sara Lindqvist",
    "Hassan Farouk",
    "Noura Saleh",
];

/// The one value of a malformed row that a normaliser must refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Malformation {
    /// `amount` as text with a decimal point, e.g. `"9200.00"`.
    AmountText,
    /// `amount` with a fraction, e.g. `920000.5`.
    AmountFraction,
    /// `dpd_due_date_timestamp` written `YYYY-MM-DD`.
    DueDateIso,
    /// `dpd_due_date_timestamp` a day that does not exist, `31/02/YYYY`.
    DueDateImpossible,
    /// `do_not_contact` as text, `"yes"` / `"no"`.
    DoNotContactText,
    /// `created_at` is `"not a date"`; only on a borrower's only deal, so the row key
    /// `(public_id, created_at)` stays unique.
    CreatedAtText,
}

const KEY_SAFE_MALFORMATIONS: [Malformation; 5] = [
    Malformation::AmountText,
    Malformation::AmountFraction,
    Malformation::DueDateIso,
    Malformation::DueDateImpossible,
    Malformation::DoNotContactText,
];

/// One D16 row as the simulator holds it (one version of it).
#[derive(Debug, Clone)]
pub(crate) struct Deal {
    /// The borrower × lender link, written as a UUID.
    pub(crate) public_id: u128,
    /// Whole milliseconds.
    pub(crate) created_at: DateTime<Utc>,
    /// Whole milliseconds; the cursor field.
    pub(crate) updated_at: DateTime<Utc>,
    stage: u8,
    pipeline: u8,
    comms: u8,
    agent: Option<u8>,
    /// Minor units.
    amount: i64,
    dpd_due_date: NaiveDate,
    last_due_date: NaiveDate,
    ptp_human: Option<DateTime<Utc>>,
    ptp_ai: Option<DateTime<Utc>>,
    broken_ptp_human: Option<DateTime<Utc>>,
    broken_ptp_ai: Option<DateTime<Utc>>,
    reached_rpc: bool,
    do_not_contact: bool,
    /// Emitted with the pre-v1.2 name `case_public_id`.
    legacy_id: bool,
    malformed: Option<Malformation>,
}

/// The order pages follow: `updated_at`, then the row key.
pub(crate) type SortKey = (DateTime<Utc>, u128, DateTime<Utc>);

impl Deal {
    pub(crate) fn sort_key(&self) -> SortKey {
        (self.updated_at, self.public_id, self.created_at)
    }

    /// The row exactly as the export API writes it.
    pub(crate) fn to_json(&self) -> Value {
        Value::Object(
            self.fields()
                .iter()
                .map(|(name, value)| ((*name).to_owned(), value.to_value()))
                .collect::<Map<String, Value>>(),
        )
    }

    /// The row as JSON text, its fields in the export's order, appended to `out`: what a page
    /// is made of, without a map per row.
    pub(crate) fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        for (i, (name, value)) in self.fields().iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            // Field names are plain ASCII identifiers: nothing to escape.
            out.push(b'"');
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
            value.write(out);
        }
        out.push(b'}');
    }

    /// The row's fields as the export API emits them, in its order.
    fn fields(&self) -> [(&'static str, Out); 16] {
        let id_field = if self.legacy_id {
            "case_public_id"
        } else {
            "public_id"
        };
        let amount = match self.malformed {
            Some(Malformation::AmountText) => {
                Out::Made(format!("{}.{:02}", self.amount / 100, self.amount % 100))
            }
            Some(Malformation::AmountFraction) => Out::Float(self.amount as f64 + 0.5),
            _ => Out::Int(self.amount),
        };
        let due = match self.malformed {
            Some(Malformation::DueDateIso) => {
                Out::Made(self.dpd_due_date.format("%Y-%m-%d").to_string())
            }
            Some(Malformation::DueDateImpossible) => {
                Out::Made(format!("31/02/{}", self.dpd_due_date.year()))
            }
            _ => Out::Day(self.dpd_due_date),
        };
        let do_not_contact = match self.malformed {
            Some(Malformation::DoNotContactText) => {
                Out::Text(if self.do_not_contact { "yes" } else { "no" })
            }
            _ => Out::Bool(self.do_not_contact),
        };
        let created_at = match self.malformed {
            Some(Malformation::CreatedAtText) => Out::Text("not a date"),
            _ => Out::Instant(self.created_at),
        };
        let instant = |at: Option<DateTime<Utc>>| at.map_or(Out::Null, Out::Instant);
        [
            (id_field, Out::Uuid(self.public_id)),
            ("deal_stage_id", Out::Text(STAGES[usize::from(self.stage)])),
            ("pipeline", Out::Text(PIPELINES[usize::from(self.pipeline)])),
            (
                "comms_pipeline",
                Out::Text(COMMS_PIPELINES[usize::from(self.comms)]),
            ),
            ("amount", amount),
            (
                "assigned_user_name",
                self.agent
                    .map_or(Out::Null, |a| Out::Text(AGENTS[usize::from(a)])),
            ),
            // The live API's field-name bug: `dpd_due_date` goes out as `dpd_due_date_timestamp`.
            ("dpd_due_date_timestamp", due),
            ("last_due_date", Out::Day(self.last_due_date)),
            ("ptp_date_human", instant(self.ptp_human)),
            ("ptp_date_ai", instant(self.ptp_ai)),
            ("broken_ptp_date_human", instant(self.broken_ptp_human)),
            ("broken_ptp_date_ai", instant(self.broken_ptp_ai)),
            ("hasReachedRpcOrBeyond", Out::Bool(self.reached_rpc)),
            ("do_not_contact", do_not_contact),
            ("created_at", created_at),
            ("updated_at", Out::Instant(self.updated_at)),
        ]
    }

    /// The next version of this deal, changed at `updated_at`: the case moves on through its
    /// pipeline, PTPs are set, kept or broken, agents and flags change now and then.
    pub(crate) fn evolve(&self, rng: &mut SplitMix64, updated_at: DateTime<Utc>) -> Deal {
        let mut next = self.clone();
        next.updated_at = updated_at;
        let today = midnight(updated_at);
        // A promise whose day has passed unpaid is broken.
        let unkept = |ptp: Option<DateTime<Utc>>, broken: Option<DateTime<Utc>>| {
            ptp.filter(|ptp| *ptp < today && broken.is_none())
        };
        if next.stage == PTP {
            if let Some(ptp) = unkept(next.ptp_human, next.broken_ptp_human) {
                next.broken_ptp_human = Some(ptp + Duration::days(1));
                next.stage = NEGOTIATION;
            }
            if let Some(ptp) = unkept(next.ptp_ai, next.broken_ptp_ai) {
                next.broken_ptp_ai = Some(ptp + Duration::days(1));
                next.stage = NEGOTIATION;
            }
        }
        match next.stage {
            NEW => {
                next.stage = CONTACTED;
                next.reached_rpc = rng.chance(0.8);
                if next.agent.is_none() {
                    next.agent = Some(rng.index(AGENTS.len()) as u8);
                }
            }
            CONTACTED | NEGOTIATION => {
                next.reached_rpc = true;
                if rng.chance(0.7) {
                    next.stage = PTP;
                    next.promise(rng, today);
                } else {
                    next.stage = NEGOTIATION;
                }
            }
            PTP => {
                if rng.chance(0.5) {
                    next.stage = PAID;
                    next.amount = 0;
                } else {
                    next.promise(rng, today);
                }
            }
            PAID => next.stage = CLOSED,
            _ => {
                // A closed case only sees housekeeping: a new owner or outreach plan.
                next.comms = rng.index(COMMS_PIPELINES.len()) as u8;
            }
        }
        if next.stage != PAID && next.stage != CLOSED && next.amount > 0 && rng.chance(0.2) {
            // A partial payment, in whole units mostly.
            let paid = next.amount / rng.between(2, 5) / 100 * 100;
            next.amount -= paid.max(1);
        }
        if rng.chance(0.1) {
            next.agent = Some(rng.index(AGENTS.len()) as u8);
        }
        if rng.chance(0.03) {
            next.do_not_contact = !next.do_not_contact;
        }
        next
    }

    /// A fresh PTP by a human agent or an AI call, due in 1–14 days.
    fn promise(&mut self, rng: &mut SplitMix64, today: DateTime<Utc>) {
        let day = today + Duration::days(rng.between(1, 14));
        if rng.chance(0.6) {
            self.ptp_human = Some(day);
            self.broken_ptp_human = None;
        } else {
            self.ptp_ai = Some(day);
            self.broken_ptp_ai = None;
        }
    }

    /// Gives a new deal from the PTP stage on its human and/or AI PTPs: pending or broken ones.
    fn make_up_promises(&mut self, rng: &mut SplitMix64, today: DateTime<Utc>) {
        if !matches!(self.stage, PTP | NEGOTIATION | PAID | CLOSED) {
            return;
        }
        for human in [true, false] {
            if !rng.chance(if human { 0.6 } else { 0.3 }) {
                continue;
            }
            let broken = self.stage == NEGOTIATION || rng.chance(0.2);
            let (ptp, broken_at) = if broken || self.stage != PTP {
                let ptp = today - Duration::days(rng.between(2, 20));
                (ptp, broken.then(|| ptp + Duration::days(1)))
            } else {
                (today + Duration::days(rng.between(1, 14)), None)
            };
            if human {
                self.ptp_human = Some(ptp);
                self.broken_ptp_human = broken_at;
            } else {
                self.ptp_ai = Some(ptp);
                self.broken_ptp_ai = broken_at;
            }
        }
    }
}

/// Makes up deals: borrowers, some with two or three deals, and the shape of each deal.
pub(crate) struct DealMaker {
    pub(crate) legacy_share: f64,
    pub(crate) malformed_share: f64,
}

impl DealMaker {
    /// `updated_at` values in order, each the instant of one row: `count` of them.
    /// Borrowers get 1–3 deals each (a deal's `created_at` differs from its siblings').
    pub(crate) fn initial(
        &self,
        rng: &mut SplitMix64,
        updated: impl IntoIterator<Item = DateTime<Utc>>,
    ) -> Vec<Deal> {
        let updated = updated.into_iter();
        let mut deals = Vec::with_capacity(updated.size_hint().0);
        // Borrowers owed one more deal, once per further deal.
        let mut pending: Vec<u128> = Vec::new();
        // `created_at` values already taken by borrowers with several deals.
        let mut taken: HashMap<u128, Vec<DateTime<Utc>>> = HashMap::new();
        for updated_at in updated {
            let (public_id, only_deal) = if !pending.is_empty() && rng.chance(0.25) {
                (pending.swap_remove(rng.index(pending.len())), false)
            } else {
                let public_id = new_public_id(rng);
                let deals = match rng.unit() {
                    u if u < 0.8 => 1,
                    u if u < 0.95 => 2,
                    _ => 3,
                };
                for _ in 1..deals {
                    pending.push(public_id);
                }
                (public_id, deals == 1)
            };
            let mut created_at =
                updated_at - Duration::milliseconds(rng.between(0, 90 * 86_400_000));
            if !only_deal {
                let siblings = taken.entry(public_id).or_default();
                while siblings.contains(&created_at) {
                    created_at -= Duration::milliseconds(rng.between(1, 86_400_000));
                }
                siblings.push(created_at);
            }
            deals.push(self.deal(rng, public_id, created_at, updated_at, only_deal));
        }
        deals
    }

    /// New deals at `updated`, all after `after` (every existing `updated_at`): new borrowers
    /// mostly, a new deal of an existing borrower (one of `existing`) now and then.
    pub(crate) fn later(
        &self,
        rng: &mut SplitMix64,
        after: DateTime<Utc>,
        updated: impl IntoIterator<Item = DateTime<Utc>>,
        existing: impl Fn(&mut SplitMix64) -> Option<u128>,
    ) -> Vec<Deal> {
        let mut chosen = std::collections::HashSet::new();
        updated
            .into_iter()
            .map(|updated_at| {
                let existing = if rng.chance(0.2) {
                    existing(rng).filter(|id| chosen.insert(*id))
                } else {
                    None
                };
                let (public_id, only_deal) = match existing {
                    Some(public_id) => (public_id, false),
                    None => (new_public_id(rng), true),
                };
                // Created after every existing `updated_at`, so after every existing
                // `created_at` of the borrower: the row key stays unique.
                let span = (updated_at - after).num_milliseconds().max(1);
                let created_at = updated_at - Duration::milliseconds(rng.between(0, span - 1));
                self.deal(rng, public_id, created_at, updated_at, only_deal)
            })
            .collect()
    }

    /// One made-up deal of borrower `public_id`: where it stands in collections at `updated_at`.
    fn deal(
        &self,
        rng: &mut SplitMix64,
        public_id: u128,
        created_at: DateTime<Utc>,
        updated_at: DateTime<Utc>,
        only_deal: bool,
    ) -> Deal {
        let dpd_due_date = created_at.date_naive() - Duration::days(rng.between(1, 120));
        let last_due_date = dpd_due_date + Duration::days(30 * rng.between(0, 3));
        let pipeline = pipeline_for((updated_at.date_naive() - dpd_due_date).num_days());
        let comms = initial_comms(rng, pipeline);
        let stage = initial_stage(rng);
        let agent = initial_agent(rng, stage);
        let amount = initial_amount(rng);
        let mut deal = Deal {
            public_id,
            created_at,
            updated_at,
            stage,
            pipeline,
            comms,
            agent,
            amount,
            dpd_due_date,
            last_due_date,
            ptp_human: None,
            ptp_ai: None,
            broken_ptp_human: None,
            broken_ptp_ai: None,
            reached_rpc: stage != NEW && rng.chance(0.85),
            do_not_contact: rng.chance(0.1),
            legacy_id: rng.chance(self.legacy_share),
            malformed: None,
        };
        deal.make_up_promises(rng, midnight(updated_at));
        if stage == PAID || stage == CLOSED {
            deal.amount = if rng.chance(0.7) { 0 } else { deal.amount };
        }
        deal.malformed = self.malformation(rng, only_deal);
        deal
    }

    /// The value a share of rows get wrong; `CreatedAtText` only on a borrower's only deal.
    fn malformation(&self, rng: &mut SplitMix64, only_deal: bool) -> Option<Malformation> {
        if !rng.chance(self.malformed_share) {
            return None;
        }
        Some(if only_deal && rng.chance(1.0 / 6.0) {
            Malformation::CreatedAtText
        } else {
            *rng.pick(&KEY_SAFE_MALFORMATIONS)
        })
    }
}

/// The pipeline for a case this many days past due: early up to 30, late up to 90, then legal.
fn pipeline_for(days_past_due: i64) -> u8 {
    match days_past_due {
        d if d <= 30 => 0,
        d if d <= 90 => 1,
        _ => LEGAL,
    }
}

/// The outreach plan of a new deal: mostly a legal notice in the legal pipeline, else another.
fn initial_comms(rng: &mut SplitMix64, pipeline: u8) -> u8 {
    if pipeline == LEGAL && rng.chance(0.7) {
        LEGAL_NOTICE
    } else {
        rng.index(COMMS_PIPELINES.len() - 1) as u8
    }
}

/// The stage of a new deal, weighted towards the early and middle stages.
fn initial_stage(rng: &mut SplitMix64) -> u8 {
    match rng.unit() {
        u if u < 0.15 => NEW,
        u if u < 0.40 => CONTACTED,
        u if u < 0.60 => PTP,
        u if u < 0.80 => NEGOTIATION,
        u if u < 0.90 => PAID,
        _ => CLOSED,
    }
}

/// The agent of a new deal; some new cases are not assigned yet.
fn initial_agent(rng: &mut SplitMix64, stage: u8) -> Option<u8> {
    if stage == NEW && rng.chance(0.3) {
        None
    } else {
        Some(rng.index(AGENTS.len()) as u8)
    }
}

/// The amount owed by a new deal, in minor units: whole units mostly.
fn initial_amount(rng: &mut SplitMix64) -> i64 {
    if rng.chance(0.8) {
        rng.between(50, 25_000) * 100
    } else {
        rng.between(5_000, 2_500_000)
    }
}

/// Hands out `updated_at` instants in order, many rows sharing one (ties at page boundaries are
/// what a client's paging must survive).
pub(crate) struct Ticks {
    second: DateTime<Utc>,
    at: Option<DateTime<Utc>>,
    /// Largest step between two distinct instants, in seconds.
    max_step: i64,
}

impl Ticks {
    /// Instants strictly after `after`.
    pub(crate) fn after(after: DateTime<Utc>, max_step: i64) -> Self {
        let second = DateTime::from_timestamp(after.timestamp(), 0).unwrap_or(after);
        Self {
            second,
            at: None,
            max_step,
        }
    }

    pub(crate) fn next(&mut self, rng: &mut SplitMix64) -> DateTime<Utc> {
        match self.at {
            Some(at) if !rng.chance(0.35) => at,
            _ => {
                self.second += TimeDelta::seconds(rng.between(1, self.max_step));
                let millis = if rng.chance(0.2) {
                    rng.between(1, 999)
                } else {
                    0
                };
                let at = self.second + TimeDelta::milliseconds(millis);
                self.at = Some(at);
                at
            }
        }
    }
}

fn new_public_id(rng: &mut SplitMix64) -> u128 {
    let raw = (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64());
    // A version-4, RFC 4122 variant UUID, like the vendor's.
    (raw & !(0xF000u128 << 64) & !(0xC000u128 << 48)) | (0x4000u128 << 64) | (0x8000u128 << 48)
}

fn midnight(at: DateTime<Utc>) -> DateTime<Utc> {
    at.date_naive().and_time(chrono::NaiveTime::MIN).and_utc()
}
