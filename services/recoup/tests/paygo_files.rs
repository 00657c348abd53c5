//! recoup's PAYGo credit model end to end, as an operator runs it: the real binary on its
//! embedded Kafka, CSV files of 1,000 accounts × 90 days imported with `recoup import`, the
//! results read with `recoup accounts` and the Query API.
//!
//! One platform takes the whole file in date order. The other takes the same rows as two files
//! out of order (the later 45 days first) and is killed (SIGKILL) while it computes; started
//! again, it is sent the same files again, as the start's warning asks. Both end with the same
//! `*_calculated` values on every account-day, the same PAR on every basis and the same
//! discrepancies, and those values are the credit model's over the final series.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{Duration as Days, NaiveDate};
use common::bearer;
use common::binary::Up;
use paygo_snapshots::credit::{DayInputs, Outcome, compute};
use recoup_proto::v1;
use recoup_proto::v1::query_client::QueryClient;
use serde_json::Value;

const RECOUP: &str = env!("CARGO_BIN_EXE_recoup");
const ACCOUNTS: usize = 1_000;
const DAYS: i64 = 90;
/// The first day of the second file.
const SPLIT: i64 = 45;

fn day(n: i64) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 1, 1).unwrap() + Days::days(n)
}

fn date(n: i64) -> String {
    day(n).format("%Y-%m-%d").to_string()
}

/// A small deterministic generator (xorshift), so every run imports the same portfolio.
struct Draw(u64);

impl Draw {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const HEADER: &str = "snapshot_date,account_external_id,\
amt_contract_value_without_discounts_source,days_expected_loan_duration_source,\
num_expected_repayments_source,amt_payments_daily_source,amt_refunds_daily_source,\
days_delays_daily_source,days_arrears_consecutive_source,amt_remaining_installment_source,\
days_to_cutoff_source";

/// One account-day: its CSV line and the model's inputs it carries.
struct Row {
    line: String,
    inputs: DayInputs,
}

/// Account `a`'s day `n`. Most accounts get their plan on day 0 (every 10th a larger contract
/// from day 30 on), every 97th never gets one; payments come irregularly, now and then a refund
/// or a delay; the CRM reports its own arrears and remaining amount.
fn row(a: usize, n: i64, draw: &mut Draw) -> Row {
    let mut inputs = DayInputs {
        date: day(n),
        ..DayInputs::default()
    };
    let (mut contract, mut duration, mut repayments) =
        (String::new(), String::new(), String::new());
    let plan_day = n == 0 || (a.is_multiple_of(10) && n == 30);
    if !a.is_multiple_of(97) && plan_day {
        let value = 3_000.0 + 10.0 * a as f64 + if n == 30 { 600.0 } else { 0.0 };
        inputs.contract_value = Some(value);
        inputs.duration = Some(120.0);
        inputs.repayments = Some(4);
        (contract, duration, repayments) = (value.to_string(), "120".into(), "4".into());
    }
    let payment = match draw.below(10) {
        0..=5 => 0.0,
        6..=8 => (draw.below(20) * 5) as f64,
        _ => 250.0 + draw.below(100) as f64 * 0.5,
    };
    inputs.payment = Some(payment);
    let refund = if draw.below(40) == 0 { 12.5 } else { 0.0 };
    let delay = if draw.below(60) == 0 { 1.0 } else { 0.0 };
    let optional = |v: f64, into: &mut Option<f64>| {
        if v > 0.0 {
            *into = Some(v);
            v.to_string()
        } else {
            String::new()
        }
    };
    let refund = optional(refund, &mut inputs.refund);
    let delay = optional(delay, &mut inputs.delay_days);
    let crm_arrears = draw.below(50);
    let crm_remaining = 3_000 - (n * 20).min(3_000);
    let line = format!(
        "{},A{a:04},{contract},{duration},{repayments},{payment},{refund},{delay},{crm_arrears},{crm_remaining},0\n",
        date(n)
    );
    Row { line, inputs }
}

/// The portfolio: every account's series, and the three files (whole, early days, later days),
/// each in date order.
struct Portfolio {
    series: Vec<Vec<DayInputs>>,
    whole: PathBuf,
    early: PathBuf,
    late: PathBuf,
}

fn portfolio(dir: &Path) -> Portfolio {
    let mut series = vec![Vec::new(); ACCOUNTS];
    let (mut whole, mut early, mut late) = (String::new(), String::new(), String::new());
    for text in [&mut whole, &mut early, &mut late] {
        text.push_str(HEADER);
        text.push('\n');
    }
    let mut draw = Draw(0x9E37_79B9_7F4A_7C15);
    for n in 0..DAYS {
        for (a, days) in series.iter_mut().enumerate() {
            let Row { line, inputs } = row(a, n, &mut draw);
            whole.push_str(&line);
            let part = if n < SPLIT { &mut early } else { &mut late };
            part.push_str(&line);
            days.push(inputs);
        }
    }
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    Portfolio {
        series,
        whole: write("whole.csv", &whole),
        early: write("early.csv", &early),
        late: write("late.csv", &late),
    }
}

/// `recoup up` on free ports with its data in `data`, and what this test does with it.
struct Server(Up);

impl std::ops::Deref for Server {
    type Target = Up;

    fn deref(&self) -> &Up {
        &self.0
    }
}

impl Server {
    fn start(data: &Path) -> Self {
        Self(Up::start(data, &[]))
    }

    /// `recoup import snapshots FILE` against this server, as the first admin key.
    fn import(&self, file: &Path) -> Command {
        let mut command = Command::new(RECOUP);
        command
            .args([
                "import",
                "snapshots",
                "--origin",
                "e2e",
                "--grpc-addr",
                &self.grpc,
            ])
            .arg("--data-dir")
            .arg(&self.data)
            .arg(file)
            .env_remove("RECOUP_TENANT")
            .env_remove("RECOUP_API_KEY")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    }

    fn imported(&self, file: &Path) {
        let status = self.import(file).status().unwrap();
        assert!(status.success(), "importing {}: {status}", file.display());
    }

    /// `recoup accounts ARGS --json`, parsed.
    fn accounts(&self, args: &[&str]) -> Value {
        let out = self.accounts_cli(args, true);
        serde_json::from_slice(&out).unwrap()
    }

    fn accounts_cli(&self, args: &[&str], json: bool) -> Vec<u8> {
        let out = Command::new(RECOUP)
            .arg("accounts")
            .args(args)
            .args(json.then_some("--json"))
            .args(["--server", &format!("http://{}", self.grpc)])
            .arg("--data-dir")
            .arg(&self.data)
            .env_remove("RECOUP_TENANT")
            .env_remove("RECOUP_API_KEY")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "recoup accounts {args:?}: {err}");
        out.stdout
    }

    /// One series of `GET /metrics` (0 when absent).
    fn metric(&self, name: &str) -> f64 {
        use std::io::{Read, Write};
        let Ok(mut tcp) = std::net::TcpStream::connect(&self.grpc) else {
            return 0.0;
        };
        let request = "GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
        tcp.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        let _ = tcp.read_to_string(&mut answer);
        answer
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    fn stop(self) {
        assert!(self.0.stop().success(), "a clean shutdown");
    }

    fn kill(self) {
        self.0.kill();
    }
}

fn uid(a: usize) -> String {
    format!("default_e2e_A{a:04}")
}

/// Every account-day as the read model shows it, without the columns that describe an import.
async fn snapshots(server: &Server) -> BTreeMap<(String, String), v1::AccountSnapshot> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut query = QueryClient::new(channel);
    let key = server.key();
    let mut all = BTreeMap::new();
    for a in 0..ACCOUNTS {
        let r = v1::ListAccountSnapshotsRequest {
            account_uid: uid(a),
            page_size: 1000,
            ..Default::default()
        };
        let page = query
            .list_account_snapshots(bearer(r, &key))
            .await
            .unwrap()
            .into_inner();
        assert!(page.next_page_token.is_empty());
        for s in page.snapshots {
            let shown = v1::AccountSnapshot {
                source_id: Default::default(),
                created_at: Default::default(),
                updated_at: Default::default(),
                ..s
            };
            all.insert((uid(a), shown.snapshot_date.clone().unwrap()), shown);
        }
    }
    all
}

/// PAR on the days and bases the comparison looks at.
fn par_views(server: &Server) -> Vec<Value> {
    let mut views = Vec::new();
    for n in [0, SPLIT - 1, SPLIT, DAYS - 1] {
        for basis in ["source", "forgiving", "non-forgiving"] {
            views.push(server.accounts(&["par", "--date", &date(n), "--basis", basis]));
        }
    }
    views
}

/// `recoup accounts discrepancies` of the CRM's arrears on the last day, up to `limit`.
fn discrepancy_args(limit: &str) -> Vec<String> {
    let last = date(DAYS - 1);
    [
        "discrepancies",
        "--date",
        &last,
        "--field",
        "days_arrears_consecutive",
        "--limit",
        limit,
    ]
    .map(str::to_owned)
    .to_vec()
}

fn discrepancies(server: &Server) -> Value {
    let args = discrepancy_args("0");
    server.accounts(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Waits until `server`'s PAR views are `want` (the computation has caught up).
fn caught_up(server: &Server, want: &[Value], limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if par_views(server) == want {
            return true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_files_out_of_order_and_a_kill_give_what_one_file_in_order_gives() {
    let dir = tempfile::tempdir().unwrap();
    let files = portfolio(dir.path());

    // In order: the whole file, computed as the days arrive.
    let ordered = Server::start(&dir.path().join("ordered"));
    ordered.imported(&files.whole);
    let rows = (ACCOUNTS as f64) * DAYS as f64;
    let consumed = "recoup_events_consumed_total{topic=\"recoup.paygo-snapshots.v1\"}";
    let start = Instant::now();
    while ordered.metric(consumed) < rows && start.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(200));
    }
    // Settled when two reads a second apart agree.
    let mut want = par_views(&ordered);
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let again = par_views(&ordered);
        if again == want {
            break;
        }
        want = again;
    }
    check_against_the_model(&files.series, &ordered, &want).await;

    // Out of order: the later days first, then the earlier ones; killed while computing.
    let data = dir.path().join("shuffled");
    let shuffled = Server::start(&data);
    shuffled.imported(&files.late);
    let mut early = shuffled.import(&files.early).spawn().unwrap();
    let start = Instant::now();
    let at_kill = loop {
        let n = shuffled.metric(consumed);
        if n >= SPLIT as f64 * ACCOUNTS as f64 + 5_000.0 {
            break n;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(10));
    };
    shuffled.kill();
    let _ = early.wait();
    eprintln!(
        "killed after {at_kill} snapshots taken, {:?} into the second file",
        start.elapsed()
    );
    assert!(
        at_kill < rows - 5_000.0,
        "killed while computing: {at_kill} of {rows} snapshots taken"
    );

    // Started again: sent the same files again, it imports what the dead broker lost.
    let shuffled = Server::start(&data);
    shuffled.imported(&files.late);
    shuffled.imported(&files.early);
    assert!(
        caught_up(&shuffled, &want, Duration::from_secs(180)),
        "the out-of-order platform reaches the same PAR"
    );
    assert_eq!(discrepancies(&shuffled), discrepancies(&ordered));
    let (a, b) = (snapshots(&ordered).await, snapshots(&shuffled).await);
    assert_eq!(a.len(), ACCOUNTS * DAYS as usize);
    assert_eq!(b.len(), a.len());
    let differ: Vec<_> = a
        .iter()
        .filter(|(k, s)| b.get(*k) != Some(*s))
        .map(|(k, _)| k)
        .collect();
    assert!(
        differ.is_empty(),
        "{} account-days differ, e.g. {:?}",
        differ.len(),
        differ.first()
    );

    // The tables a person reads.
    let table = String::from_utf8(shuffled.accounts_cli(
        &["par", "--date", &date(DAYS - 1), "--basis", "forgiving"],
        false,
    ))
    .unwrap();
    assert!(
        table.starts_with(&format!("PAR on {} (forgiving basis)\n", date(DAYS - 1))),
        "{table}"
    );
    assert!(table.contains("\nunknown "), "{table}");
    assert!(table.contains("PAR30 "), "{table}");
    let listed = discrepancies(&shuffled)["discrepancies"]
        .as_array()
        .unwrap()
        .len();
    let args = discrepancy_args("5");
    let table = shuffled.accounts_cli(&args.iter().map(String::as_str).collect::<Vec<_>>(), false);
    let table = String::from_utf8(table).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("account_uid") && lines[0].ends_with("difference"),
        "{table}"
    );
    assert_eq!(lines.len(), 1 + 5 + 1, "{table}");
    assert!(listed > 5, "{listed}");
    assert_eq!(
        lines[6],
        "5 accounts disagree (more on the server: --limit 0 prints every one)"
    );
    // A refusal names its gRPC code, and the command fails.
    let refused = Command::new(RECOUP)
        .args(["accounts", "par", "--date", "2026-13-01"])
        .args(["--server", &format!("http://{}", shuffled.grpc)])
        .arg("--data-dir")
        .arg(&shuffled.data)
        .env_remove("RECOUP_API_KEY")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("InvalidArgument") && err.contains("2026-13-01"),
        "{err}"
    );
    ordered.stop();
    shuffled.stop();
}

/// What the in-order platform shows is the credit model's over each account's series: the
/// arrears and remaining amount of every account-day, PAR on the last day on both clocks, and
/// the accounts whose CRM arrears differ from recoup's.
async fn check_against_the_model(series: &[Vec<DayInputs>], server: &Server, par: &[Value]) {
    let shown = snapshots(server).await;
    let mut buckets = [[0u64; 8]; 2];
    let mut disagree = Vec::new();
    let mut report = String::new();
    for (a, days) in series.iter().enumerate() {
        let computed = compute(days);
        for (date, outcome) in &computed {
            let s = &shown[&(uid(a), date.format("%Y-%m-%d").to_string())];
            let got = (
                s.days_arrears_consecutive_nf_calculated,
                s.days_arrears_consecutive_f_calculated,
                s.amt_remaining_installment_calculated,
            );
            let want = match outcome {
                Outcome::Metrics(m) => (
                    Some(m.nf.consecutive),
                    Some(m.f.consecutive),
                    Some(m.remaining),
                ),
                _ => (None, None, None),
            };
            if got != want {
                writeln!(report, "{} {date}: {got:?} != {want:?}", uid(a)).unwrap();
            }
        }
        let (_, last) = computed.last().unwrap();
        let crm = shown[&(uid(a), date(DAYS - 1))].days_arrears_consecutive_source;
        for (clock, basis) in buckets.iter_mut().enumerate() {
            let days = last.metrics().map(|m| {
                if clock == 0 {
                    m.f.consecutive
                } else {
                    m.nf.consecutive
                }
            });
            basis[usize::from(paygo_snapshots::par::par_bucket(days))] += 1;
        }
        if let Some(m) = last.metrics()
            && Some(m.nf.consecutive) != crm
        {
            disagree.push(uid(a));
        }
    }
    assert!(report.is_empty(), "{report}");
    // par[] holds, per day, source, forgiving, non-forgiving: the last day's are the last three.
    for (clock, view) in par[par.len() - 2..].iter().enumerate() {
        let got: Vec<u64> = view["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["accounts"].as_u64().unwrap())
            .collect();
        assert_eq!(got, buckets[clock], "{view}");
        assert_eq!(view["accounts"].as_u64(), Some(ACCOUNTS as u64));
    }
    assert!(
        buckets[1][7] > 0,
        "accounts without a plan count as unknown"
    );
    assert!(
        buckets[1][1..7].iter().sum::<u64>() > 0,
        "some accounts are in arrears"
    );
    let listed: Vec<String> = discrepancies(server)["discrepancies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["account_uid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, disagree);
}
