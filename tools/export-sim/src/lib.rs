//! A simulator of the ClearGrid-style export API (docs/domain.md §1) serving D16 "Collections
//! Cases": for the puller's tests and for `recoup export-sim`, a stand-in vendor to point a
//! puller at.
//!
//! # HTTP API
//!
//! - `POST /admin/auth/{lender}/login` with `{"email", "password"}` →
//!   `{"lenderPublicId", "token", "refreshToken"}`; wrong credentials → 401 "Invalid email or
//!   password"; a lender slug other than [`SimConfig::lender`] → 401 "Lender not found or
//!   inactive".
//! - `POST /admin/auth/{lender}/refresh-token` with `{"refreshToken"}` → `{"token"}`; an
//!   unknown refresh token → 401 "Invalid refresh token". Refresh tokens never expire.
//! - `GET /admin/v3/lenders/{lenderPublicId}/exports/S3/D16` with `Authorization: Bearer
//!   <token>` and the query `since` (ISO-8601, `updated_at >= since`), `until`
//!   (`updated_at < until`), `cursor`, `limit` (clamped to 1–1000, default 500), `sort`
//!   (`asc` | `desc`, by `updated_at` then row key) and `includeTotal` →
//!   `{"code": 200, "message": "OK", "body": {"rows": [...], "pagination": {"nextCursor",
//!   "total"?}}, "errors": null}`.
//!
//!   Answers, in the order they are checked: 401 "Missing bearer token" / "Invalid token" /
//!   "Token expired"; 403 when `lenderPublicId` is not the token's lender; 404 "Dataset not
//!   found" for any dataset but `S3/D16`; 400 for a `limit` that is not an integer, a `sort`
//!   other than asc/desc, an `includeTotal` other than true/false, a `since`/`until` that is not
//!   ISO-8601, or a `since`/`until`/`sort` that differs from the one the cursor chain began
//!   with; 500 "Invalid cursor" for a cursor this simulator did not issue. Only then the
//!   [`FaultPlan`] is applied, so faults hit requests that would otherwise succeed.
//!
//! Every error answer is `{"success": false, "message", "requestId"}`; every answer carries
//! `x-request-id`.
//!
//! # Cursor chains
//!
//! A request without `cursor` starts a chain and fixes a snapshot (the data version of that
//! moment). Every page of the chain is cut from the rows as of that snapshot, filtered by the
//! chain's `since`/`until` and ordered by (`updated_at`, `public_id`, `created_at`) (reversed for
//! `desc`), whatever [`Simulator::mutate`] or [`Simulator::add_rows`] do meanwhile: no row is
//! skipped or repeated, and the same cursor always answers the same page. A changed row gets an
//! `updated_at` later than every earlier one, so the next chain, `since` the largest
//! `updated_at` seen, finds it. `limit` is read from each request; every page but the last is
//! full, and the last has `nextCursor: null`. `includeTotal` gives the chain's row count as of
//! its snapshot. Cursors are base64url without padding, signed with a random secret of the
//! simulator: they are worthless to another simulator (or after a restart).
//!
//! # Rows
//!
//! D16 as the live API emits it: `dpd_due_date` under the key `dpd_due_date_timestamp`;
//! `case_public_id` instead of `public_id` on a [`SimConfig::legacy_public_id_share`] of rows;
//! `dpd_due_date`, `last_due_date` as `DD/MM/YYYY`; PTP dates, `created_at` and `updated_at` as
//! ISO-8601 with milliseconds and `Z`; `amount` an integer in minor units; absent PTPs `null`.
//! A borrower (`public_id`) may have two or three deals; the row key `(public_id, created_at)`
//! is unique. Many rows share one `updated_at`. A [`SimConfig::malformed_share`] of rows carries
//! one value a normaliser must refuse: `amount` as text (`"9200.00"`) or with a fraction
//! (`920000.5`), `dpd_due_date_timestamp` as `YYYY-MM-DD` or `31/02/YYYY`, `do_not_contact` as
//! `"yes"`/`"no"`, or `created_at` `"not a date"` (only on a borrower's only deal, so the
//! emitted key stays unique).
//!
//! Everything generated (rows, changes, tokens) follows from [`SimConfig::seed`], every fault
//! from [`FaultPlan::seed`] and the order of requests; only cursors differ between two
//! simulators with the same seeds (their signing secret is random).

mod auth;
mod cursor;
mod deal;
mod faults;
mod http;
mod json;
mod rng;
mod store;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use auth::Sessions;
use cursor::CursorKey;
use deal::{Deal, DealMaker, Ticks};
use faults::FaultDice;
use rng::SplitMix64;
use store::Store;

/// Mixed into the seed for the generator of later changes, so they do not replay the rows'.
const CHANGES_STREAM: u64 = 0x6368_616E_6765_7321;
/// Largest gap between two distinct `updated_at` of the generated rows, in seconds.
const INITIAL_STEP_SECS: i64 = 90;
/// Largest gap between two distinct `updated_at` of later changes, in seconds.
const CHANGE_STEP_SECS: i64 = 5;

/// What the simulator serves and to whom.
#[derive(Clone)]
pub struct SimConfig {
    /// How many D16 rows exist at start.
    pub rows: usize,
    /// Seeds every generated row and every later change ([`Simulator::mutate`],
    /// [`Simulator::add_rows`]).
    pub seed: u64,
    /// The lender slug in the auth paths, e.g. `acme` in `/admin/auth/acme/login`.
    pub lender: String,
    /// What login answers as `lenderPublicId`, and the only lender whose exports exist.
    pub lender_public_id: String,
    /// The login's email (compared ignoring ASCII case).
    pub email: String,
    pub password: String,
    /// Access tokens expire this long after they were issued (401 "Token expired").
    pub token_ttl: Duration,
    /// Fraction (0–1) of rows emitted with `case_public_id` instead of `public_id`.
    pub legacy_public_id_share: f64,
    /// Fraction (0–1) of rows carrying one value a normaliser must refuse.
    pub malformed_share: f64,
    /// The generated rows' `updated_at` are spread after this instant, about 4 rows a minute
    /// (10,000 rows span about two days), about 3 rows sharing each instant; their
    /// `created_at` lie up to 90 days before their `updated_at`.
    pub base_time: DateTime<Utc>,
    /// Faults injected into export requests; change them with [`Simulator::set_faults`].
    pub faults: FaultPlan,
}

impl Default for SimConfig {
    /// 10,000 rows, seed 1, lender `demo` / `lender-demo`, `demo@example.com` / `demo`, tokens
    /// valid 10 minutes, 5% legacy ids, no malformed rows, rows after 2026-05-01T00:00:00Z,
    /// no faults.
    fn default() -> Self {
        Self {
            rows: 10_000,
            seed: 1,
            lender: "demo".to_owned(),
            lender_public_id: "lender-demo".to_owned(),
            email: "demo@example.com".to_owned(),
            password: "demo".to_owned(),
            token_ttl: Duration::from_secs(600),
            legacy_public_id_share: 0.05,
            malformed_share: 0.0,
            base_time: Utc
                .with_ymd_and_hms(2026, 5, 1, 0, 0, 0)
                .single()
                .unwrap_or_default(),
            faults: FaultPlan::default(),
        }
    }
}

impl fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimConfig")
            .field("rows", &self.rows)
            .field("seed", &self.seed)
            .field("lender", &self.lender)
            .field("lender_public_id", &self.lender_public_id)
            .field("email", &self.email)
            .field("password", &"***")
            .field("token_ttl", &self.token_ttl)
            .field("legacy_public_id_share", &self.legacy_public_id_share)
            .field("malformed_share", &self.malformed_share)
            .field("base_time", &self.base_time)
            .field("faults", &self.faults)
            .finish()
    }
}

/// Faults injected into export requests (never into login or refresh), each a probability
/// (0–1) per request, drawn from a generator seeded with [`FaultPlan::seed`]. At most one fault
/// answers a request, checked in this order: dropped connection, 429, 500, invalid cursor, 504;
/// `slow` delays the answer, whatever it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultPlan {
    pub seed: u64,
    /// 429 "Too many requests" with `Retry-After: retry_after_secs`.
    pub too_many_requests: f64,
    /// Seconds.
    pub retry_after_secs: u64,
    /// 500 "Internal server error".
    pub server_error: f64,
    /// On requests carrying a cursor only: 500 "Invalid cursor" though the cursor is valid, as
    /// when the vendor's cursor expired.
    pub invalid_cursor: f64,
    /// 504 "Gateway timeout", only when the request's (clamped) `limit` is above
    /// `gateway_timeout_above_limit`.
    pub gateway_timeout: f64,
    pub gateway_timeout_above_limit: u32,
    /// The answer comes after `slow_delay`.
    pub slow: f64,
    pub slow_delay: Duration,
    /// A 200 whose body breaks off: the connection is closed without a complete response, and
    /// the client sees an error reading the body (or the headers).
    pub drop_connection: f64,
}

/// What the simulator has answered so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SimStats {
    /// Requests by endpoint: `login`, `refresh`, `export`, `other` (unknown routes).
    pub requests: BTreeMap<String, u64>,
    /// Complete answers by HTTP status (dropped connections are not among them).
    pub statuses: BTreeMap<u16, u64>,
    /// Successful logins.
    pub logins: u64,
    /// Successful token refreshes.
    pub refreshes: u64,
    /// Rows in 200 export pages.
    pub rows_served: u64,
    /// 200 export pages.
    pub pages_served: u64,
    /// Export answers cut off by the `drop_connection` fault.
    pub dropped_connections: u64,
    /// Faults injected by kind: `too_many_requests`, `server_error`, `invalid_cursor`,
    /// `gateway_timeout`, `slow`, `drop_connection`.
    pub faults_injected: BTreeMap<String, u64>,
}

impl SimStats {
    fn count(&mut self, endpoint: http::Endpoint) {
        *self
            .requests
            .entry(endpoint.as_str().to_owned())
            .or_default() += 1;
    }

    fn status(&mut self, status: axum::http::StatusCode) {
        *self.statuses.entry(status.as_u16()).or_default() += 1;
    }
}

/// The simulated export API: its data, its sessions, its faults. Cheap to clone; clones share
/// everything.
#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Inner>,
}

struct Inner {
    config: SimConfig,
    data: RwLock<Data>,
    sessions: Mutex<Sessions>,
    faults: Mutex<FaultDice>,
    stats: Mutex<SimStats>,
    cursor_key: CursorKey,
    requests: AtomicU64,
}

/// The rows and the generator of their changes.
struct Data {
    store: Store,
    rng: SplitMix64,
    maker: DealMaker,
}

impl fmt::Debug for Simulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Simulator")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Simulator {
    /// Generates `config.rows` rows (1M take a few seconds) and is ready to serve.
    pub fn new(config: SimConfig) -> Self {
        let maker = DealMaker {
            legacy_share: config.legacy_public_id_share,
            malformed_share: config.malformed_share,
        };
        let mut rng = SplitMix64::new(config.seed);
        let mut ticks = Ticks::after(config.base_time, INITIAL_STEP_SECS);
        let updated: Vec<DateTime<Utc>> = (0..config.rows).map(|_| ticks.next(&mut rng)).collect();
        let deals = maker.initial(&mut rng, updated);
        let data = Data {
            store: Store::new(deals),
            rng: SplitMix64::new(config.seed ^ CHANGES_STREAM),
            maker,
        };
        let sessions = Sessions::new(config.seed, config.token_ttl);
        let faults = FaultDice::new(config.faults.clone());
        Self {
            inner: Arc::new(Inner {
                config,
                data: RwLock::new(data),
                sessions: Mutex::new(sessions),
                faults: Mutex::new(faults),
                stats: Mutex::new(SimStats::default()),
                cursor_key: CursorKey::random(),
                requests: AtomicU64::new(0),
            }),
        }
    }

    /// The configuration it was made with (the fault plan as it was then).
    pub fn config(&self) -> &SimConfig {
        &self.inner.config
    }

    /// The routes of the API, to serve with `axum::serve` or to nest in another router.
    pub fn router(&self) -> axum::Router {
        http::router(self.clone())
    }

    /// Binds `addr` (port 0 picks a free port) and serves in a task until the returned
    /// [`RunningSim`] is stopped or dropped.
    pub async fn start(&self, addr: SocketAddr) -> std::io::Result<RunningSim> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let router = self.router();
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    // A dropped sender stops the server as well.
                    let _ = stopped.await;
                })
                .await
        });
        tracing::info!(%addr, rows = self.row_count(), "export simulator listening");
        Ok(RunningSim {
            addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Replaces the fault plan; its dice restart from `faults.seed`.
    pub fn set_faults(&self, faults: FaultPlan) {
        *self.lock_faults() = FaultDice::new(faults);
    }

    /// The fault plan in force.
    pub fn faults(&self) -> FaultPlan {
        self.lock_faults().plan.clone()
    }

    /// Changes `n` distinct existing rows now (all of them if there are fewer): their content
    /// moves on and their `updated_at` moves past every existing `updated_at`. Their key
    /// (`public_id`, `created_at`) stays. Returns how many rows changed.
    pub fn mutate(&self, n: usize) -> usize {
        let mut data = self.write_data();
        let Data { store, rng, .. } = &mut *data;
        let rows = distinct_rows(rng, store.row_count(), n);
        let Some(after) = store.max_updated_at() else {
            return 0;
        };
        let mut ticks = Ticks::after(after, CHANGE_STEP_SECS);
        let updated: Vec<(usize, Deal)> = rows
            .into_iter()
            .filter_map(|row| {
                let at = ticks.next(rng);
                Some((row, store.current(row)?.evolve(rng, at)))
            })
            .collect();
        let changed = updated.len();
        store.commit(updated, Vec::new());
        changed
    }

    /// `n` new rows appear, with `updated_at` past every existing one: deals of new borrowers
    /// mostly, now and then a further deal of an existing borrower.
    pub fn add_rows(&self, n: usize) {
        if n == 0 {
            return;
        }
        let mut data = self.write_data();
        let Data { store, rng, maker } = &mut *data;
        let after = store
            .max_updated_at()
            .unwrap_or(self.inner.config.base_time);
        let mut ticks = Ticks::after(after, CHANGE_STEP_SECS);
        let updated: Vec<DateTime<Utc>> = (0..n).map(|_| ticks.next(rng)).collect();
        let count = store.row_count();
        let existing = |rng: &mut SplitMix64| -> Option<u128> {
            (count > 0)
                .then(|| store.current(rng.index(count)).map(|deal| deal.public_id))
                .flatten()
        };
        let added = maker.later(rng, after, updated, existing);
        store.commit(Vec::new(), added);
    }

    /// Every access token issued so far is expired (401 "Token expired"); refresh tokens and
    /// later logins still work.
    pub fn expire_tokens(&self) {
        self.lock_sessions().expire_all();
    }

    /// The ground truth: the latest version of every row, exactly as the API would emit it
    /// now, in page order (`updated_at`, then row key).
    pub fn latest(&self) -> Vec<Value> {
        self.read_data().store.latest().map(Deal::to_json).collect()
    }

    /// How many rows exist now.
    pub fn row_count(&self) -> usize {
        self.read_data().store.row_count()
    }

    /// Requests by endpoint and status, logins, refreshes, rows served, faults injected.
    pub fn stats(&self) -> SimStats {
        self.lock_stats().clone()
    }

    fn next_request_id(&self) -> String {
        format!(
            "req-{:08x}",
            self.inner.requests.fetch_add(1, Ordering::Relaxed)
        )
    }

    // A panic while a lock is held leaves the data consistent (every change is committed in
    // one step at the end), so a poisoned lock is used as it is.
    fn read_data(&self) -> RwLockReadGuard<'_, Data> {
        self.inner
            .data
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn read_store(&self) -> StoreGuard<'_> {
        StoreGuard(self.read_data())
    }

    fn write_data(&self) -> RwLockWriteGuard<'_, Data> {
        self.inner
            .data
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_sessions(&self) -> MutexGuard<'_, Sessions> {
        self.inner
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_faults(&self) -> MutexGuard<'_, FaultDice> {
        self.inner
            .faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_stats(&self) -> MutexGuard<'_, SimStats> {
        self.inner
            .stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A read lock on the rows, seen as the store.
struct StoreGuard<'a>(RwLockReadGuard<'a, Data>);

impl std::ops::Deref for StoreGuard<'_> {
    type Target = Store;

    fn deref(&self) -> &Store {
        &self.0.store
    }
}

/// `n` distinct row numbers below `count` (all of them if `n >= count`), in random order.
fn distinct_rows(rng: &mut SplitMix64, count: usize, n: usize) -> Vec<usize> {
    let n = n.min(count);
    if n * 2 <= count {
        let mut seen = HashSet::with_capacity(n);
        let mut rows = Vec::with_capacity(n);
        while rows.len() < n {
            let row = rng.index(count);
            if seen.insert(row) {
                rows.push(row);
            }
        }
        rows
    } else {
        let mut rows: Vec<usize> = (0..count).collect();
        for i in 0..n {
            let j = i + rng.index(count - i);
            rows.swap(i, j);
        }
        rows.truncate(n);
        rows
    }
}

/// A simulator serving on [`RunningSim::addr`]; stops when dropped or [`RunningSim::stop`]ped.
pub struct RunningSim {
    /// Where it listens (the real port when started on port 0).
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl fmt::Debug for RunningSim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunningSim")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl RunningSim {
    /// `http://{addr}`, the host to give a client.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting connections and waits until the open ones are done.
    pub async fn stop(mut self) -> std::io::Result<()> {
        self.stop.take();
        match self.task.take() {
            Some(task) => task.await.map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        // Dropping the sender is the stop signal; the server winds down in its task.
        self.stop.take();
    }
}
