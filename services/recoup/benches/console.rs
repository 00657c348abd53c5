//! The console's pages for a tenant of 100,000 cases and 1,000,000 account-days, through
//! `recoup up`'s platform on loopback with API keys on, as a signed-in browser asks for them
//! over HTTP/1.1: how long each page takes to answer, beside a static asset of the same server
//! in the same run (the cost of HTTP and the session check alone). Rounds are interleaved: each
//! round asks every page in turn, so a noisy neighbour shows as spread, not as one slow page.
//!
//! The goal (issue #17): every page under 100 ms. `cargo bench -p recoup --bench console`
//! (BENCH_CASES, BENCH_ACCOUNTS, BENCH_DAYS, BENCH_ROUNDS, BENCH_CALLS).
#![allow(clippy::unwrap_used)]

// The allocator the recoup binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod common;

use std::time::{Duration, Instant};

use chrono::NaiveDate;
use common::{content, env_or, ms, percentile, platform, request};
use recoup_access::Role;
use recoup_proto::v1;
use recoup_proto::v1::debt_collection_cases_client::DebtCollectionCasesClient;
use recoup_proto::v1::query_client::QueryClient;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;

const GOAL: Duration = Duration::from_millis(100);

/// Creates `n` cases from 16 clients; the id of the first.
async fn seed_cases(channel: &Channel, key: &Option<AsciiMetadataValue>, n: usize) -> String {
    let clients = 16;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (channel, key) = (channel.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let mut cases = DebtCollectionCasesClient::new(channel);
            let mut first = None;
            for i in (c..n).step_by(clients) {
                let create = v1::CreateCaseRequest {
                    content: Some(content("bench", i)),
                };
                let case = cases.create_case(request(create, &key)).await.unwrap();
                if i == 0 {
                    first = case.into_inner().case.map(|c| c.id);
                }
            }
            first
        }));
    }
    let mut first = None;
    for task in tasks {
        first = first.or(task.await.unwrap());
    }
    first.unwrap()
}

/// `accounts` accounts over `days` days from 2025-01-01, drifting into arrears, as CSV.
fn snapshots_csv(accounts: usize, days: usize) -> Vec<u8> {
    let start = NaiveDate::from_ymd_opt(2025, 1, 1).unwrap();
    let mut csv = String::from(
        "snapshot_date,account_external_id,days_arrears_consecutive_source,\
         amt_remaining_installment_source\n",
    );
    for day in 0..days {
        let date = start + chrono::Duration::days(day as i64);
        for a in 0..accounts {
            let arrears = if a % 4 == 0 { day / 2 } else { (day + a) % 9 };
            let remaining = (1000 + a * 3).saturating_sub(day);
            csv.push_str(&format!("{date},A{a},{arrears},{remaining}\n"));
        }
    }
    csv.into_bytes()
}

/// A browser signed in with `key`: its session cookie.
async fn sign_in(http: &reqwest::Client, base: &str, key: &str) -> String {
    let form = http.get(format!("{base}/sign-in")).send().await.unwrap();
    let cookie = form.headers()["set-cookie"].to_str().unwrap().to_owned();
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let body = form.text().await.unwrap();
    let marker = "name=\"form_token\" value=\"";
    let at = body.find(marker).unwrap() + marker.len();
    let token = &body[at..at + body[at..].find('"').unwrap()];
    let signed = http
        .post(format!("{base}/sign-in"))
        .header("cookie", cookie)
        .form(&[("credential", key), ("form_token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status().as_u16(), 303);
    let session = signed
        .headers()
        .get_all("set-cookie")
        .iter()
        .next()
        .unwrap();
    session
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let cases = env_or("BENCH_CASES", 100_000);
    let accounts = env_or("BENCH_ACCOUNTS", 2_740);
    let days = env_or("BENCH_DAYS", 365);
    let rounds = bench_rounds::rounds();
    let calls = env_or("BENCH_CALLS", 20);
    let dir = tempfile::TempDir::new().unwrap();
    // The seeding is a burst of one client: no rate limit in the way.
    let (p, key, channel) = platform(dir.path(), Role::Admin, |config| {
        config.importer.rate_limit_per_minute = std::num::NonZeroU32::new(1_000_000).unwrap();
    })
    .await;
    let bearer = Some(format!("Bearer {key}").parse().unwrap());
    let base = format!("http://{}", p.http_addr.unwrap());
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let seeding = Instant::now();
    let case_id = seed_cases(&channel, &bearer, cases).await;
    let csv = snapshots_csv(accounts, days);
    let imported = http
        .post(format!(
            "{base}/v1/paygo_snapshots_ts?data_origin=bench&file_name=year.csv"
        ))
        .bearer_auth(&key)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(imported.status().as_u16(), 200);
    let import: serde_json::Value = imported.json().await.unwrap();
    let import_id = import["import_id"].as_str().unwrap().to_owned();
    assert_eq!(import["rejected"], 0, "{import}");
    assert_eq!(import["accepted"], accounts * days, "{import}");
    // Until the read models hold every case and every account's last day.
    let mut query = QueryClient::new(channel.clone());
    let last_day = (NaiveDate::from_ymd_opt(2025, 1, 1).unwrap()
        + chrono::Duration::days(days as i64 - 1))
    .to_string();
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        assert!(
            Instant::now() < deadline,
            "the read models did not catch up in 30 minutes"
        );
        let stats = query
            .case_stats(request(v1::CaseStatsRequest::default(), &bearer))
            .await
            .unwrap()
            .into_inner();
        let listed: u64 = stats.states.iter().map(|s| s.count).sum();
        let par = query
            .portfolio_par(request(
                v1::PortfolioParRequest {
                    snapshot_date: last_day.clone(),
                    ..Default::default()
                },
                &bearer,
            ))
            .await
            .unwrap()
            .into_inner();
        if listed as usize >= cases && par.accounts as usize >= accounts {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "seeded {cases} cases and {} account-days in {:.0} s",
        accounts * days,
        seeding.elapsed().as_secs_f64()
    );

    let cookie = sign_in(&http, &base, &key).await;
    let from =
        NaiveDate::parse_from_str(&last_day, "%Y-%m-%d").unwrap() - chrono::Duration::days(364);
    // A prefix that about a hundred references share: a case in the middle, less two digits.
    let search = format!("BENCH-{:08}", cases / 2);
    let search = &search[..search.len() - 2];
    // Each page with a text its answer must hold, so that a fast error page cannot pass.
    let pages: Vec<(&str, String, String)> = vec![
        (
            "static asset (baseline)",
            "/assets/console.css".into(),
            "{".into(),
        ),
        ("cases: list", "/cases".into(), "BENCH-".into()),
        (
            "cases: by state",
            "/cases?state=REVIEWING".into(),
            "BENCH-".into(),
        ),
        (
            "cases: search by reference",
            format!("/cases?q={search}"),
            format!("{search}00"),
        ),
        (
            "case page with its trail",
            format!("/cases/{case_id}"),
            "BENCH-00000000".into(),
        ),
        ("imports", "/imports".into(), import_id.clone()),
        (
            "import report",
            format!("/imports/{import_id}"),
            (accounts * days).to_string(),
        ),
        (
            "portfolio: 365 days charted",
            format!("/portfolio?from={from}&to={last_day}"),
            "<svg".into(),
        ),
        (
            "account: 365 days charted",
            format!("/accounts?uid=default_bench_A17&from={from}&to={last_day}"),
            "<svg".into(),
        ),
        ("collections", "/collections".into(), "Funnel".into()),
        ("health", "/health".into(), "Kafka".into()),
    ];
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); pages.len()];
    let names: Vec<&str> = pages.iter().map(|(name, ..)| *name).collect();
    let mut round_medians = bench_rounds::Rounds::new("ms (round's median)", &names);
    for _ in 0..rounds {
        for (i, (name, path, holds)) in pages.iter().enumerate() {
            let mut round = Vec::with_capacity(calls);
            for _ in 0..calls {
                let started = Instant::now();
                let answer = http
                    .get(format!("{base}{path}"))
                    .header("cookie", &cookie)
                    .send()
                    .await
                    .unwrap();
                let status = answer.status().as_u16();
                let body = answer.bytes().await.unwrap();
                round.push(started.elapsed());
                let body = String::from_utf8_lossy(&body);
                assert_eq!(status, 200, "{name}: {body}");
                assert!(
                    body.contains(holds.as_str()),
                    "{name} lacks {holds}: {body}"
                );
            }
            round.sort();
            round_medians.record(i, ms(percentile(&round, 0.5)));
            times[i].extend(round);
        }
    }
    println!("\n{}", round_medians.report());
    for t in &mut times {
        t.sort();
    }
    let baseline = percentile(&times[0], 0.5);
    println!(
        "{:<30} {:>10} {:>10} {:>10} {:>8}",
        "page", "median ms", "p90 ms", "max ms", "ratio"
    );
    let mut slowest = Duration::ZERO;
    for ((name, _, _), t) in pages.iter().zip(&times) {
        let median = percentile(t, 0.5);
        if !name.contains("baseline") {
            slowest = slowest.max(median);
        }
        println!(
            "{name:<30} {:>10.2} {:>10.2} {:>10.2} {:>8.1}",
            ms(median),
            ms(percentile(t, 0.9)),
            ms(*t.last().unwrap()),
            median.as_secs_f64() / baseline.as_secs_f64()
        );
    }
    println!(
        "{rounds} rounds of {calls} calls per page, interleaved; the slowest page's median is \
         {:.1} ms: the goal (< {} ms) is {}",
        ms(slowest),
        GOAL.as_millis(),
        if slowest < GOAL { "met" } else { "not met" }
    );
    p.shutdown().await.unwrap();
}
