//! The export API simulator over real HTTP (loopback), as a puller sees it.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use export_sim::{FaultPlan, RunningSim, SimConfig, Simulator};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A logged-in client of one running simulator.
struct Client {
    http: reqwest::Client,
    base: String,
    lender: String,
    lender_public_id: String,
    token: String,
}

impl Client {
    async fn login(running: &RunningSim, config: &SimConfig) -> Client {
        let http = reqwest::Client::new();
        let base = running.base_url();
        let answer: Value = http
            .post(format!("{base}/admin/auth/{}/login", config.lender))
            .json(&json!({"email": config.email, "password": config.password}))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        Client {
            http,
            base,
            lender: config.lender.clone(),
            lender_public_id: answer["lenderPublicId"].as_str().unwrap().to_owned(),
            token: answer["token"].as_str().unwrap().to_owned(),
        }
    }

    fn export_url(&self, lender_public_id: &str, dataset: &str) -> String {
        format!(
            "{}/admin/v3/lenders/{lender_public_id}/exports/{dataset}",
            self.base
        )
    }

    /// GET S3/D16 with `query`: the status and the JSON body.
    async fn get(&self, query: &[(&str, &str)]) -> (StatusCode, Value) {
        let response = self
            .http
            .get(self.export_url(&self.lender_public_id, "S3/D16"))
            .bearer_auth(&self.token)
            .query(query)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    /// A page that must succeed: its rows and next cursor.
    async fn page(&self, query: &[(&str, &str)]) -> (Vec<Value>, Option<String>) {
        let (status, body) = self.get(query).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        page_of(&body)
    }

    /// Every row of one chain, `query` on every request, a cursor from the second on.
    async fn chain(&self, query: &[(&str, &str)]) -> Vec<Value> {
        let mut rows = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut request: Vec<(&str, &str)> = query.to_vec();
            if let Some(cursor) = &cursor {
                request.push(("cursor", cursor));
            }
            let (page, next) = self.page(&request).await;
            rows.extend(page);
            match next {
                Some(next) => cursor = Some(next),
                None => return rows,
            }
        }
    }
}

fn page_of(body: &Value) -> (Vec<Value>, Option<String>) {
    assert_eq!(body["code"], 200);
    assert_eq!(body["message"], "OK");
    assert!(body["errors"].is_null());
    let rows = body["body"]["rows"].as_array().unwrap().clone();
    let next = body["body"]["pagination"]["nextCursor"]
        .as_str()
        .map(str::to_owned);
    (rows, next)
}

fn config(rows: usize) -> SimConfig {
    SimConfig {
        rows,
        lender: "acme".to_owned(),
        lender_public_id: "lender-acme-0001".to_owned(),
        email: "ops@acme.example".to_owned(),
        password: "s3cret".to_owned(),
        ..SimConfig::default()
    }
}

async fn serve(config: SimConfig) -> (Simulator, RunningSim, Client) {
    let sim = Simulator::new(config.clone());
    let running = sim.start(([127, 0, 0, 1], 0).into()).await.unwrap();
    let client = Client::login(&running, &config).await;
    (sim, running, client)
}

/// The row key `(public_id, created_at)`, under either name of `public_id`.
fn key(row: &Value) -> (String, String) {
    let id = row
        .get("public_id")
        .or_else(|| row.get("case_public_id"))
        .and_then(Value::as_str)
        .unwrap();
    (
        id.to_owned(),
        row["created_at"].as_str().unwrap().to_owned(),
    )
}

fn updated_at(row: &Value) -> &str {
    row["updated_at"].as_str().unwrap()
}

fn assert_unique_keys(rows: &[Value]) {
    let mut seen = HashSet::new();
    for row in rows {
        assert!(seen.insert(key(row)), "row key {:?} comes twice", key(row));
    }
}

fn assert_error(status: StatusCode, body: &Value, want: StatusCode, message: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["success"], false, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains(message),
        "{body} should say {message:?}"
    );
    assert!(body["requestId"].as_str().is_some_and(|id| !id.is_empty()));
}

async fn post(http: &reqwest::Client, url: String, body: Value) -> (StatusCode, Value) {
    let response = http.post(url).json(&body).send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

#[tokio::test]
async fn login_answers_tokens_and_refuses_wrong_credentials_or_lender() {
    let config = config(10);
    let (sim, running, client) = serve(config.clone()).await;
    let login = |lender: &str| format!("{}/admin/auth/{lender}/login", client.base);

    let (status, body) = post(
        &client.http,
        login("acme"),
        json!({"email": config.email, "password": config.password}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["lenderPublicId"], "lender-acme-0001");
    assert!(body["token"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(body["refreshToken"].as_str().is_some_and(|t| !t.is_empty()));

    let (status, body) = post(
        &client.http,
        login("acme"),
        json!({"email": config.email, "password": "wrong"}),
    )
    .await;
    assert_error(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "Invalid email or password",
    );

    let (status, body) = post(
        &client.http,
        login("globex"),
        json!({"email": config.email, "password": config.password}),
    )
    .await;
    assert_error(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "Lender not found or inactive",
    );

    let stats = sim.stats();
    assert_eq!(stats.logins, 2, "the client's login and the one above");
    assert_eq!(stats.requests["login"], 4);
    assert_eq!(stats.statuses[&401], 2);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_refreshed_token_works_and_an_unknown_refresh_token_is_refused() {
    let config = config(10);
    let (sim, _running, mut client) = serve(config.clone()).await;
    let (_, answer) = post(
        &client.http,
        format!("{}/admin/auth/acme/login", client.base),
        json!({"email": config.email, "password": config.password}),
    )
    .await;
    let refresh_url = format!("{}/admin/auth/{}/refresh-token", client.base, client.lender);

    sim.expire_tokens();
    let (status, body) = client.get(&[]).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "Token expired");

    let (status, body) = post(
        &client.http,
        refresh_url.clone(),
        json!({"refreshToken": answer["refreshToken"]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    client.token = body["token"].as_str().unwrap().to_owned();
    let (rows, _) = client.page(&[]).await;
    assert_eq!(rows.len(), 10);

    let (status, body) = post(
        &client.http,
        refresh_url,
        json!({"refreshToken": "rt_not-issued"}),
    )
    .await;
    assert_error(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "Invalid refresh token",
    );
    assert_eq!(sim.stats().refreshes, 1);
}

#[tokio::test]
async fn export_refuses_missing_invalid_and_expired_tokens() {
    let (sim, _running, mut client) = serve(config(10)).await;
    let url = client.export_url(&client.lender_public_id, "S3/D16");

    let response = client.http.get(&url).send().await.unwrap();
    let status = response.status();
    assert_error(
        status,
        &response.json().await.unwrap(),
        StatusCode::UNAUTHORIZED,
        "Missing bearer token",
    );

    let valid = client.token.clone();
    client.token = "at_forged".to_owned();
    let (status, body) = client.get(&[]).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "Invalid token");

    client.token = valid;
    assert_eq!(client.get(&[]).await.0, StatusCode::OK);
    sim.expire_tokens();
    let (status, body) = client.get(&[]).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "Token expired");
}

#[tokio::test]
async fn tokens_expire_after_their_ttl() {
    let config = SimConfig {
        token_ttl: Duration::ZERO,
        ..config(10)
    };
    let (_sim, _running, client) = serve(config).await;
    let (status, body) = client.get(&[]).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "Token expired");
}

#[tokio::test]
async fn another_lender_is_403_and_another_dataset_404() {
    let (_sim, _running, client) = serve(config(10)).await;
    let get = |url: String| {
        let request = client.http.get(url).bearer_auth(&client.token);
        async move {
            let response = request.send().await.unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        }
    };

    let (status, body) = get(client.export_url("lender-other", "S3/D16")).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "lender");

    for dataset in ["S3/D02", "S1/D16", "S3/d16"] {
        let (status, body) = get(client.export_url(&client.lender_public_id, dataset)).await;
        assert_error(status, &body, StatusCode::NOT_FOUND, "Dataset not found");
    }
}

#[tokio::test]
async fn malformed_query_values_are_400() {
    let (_sim, _running, client) = serve(config(10)).await;
    for query in [
        [("limit", "ten")],
        [("limit", "2.5")],
        [("sort", "sideways")],
        [("since", "yesterday")],
        [("until", "31/05/2026")],
        [("includeTotal", "maybe")],
    ] {
        let (status, body) = client.get(&query).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, query[0].0);
    }
}

#[tokio::test]
async fn limit_is_clamped_to_1_through_1000_and_defaults_to_500() {
    let (_sim, _running, client) = serve(config(1_500)).await;
    for (limit, rows) in [
        (Some("0"), 1),
        (Some("-7"), 1),
        (Some("1"), 1),
        (Some("999"), 999),
        (Some("5000"), 1000),
        (Some("99999999999999999999999"), 1000),
        (None, 500),
    ] {
        let query: Vec<(&str, &str)> = limit.map(|l| ("limit", l)).into_iter().collect();
        let (page, next) = client.page(&query).await;
        assert_eq!(page.len(), rows, "limit {limit:?}");
        assert!(next.is_some());
    }
}

#[tokio::test]
async fn a_full_chain_returns_every_row_once_and_equals_latest() {
    let (sim, _running, client) = serve(config(5_000)).await;
    let mut rows = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = Vec::new();
    loop {
        let mut query = vec![("limit", "1000")];
        if let Some(cursor) = &cursor {
            query.push(("cursor", cursor));
        }
        let (page, next) = client.page(&query).await;
        pages.push(page.len());
        rows.extend(page);
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(
        pages, [1000; 5],
        "a direct dataset: full pages, the last ends the chain"
    );
    assert_unique_keys(&rows);
    assert_eq!(rows, sim.latest());
    let mut sorted = rows.clone();
    sorted.sort_by(|a, b| (updated_at(a), key(a)).cmp(&(updated_at(b), key(b))));
    assert_eq!(rows, sorted, "ordered by updated_at, then row key");

    let stats = sim.stats();
    assert_eq!(stats.rows_served, 5_000);
    assert_eq!(stats.pages_served, 5);
    assert_eq!(stats.requests["export"], 5);
}

#[tokio::test]
async fn a_chain_reads_its_snapshot_while_rows_change_and_the_next_chain_finds_the_changes() {
    let (sim, _running, client) = serve(config(2_000)).await;
    let before = sim.latest();

    let (mut rows, mut cursor) = client.page(&[("limit", "300")]).await;
    let mut round = 0;
    while let Some(next) = cursor {
        // Rows change between every two pages, some of them ones already served.
        assert_eq!(sim.mutate(150), 150);
        sim.add_rows(20);
        // A client may lower its limit mid-chain.
        let limit = if round % 2 == 0 { "300" } else { "170" };
        let (page, following) = client.page(&[("limit", limit), ("cursor", &next)]).await;
        rows.extend(page);
        cursor = following;
        round += 1;
    }
    assert_unique_keys(&rows);
    assert_eq!(
        rows, before,
        "the chain serves the rows as of its first page"
    );

    let now = sim.latest();
    assert_eq!(now.len(), 2_000 + 20 * round);
    let max_seen = rows.iter().map(updated_at).max().unwrap().to_owned();
    let again = client
        .chain(&[("since", &max_seen), ("limit", "1000")])
        .await;
    let expected: Vec<Value> = now
        .iter()
        .filter(|row| updated_at(row) >= max_seen.as_str())
        .cloned()
        .collect();
    assert_eq!(again, expected);
    let changed: BTreeSet<_> = now
        .iter()
        .filter(|row| !before.contains(row))
        .map(key)
        .collect();
    assert!(changed.len() > 500);
    let again_keys: BTreeSet<_> = again.iter().map(key).collect();
    assert!(
        changed.is_subset(&again_keys),
        "every changed or new row comes again"
    );
}

#[tokio::test]
async fn the_same_cursor_gives_the_same_page() {
    let (sim, _running, client) = serve(config(1_000)).await;
    let (_, cursor) = client.page(&[("limit", "100")]).await;
    let cursor = cursor.unwrap();
    let first = client.get(&[("limit", "100"), ("cursor", &cursor)]).await;
    sim.mutate(500);
    sim.add_rows(50);
    let second = client.get(&[("limit", "100"), ("cursor", &cursor)]).await;
    assert_eq!(first.0, StatusCode::OK);
    assert_eq!(first, second);
}

#[tokio::test]
async fn a_forged_or_cut_cursor_is_500_invalid_cursor() {
    let (_sim, _running, client) = serve(config(1_000)).await;
    let (_, cursor) = client.page(&[("limit", "100")]).await;
    let cursor = cursor.unwrap();
    let mut flipped = cursor.clone().into_bytes();
    flipped[3] = if flipped[3] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    for forged in [
        flipped.as_str(),
        &cursor[..cursor.len() - 2],
        "bm90IGEgY3Vyc29y",
        "%%%",
        "",
    ] {
        let (status, body) = client.get(&[("limit", "100"), ("cursor", forged)]).await;
        assert_error(
            status,
            &body,
            StatusCode::INTERNAL_SERVER_ERROR,
            "Invalid cursor",
        );
    }
    // A cursor of another simulator (another secret) is no better.
    let (_other_sim, _other_running, other) = serve(config(1_000)).await;
    let (status, body) = other.get(&[("limit", "100"), ("cursor", &cursor)]).await;
    assert_error(
        status,
        &body,
        StatusCode::INTERNAL_SERVER_ERROR,
        "Invalid cursor",
    );
}

#[tokio::test]
async fn changing_the_filter_mid_chain_is_400() {
    let (_sim, _running, client) = serve(config(1_000)).await;
    let since = "2026-05-01T02:00:00.000Z";
    let (_, cursor) = client.page(&[("since", since), ("limit", "10")]).await;
    let cursor = cursor.unwrap();
    let (status, _) = client
        .get(&[("since", since), ("limit", "10"), ("cursor", &cursor)])
        .await;
    assert_eq!(status, StatusCode::OK, "the same filter again is fine");
    let (status, body) = client
        .get(&[("since", "2026-05-01T03:00:00Z"), ("cursor", &cursor)])
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "since");
    let (status, body) = client.get(&[("sort", "desc"), ("cursor", &cursor)]).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "sort");
}

#[tokio::test]
async fn since_is_inclusive_until_exclusive_and_desc_reverses() {
    let (sim, _running, client) = serve(config(3_000)).await;
    let latest = sim.latest();
    // Bounds on the instants of real rows: ties at both ends.
    let since = updated_at(&latest[700]).to_owned();
    let until = updated_at(&latest[2_100]).to_owned();
    let expected: Vec<Value> = latest
        .iter()
        .filter(|row| updated_at(row) >= since.as_str() && updated_at(row) < until.as_str())
        .cloned()
        .collect();
    assert!(expected.len() > 1_000);

    let asc = client
        .chain(&[("since", &since), ("until", &until), ("limit", "97")])
        .await;
    assert_eq!(asc, expected);
    let desc = client
        .chain(&[
            ("since", &since),
            ("until", &until),
            ("limit", "97"),
            ("sort", "desc"),
        ])
        .await;
    let mut reversed = expected.clone();
    reversed.reverse();
    assert_eq!(desc, reversed);

    let everything_desc = client.chain(&[("sort", "desc"), ("limit", "1000")]).await;
    assert_eq!(everything_desc.len(), 3_000);
    assert_eq!(everything_desc.first(), latest.last());
}

#[tokio::test]
async fn include_total_counts_the_chain_as_of_its_snapshot() {
    let (sim, _running, client) = serve(config(1_200)).await;
    let latest = sim.latest();
    let since = updated_at(&latest[200]).to_owned();
    let expected = latest
        .iter()
        .filter(|row| updated_at(row) >= since.as_str())
        .count();

    let (_, body) = client
        .get(&[
            ("since", &since),
            ("limit", "400"),
            ("includeTotal", "true"),
        ])
        .await;
    assert_eq!(body["body"]["pagination"]["total"], expected);
    let cursor = body["body"]["pagination"]["nextCursor"].as_str().unwrap();
    sim.add_rows(30);
    sim.mutate(100);
    let (_, body) = client
        .get(&[
            ("limit", "400"),
            ("cursor", cursor),
            ("includeTotal", "true"),
        ])
        .await;
    assert_eq!(body["body"]["pagination"]["total"], expected);
    let (_, body) = client.get(&[("limit", "400"), ("cursor", cursor)]).await;
    assert!(body["body"]["pagination"].get("total").is_none());

    let (_, body) = client.get(&[("includeTotal", "true")]).await;
    assert_eq!(body["body"]["pagination"]["total"], 1_230);
}

#[tokio::test]
async fn rows_carry_the_live_quirks_and_are_varied() {
    let sim = Simulator::new(config(20_000));
    let rows = sim.latest();
    assert_eq!(rows.len(), 20_000);
    assert_unique_keys(&rows);

    let legacy = rows
        .iter()
        .filter(|r| r.get("case_public_id").is_some())
        .count();
    assert!(
        (600..1_400).contains(&legacy),
        "about 5% legacy ids: {legacy}"
    );
    for row in &rows {
        let row = row.as_object().unwrap();
        assert_eq!(row.len(), 16);
        assert!(row.contains_key("public_id") != row.contains_key("case_public_id"));
        assert!(!row.contains_key("dpd_due_date"));
        let due = row["dpd_due_date_timestamp"].as_str().unwrap();
        assert!(
            chrono::NaiveDate::parse_from_str(due, "%d/%m/%Y").is_ok(),
            "{due}"
        );
        let last = row["last_due_date"].as_str().unwrap();
        assert!(
            chrono::NaiveDate::parse_from_str(last, "%d/%m/%Y").is_ok(),
            "{last}"
        );
        assert!(row["amount"].is_i64());
        assert!(row["hasReachedRpcOrBeyond"].is_boolean());
        assert!(row["do_not_contact"].is_boolean());
        for field in [
            "created_at",
            "updated_at",
            "ptp_date_human",
            "ptp_date_ai",
            "broken_ptp_date_human",
            "broken_ptp_date_ai",
        ] {
            if let Some(at) = row[field].as_str() {
                assert_eq!(at.len(), 24, "{field} {at}: ISO-8601 with milliseconds");
                assert!(at.ends_with('Z'));
                assert!(chrono::DateTime::parse_from_rfc3339(at).is_ok());
            }
        }
        assert!(row["created_at"].as_str() <= row["updated_at"].as_str());
    }

    let distinct =
        |field: &str| -> BTreeSet<String> { rows.iter().map(|r| r[field].to_string()).collect() };
    assert_eq!(distinct("pipeline").len(), 3);
    assert_eq!(distinct("deal_stage_id").len(), 6);
    assert!(distinct("comms_pipeline").len() >= 4);
    assert!(distinct("assigned_user_name").len() >= 10);
    let share = |test: &dyn Fn(&Value) -> bool| {
        rows.iter().filter(|r| test(r)).count() as f64 / rows.len() as f64
    };
    let dnc = share(&|r| r["do_not_contact"] == true);
    assert!(
        (0.07..0.13).contains(&dnc),
        "about 10% do-not-contact: {dnc}"
    );
    assert!(share(&|r| !r["ptp_date_human"].is_null()) > 0.1);
    assert!(share(&|r| !r["ptp_date_ai"].is_null()) > 0.05);
    assert!(share(&|r| !r["broken_ptp_date_human"].is_null()) > 0.02);
    assert!(share(&|r| !r["broken_ptp_date_ai"].is_null()) > 0.01);

    // Borrowers with several deals; many rows share one updated_at.
    let mut deals_per_borrower = std::collections::HashMap::new();
    for row in &rows {
        *deals_per_borrower.entry(key(row).0).or_insert(0) += 1;
    }
    assert!(deals_per_borrower.values().any(|&n| n == 2));
    assert!(deals_per_borrower.values().any(|&n| n == 3));
    let instants: HashSet<&str> = rows.iter().map(updated_at).collect();
    assert!(instants.len() * 2 < rows.len(), "ties on updated_at");
}

#[tokio::test]
async fn the_same_seed_makes_the_same_rows_and_changes() {
    let make = |seed| {
        let sim = Simulator::new(SimConfig {
            seed,
            ..config(3_000)
        });
        sim.mutate(400);
        sim.add_rows(100);
        sim.latest()
    };
    assert_eq!(make(7), make(7));
    assert_ne!(make(7), make(8));
}

#[tokio::test]
async fn mutate_moves_rows_past_every_updated_at_and_keeps_their_key() {
    let sim = Simulator::new(config(500));
    let before = sim.latest();
    let max_before = before.iter().map(updated_at).max().unwrap().to_owned();
    assert_eq!(sim.mutate(50), 50);
    assert_eq!(sim.mutate(10_000), 500, "at most every row");
    let after = sim.latest();
    assert_eq!(after.len(), 500);
    let keys = |rows: &[Value]| rows.iter().map(key).collect::<BTreeSet<_>>();
    assert_eq!(keys(&before), keys(&after));
    assert!(
        after
            .iter()
            .all(|row| updated_at(row) > max_before.as_str())
    );
    assert_unique_keys(&after);

    sim.add_rows(40);
    let grown = sim.latest();
    assert_eq!(grown.len(), 540);
    assert_unique_keys(&grown);
}

#[tokio::test]
async fn each_fault_appears_when_certain() {
    let (sim, _running, client) = serve(config(3_000)).await;
    let (_, cursor) = client.page(&[("limit", "10")]).await;
    let cursor = cursor.unwrap();
    let certain = |plan: FaultPlan| FaultPlan { seed: 42, ..plan };

    sim.set_faults(certain(FaultPlan {
        too_many_requests: 1.0,
        retry_after_secs: 7,
        ..FaultPlan::default()
    }));
    let response = client
        .http
        .get(client.export_url(&client.lender_public_id, "S3/D16"))
        .bearer_auth(&client.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "7");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["success"], false);

    sim.set_faults(certain(FaultPlan {
        server_error: 1.0,
        ..FaultPlan::default()
    }));
    let (status, body) = client.get(&[]).await;
    assert_error(
        status,
        &body,
        StatusCode::INTERNAL_SERVER_ERROR,
        "Internal server error",
    );

    sim.set_faults(certain(FaultPlan {
        invalid_cursor: 1.0,
        ..FaultPlan::default()
    }));
    assert_eq!(
        client.get(&[]).await.0,
        StatusCode::OK,
        "no cursor, no fault"
    );
    let (status, body) = client.get(&[("limit", "10"), ("cursor", &cursor)]).await;
    assert_error(
        status,
        &body,
        StatusCode::INTERNAL_SERVER_ERROR,
        "Invalid cursor",
    );

    sim.set_faults(certain(FaultPlan {
        gateway_timeout: 1.0,
        gateway_timeout_above_limit: 200,
        ..FaultPlan::default()
    }));
    assert_eq!(client.get(&[("limit", "200")]).await.0, StatusCode::OK);
    let (status, body) = client.get(&[("limit", "201")]).await;
    assert_error(
        status,
        &body,
        StatusCode::GATEWAY_TIMEOUT,
        "Gateway timeout",
    );
    let (status, _) = client.get(&[]).await;
    assert_eq!(
        status,
        StatusCode::GATEWAY_TIMEOUT,
        "the default limit 500 is above"
    );

    sim.set_faults(certain(FaultPlan {
        slow: 1.0,
        slow_delay: Duration::from_millis(20),
        ..FaultPlan::default()
    }));
    let (rows, _) = client.page(&[("limit", "10"), ("cursor", &cursor)]).await;
    assert_eq!(rows.len(), 10, "slow, but an answer");

    sim.set_faults(certain(FaultPlan {
        drop_connection: 1.0,
        ..FaultPlan::default()
    }));
    let outcome = async {
        client
            .http
            .get(client.export_url(&client.lender_public_id, "S3/D16"))
            .bearer_auth(&client.token)
            .send()
            .await?
            .bytes()
            .await
    }
    .await;
    assert!(
        outcome.is_err(),
        "a dropped connection is an error: {outcome:?}"
    );

    sim.set_faults(FaultPlan::default());
    let (rows, _) = client.page(&[("limit", "10"), ("cursor", &cursor)]).await;
    assert_eq!(rows.len(), 10, "the cursor survived every fault");

    let stats = sim.stats();
    assert_eq!(stats.dropped_connections, 1);
    for kind in [
        "too_many_requests",
        "server_error",
        "invalid_cursor",
        "gateway_timeout",
        "slow",
        "drop_connection",
    ] {
        assert!(stats.faults_injected.contains_key(kind), "{kind}");
    }
    assert_eq!(stats.statuses[&429], 1);
    assert_eq!(stats.statuses[&504], 2);
}

#[tokio::test]
async fn faults_follow_their_seed() {
    let (sim, _running, client) = serve(config(100)).await;
    let plan = FaultPlan {
        seed: 9,
        server_error: 0.5,
        ..FaultPlan::default()
    };
    let mut runs = Vec::new();
    for _ in 0..2 {
        sim.set_faults(plan.clone());
        let mut statuses = Vec::new();
        for _ in 0..40 {
            statuses.push(client.get(&[("limit", "1")]).await.0);
        }
        runs.push(statuses);
    }
    assert_eq!(runs[0], runs[1]);
    let errors = runs[0].iter().filter(|s| s.is_server_error()).count();
    assert!((8..=32).contains(&errors), "about half: {errors}");
}

#[tokio::test]
async fn a_hundred_thousand_rows_page_through() {
    let (sim, _running, client) = serve(config(100_000)).await;
    let (_, body) = client
        .get(&[("includeTotal", "true"), ("limit", "1")])
        .await;
    assert_eq!(body["body"]["pagination"]["total"], 100_000);
    sim.mutate(30_000);
    let rows = client.chain(&[("limit", "1000")]).await;
    assert_eq!(rows.len(), 100_000);
    assert_eq!(rows, sim.latest());
}

#[tokio::test]
async fn unknown_routes_answer_the_error_envelope() {
    let (_sim, _running, client) = serve(config(10)).await;
    let response = client
        .http
        .get(format!("{}/admin/v2/nothing", client.base))
        .send()
        .await
        .unwrap();
    let status = response.status();
    assert_error(
        status,
        &response.json().await.unwrap(),
        StatusCode::NOT_FOUND,
        "Not found",
    );
    let response = client
        .http
        .post(client.export_url(&client.lender_public_id, "S3/D16"))
        .send()
        .await
        .unwrap();
    let status = response.status();
    assert_error(
        status,
        &response.json().await.unwrap(),
        StatusCode::METHOD_NOT_ALLOWED,
        "Method not allowed",
    );
}

#[tokio::test]
async fn a_stopped_simulator_refuses_connections() {
    let (_sim, running, client) = serve(config(10)).await;
    let addr = running.addr;
    running.stop().await.unwrap();
    let refused = reqwest::Client::new()
        .get(format!("http://{addr}/admin/v3/lenders/x/exports/S3/D16"))
        .send()
        .await;
    assert!(refused.is_err());
    drop(client);
}

/// A tiny deterministic generator for the randomised scenarios below.
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) as usize) % n
    }
}

#[tokio::test]
async fn random_chains_under_random_changes_serve_their_snapshot_exactly() {
    let (sim, _running, client) = serve(config(600)).await;
    let mut dice = Dice(5);
    for scenario in 0..12 {
        let snapshot = sim.latest();
        let bound = |dice: &mut Dice| updated_at(&snapshot[dice.below(snapshot.len())]).to_owned();
        let since = (dice.below(2) == 0).then(|| bound(&mut dice));
        let until = (dice.below(2) == 0).then(|| bound(&mut dice));
        let desc = dice.below(2) == 0;
        let mut expected: Vec<Value> = snapshot
            .iter()
            .filter(|row| {
                since
                    .as_deref()
                    .is_none_or(|since| updated_at(row) >= since)
            })
            .filter(|row| until.as_deref().is_none_or(|until| updated_at(row) < until))
            .cloned()
            .collect();
        if desc {
            expected.reverse();
        }

        let mut filter: Vec<(&str, String)> = Vec::new();
        if let Some(since) = &since {
            filter.push(("since", since.clone()));
        }
        if let Some(until) = &until {
            filter.push(("until", until.clone()));
        }
        if desc {
            filter.push(("sort", "desc".to_owned()));
        }
        let mut rows = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let limit = (1 + dice.below(150)).to_string();
            let mut query: Vec<(&str, &str)> =
                filter.iter().map(|(k, v)| (*k, v.as_str())).collect();
            query.push(("limit", &limit));
            if let Some(cursor) = &cursor {
                query.push(("cursor", cursor));
            }
            let (page, next) = client.page(&query).await;
            if next.is_some() {
                assert_eq!(page.len().to_string(), limit, "only the last page is short");
            }
            rows.extend(page);
            match dice.below(3) {
                0 => {
                    sim.mutate(dice.below(80));
                }
                1 => sim.add_rows(dice.below(20)),
                _ => {}
            }
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(
            rows, expected,
            "scenario {scenario}: since {since:?}, until {until:?}, desc {desc}"
        );
    }
}
