//! The web console over real HTTP on loopback against the whole platform: sign-in with API keys
//! (cookies, form tokens), a case created and driven to CLOSED through its buttons, the
//! conflict of a stale page, and the refusals: no session, a wrong key, a forged or foreign
//! form, a role without the command, another tenant's case, a session signed out.
//! Imports uploaded through the form, their reports, errors and errors CSV.
//! (`.ci/console_e2e.py` drives the same pages in Chromium.)
//! A revoked key's session is refused at its next page.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::Utc;
use common::browser::{Browser, Page};
use common::{make_key, secured, start};
use recoup::platform::RunningPlatform;
use recoup_access::Role;
use recoup_proto::v1;
use recoup_proto::v1::debt_collection_cases_client::DebtCollectionCasesClient;
use recoup_proto::v1::query_client::QueryClient;
use reqwest::StatusCode;
use tempfile::TempDir;

/// Creates a case through the list page's form; its id.
async fn create_case(browser: &mut Browser, reference: &str) -> String {
    let list = browser.get("/cases").await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    let (token, nonce) = (list.hidden("form_token"), list.hidden("external_id"));
    let due = (Utc::now() - chrono::Duration::days(10))
        .format("%Y-%m-%d")
        .to_string();
    let created = browser
        .post(
            "/cases",
            &[
                ("form_token", &token),
                ("external_id", &nonce),
                ("reference", reference),
                ("amount_minor", "12500"),
                ("currency", "EUR"),
                ("due_date", &due),
            ],
        )
        .await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
    let location = created.location.unwrap();
    location.strip_prefix("/cases/").unwrap().to_owned()
}

/// Presses the button of `command` on the case page as it is now.
async fn press(browser: &mut Browser, case: &str, command: &str) -> Page {
    let page = browser.get(&format!("/cases/{case}")).await;
    assert!(
        page.body.contains(&format!("/cases/{case}/{command}")),
        "no {command} button: {}",
        page.body
    );
    let (token, version) = (page.hidden("form_token"), page.hidden("version"));
    let path = format!("/cases/{case}/{command}");
    browser
        .post(&path, &[("form_token", &token), ("version", &version)])
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_signs_in_and_drives_a_case_to_closed_through_the_buttons() {
    let dir = TempDir::new().unwrap();
    let platform = start(secured(dir.path())).await;
    let key = make_key(&platform, Role::Agent, &["acme"]).await;
    let mut browser = Browser::new(platform.http_addr.unwrap());

    let signed_in = browser.sign_in(&key).await;
    assert_eq!(
        signed_in.status,
        StatusCode::SEE_OTHER,
        "{}",
        signed_in.body
    );
    assert_eq!(signed_in.location.as_deref(), Some("/cases"));
    let session = signed_in
        .set_cookies
        .iter()
        .find(|c| c.starts_with("recoup_session="))
        .unwrap();
    assert!(session.contains("HttpOnly") && session.contains("SameSite=Strict"));
    assert!(!session.contains("Secure"), "plaintext loopback: {session}");

    let case = create_case(&mut browser, "INV-CONSOLE-1").await;
    let page = browser.get(&format!("/cases/{case}")).await;
    assert!(page.body.contains("INV-CONSOLE-1") && page.body.contains("REVIEWING"));
    assert!(page.body.contains("125.00 EUR"), "{}", page.body);
    // Found by a prefix of its reference, and not by another.
    create_case(&mut browser, "INV-OTHER-2").await;
    let found = browser.get("/cases?q=INV-CONS").await;
    assert!(
        found.body.contains(&format!("href=\"/cases/{case}\"")),
        "{}",
        found.body
    );
    assert!(!found.body.contains("INV-OTHER-2"), "{}", found.body);
    let none = browser.get("/cases?q=ZZZ").await;
    assert!(none.body.contains("No cases."), "{}", none.body);
    // The same search through gRPC, a page of one at a time, in reference order; a page token
    // is good only for the prefix it was issued for.
    let mut cases = DebtCollectionCasesClient::new(common::channel(&platform).await);
    let search = |prefix: &str, page_token: &str| {
        let asked = v1::SearchCasesRequest {
            reference_prefix: prefix.into(),
            page_size: 1,
            page_token: page_token.into(),
        };
        common::bearer(asked, &key)
    };
    let first = cases
        .search_cases(search("INV-", ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.cases[0].reference, "INV-CONSOLE-1");
    let second = cases
        .search_cases(search("INV-", &first.next_page_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.cases[0].reference, "INV-OTHER-2");
    let token = first.next_page_token.as_str();
    for (prefix, token) in [("INV-OTHER", token), ("INV-C", token), ("INV-", "x")] {
        let refused = cases.search_cases(search(prefix, token)).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    }
    let bad = |reference_prefix: String, page_size: u32| v1::SearchCasesRequest {
        reference_prefix,
        page_size,
        page_token: String::new(),
    };
    for asked in [
        bad(String::new(), 0),
        bad("I".repeat(1025), 0),
        bad("INV-".into(), 101),
    ] {
        let refused = cases
            .search_cases(common::bearer(asked, &key))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    }
    let refused = browser
        .get("/cases?q=INV-OTHER&page=after:4:INV-CONSOLE-1")
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    // A page of this tenant's data is neither framed nor cached.
    let headers = browser.open(&format!("/cases/{case}")).await;
    let csp = headers.headers()["content-security-policy"]
        .to_str()
        .unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(headers.headers()["cache-control"], "no-store");

    // A second tab keeps the page of version 1.
    let stale = browser.get(&format!("/cases/{case}")).await;
    for (command, state) in [
        ("MarkReviewed", "PREPARING"),
        ("MarkPrepared", "PENDING"),
        ("StartProcessing", "PROCESSING"),
        ("CloseCase", "CLOSED"),
    ] {
        let done = press(&mut browser, &case, command).await;
        assert_eq!(
            done.status,
            StatusCode::SEE_OTHER,
            "{command}: {}",
            done.body
        );
        let page = browser.get(&format!("/cases/{case}")).await;
        assert!(
            page.body.contains(state),
            "{command} → {state}: {}",
            page.body
        );
    }
    let closed = browser.get(&format!("/cases/{case}")).await;
    assert!(
        !closed.body.contains("name=\"version\""),
        "no command after CLOSED"
    );

    // The stale tab acts: the conflict, and the case as it stands.
    let conflict = browser
        .post(
            &format!("/cases/{case}/MarkReviewed"),
            &[
                ("form_token", &stale.hidden("form_token")),
                ("version", &stale.hidden("version")),
            ],
        )
        .await;
    assert_eq!(conflict.status, StatusCode::CONFLICT, "{}", conflict.body);
    assert!(
        conflict.body.contains("changed since you loaded it"),
        "{}",
        conflict.body
    );
    assert!(conflict.body.contains("CLOSED"), "{}", conflict.body);

    // The audit trail follows from the read model: who did what.
    let mut trail = String::new();
    for _ in 0..100 {
        trail = browser.get(&format!("/cases/{case}")).await.body;
        if trail.contains("DebtCaseClosed") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for event in [
        "DebtCaseCreated",
        "DebtCaseReviewed",
        "DebtCasePrepared",
        "DebtCaseProcessingStarted",
        "DebtCaseClosed",
    ] {
        assert!(trail.contains(event), "{event}: {trail}");
    }
    assert!(trail.contains("key:"), "the actor: {trail}");

    // The list shows it among the closed cases.
    let closed_list = browser.get("/cases?state=CLOSED").await;
    assert!(closed_list.body.contains("INV-CONSOLE-1"));
    let reviewing = browser.get("/cases?state=REVIEWING").await;
    assert!(!reviewing.body.contains("INV-CONSOLE-1"));
    platform.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_refuses_what_a_session_may_not_do() {
    let dir = TempDir::new().unwrap();
    let platform = start(secured(dir.path())).await;
    let addr = platform.http_addr.unwrap();
    let agent = make_key(&platform, Role::Agent, &["acme"]).await;
    let viewer = make_key(&platform, Role::Viewer, &["acme"]).await;
    let other = make_key(&platform, Role::Admin, &["globex"]).await;

    // No session: every page leads to the sign-in.
    let mut anonymous = Browser::new(addr);
    let page = anonymous.get("/cases").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location.as_deref(), Some("/sign-in"));
    let page = anonymous
        .post(
            "/cases/x/CloseCase",
            &[("form_token", "x"), ("version", "1")],
        )
        .await;
    assert_eq!(page.location.as_deref(), Some("/sign-in"));

    // A wrong key, and a sign-in form that is not the browser's own.
    let refused = anonymous.sign_in("rk1_not-a-key").await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.body);
    assert!(refused.body.contains("Not signed in"), "{}", refused.body);
    assert!(!anonymous.cookies.contains_key("recoup_session"));
    let mut forged = Browser::new(addr);
    let page = forged
        .post(
            "/sign-in",
            &[("credential", &agent), ("form_token", "guess")],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
    assert!(!forged.cookies.contains_key("recoup_session"));

    let mut acme = Browser::new(addr);
    acme.sign_in(&agent).await;
    let case = create_case(&mut acme, "INV-REFUSALS").await;

    // A form without this session's token changes nothing.
    let page = acme.get(&format!("/cases/{case}")).await;
    let version = page.hidden("version");
    let forged_form = acme
        .post(
            &format!("/cases/{case}/MarkReviewed"),
            &[("form_token", "not-the-token"), ("version", &version)],
        )
        .await;
    assert_eq!(forged_form.status, StatusCode::FORBIDDEN);
    let token = page.hidden("form_token");
    let no_version = acme
        .post(
            &format!("/cases/{case}/MarkReviewed"),
            &[("form_token", &token)],
        )
        .await;
    assert_eq!(
        no_version.status,
        StatusCode::BAD_REQUEST,
        "{}",
        no_version.body
    );
    assert!(
        acme.get(&format!("/cases/{case}"))
            .await
            .body
            .contains("REVIEWING")
    );

    // A viewer sees the case without buttons, and a forged command is refused by the service.
    let mut reader = Browser::new(addr);
    reader.sign_in(&viewer).await;
    let page = reader.get(&format!("/cases/{case}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("INV-REFUSALS"));
    assert!(!page.body.contains("name=\"version\""), "{}", page.body);
    assert!(!page.body.contains("New case"));
    let token = page.hidden("form_token");
    let denied = reader
        .post(
            &format!("/cases/{case}/MarkReviewed"),
            &[("form_token", &token), ("version", &version)],
        )
        .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN, "{}", denied.body);
    assert!(
        acme.get(&format!("/cases/{case}"))
            .await
            .body
            .contains("REVIEWING")
    );

    // Another tenant's admin does not find acme's case, nor sees it listed.
    let mut globex = Browser::new(addr);
    globex.sign_in(&other).await;
    let page = globex.get(&format!("/cases/{case}")).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND, "{}", page.body);
    assert!(!globex.get("/cases").await.body.contains("INV-REFUSALS"));

    // A revoked key's session opens nothing more: the services refuse it at the next page.
    let id = viewer.split('_').nth(1).unwrap();
    let registry = platform.keys().unwrap();
    registry.revoke(id, Utc::now(), "test").await.unwrap();
    let page = reader.get(&format!("/cases/{case}")).await;
    assert_eq!(page.location.as_deref(), Some("/sign-in"), "{}", page.body);
    assert!(
        !reader.cookies.contains_key("recoup_session"),
        "the session ended"
    );

    // Signed out, the cookie opens nothing, even sent again.
    let session = acme.cookies["recoup_session"].clone();
    let token = acme.get("/cases").await.hidden("form_token");
    let out = acme.post("/sign-out", &[("form_token", &token)]).await;
    assert_eq!(out.location.as_deref(), Some("/sign-in"));
    acme.cookies.insert("recoup_session".into(), session);
    let page = acme.get("/cases").await;
    assert_eq!(page.location.as_deref(), Some("/sign-in"));
    platform.shutdown().await.unwrap();
}

/// The do-not-contact list as a `WatchDoNotContact` snapshot gives it.
async fn dnc_snapshot(platform: &RunningPlatform, key: &str) -> BTreeSet<String> {
    use recoup_proto::v1::do_not_contact_update::Kind;
    let mut query = QueryClient::new(common::channel(platform).await);
    let mut stream = query
        .watch_do_not_contact(common::bearer(v1::WatchDoNotContactRequest {}, key))
        .await
        .unwrap()
        .into_inner();
    let mut listed = BTreeSet::new();
    while let Some(update) = stream.message().await.unwrap() {
        match Kind::try_from(update.kind).unwrap() {
            Kind::Listed => {
                listed.insert(update.public_id);
            }
            Kind::SnapshotEnd => break,
            _ => {}
        }
    }
    listed
}

/// Server-sent events of the do-not-contact page, read as they come.
struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    /// The next event's JSON.
    async fn next(&mut self) -> serde_json::Value {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let event: String = self.buffer.drain(..end + 2).collect();
                let data: String = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim)
                    .collect();
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                return serde_json::from_str(&data).unwrap();
            }
            let chunk = self
                .response
                .chunk()
                .await
                .unwrap()
                .expect("the stream goes on");
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collections_page_shows_funnel_promises_dpd_and_a_live_do_not_contact_list() {
    let sim_config = export_sim::SimConfig {
        rows: 400,
        lender: "acme".to_owned(),
        lender_public_id: "lender-acme-0001".to_owned(),
        email: "ops@acme.example".to_owned(),
        password: "s3cret".to_owned(),
        ..export_sim::SimConfig::default()
    };
    let sim = export_sim::Simulator::new(sim_config.clone());
    let vendor = sim.start(([127, 0, 0, 1], 0).into()).await.unwrap();
    let dir = TempDir::new().unwrap();
    let mut config = secured(dir.path());
    config.pull = Some(common::pull_settings(
        &vendor.base_url(),
        &sim_config,
        false,
    ));
    let platform = start(config).await;
    let viewer = make_key(&platform, Role::Viewer, &["acme"]).await;
    let stranger = make_key(&platform, Role::Admin, &["globex"]).await;

    // Every row pulled (each distinct row key is a deal).
    let mut query = QueryClient::new(common::channel(&platform).await);
    let arrived = common::eventually(Duration::from_secs(60), || {
        let mut q = query.clone();
        let r = common::bearer(v1::CollectionsFunnelRequest {}, &viewer);
        async move { q.collections_funnel(r).await.unwrap().into_inner().deals >= 390 }
    })
    .await;
    assert!(arrived, "the deals arrive");
    let funnel = query
        .collections_funnel(common::bearer(v1::CollectionsFunnelRequest {}, &viewer))
        .await
        .unwrap()
        .into_inner();
    let listed = dnc_snapshot(&platform, &viewer).await;
    assert!(!listed.is_empty(), "the simulator lists some borrowers");

    let mut browser = Browser::new(platform.http_addr.unwrap());
    browser.sign_in(&viewer).await;
    let page = browser.get("/collections").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let total = format!(
        "<th scope=\"row\" colspan=\"2\">All deals</th><td class=\"num\">{}</td>",
        funnel.deals
    );
    assert!(page.body.contains(&total), "{}", page.body);
    for stage in &funnel.stages {
        assert!(page.body.contains(&format!(">{}</td>", stage.deals)));
    }
    assert!(page.body.contains("Agents") && page.body.contains("AI calls"));
    for borrower in &listed {
        assert!(
            page.body.contains(&format!("<li data-id=\"{borrower}\">")),
            "{borrower} listed"
        );
    }
    // The DPD buckets of a chosen day, as the service counts them.
    let dpd = query
        .dpd_buckets(common::bearer(
            v1::DpdBucketsRequest {
                as_of: "2026-06-01".into(),
            },
            &viewer,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dpd.buckets.len(), 6);
    let page = browser.get("/collections?as_of=2026-06-01").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("<caption>On 2026-06-01</caption>"));
    for b in &dpd.buckets {
        let row = format!("<tr data-bucket=\"{}\"><th scope=\"row\">", b.bucket);
        let at = page
            .body
            .find(&row)
            .unwrap_or_else(|| panic!("{row}: {}", page.body));
        let cells = &page.body[at..at + page.body[at..].find("</tr>").unwrap()];
        assert!(
            cells.contains(&format!("<td class=\"num\">{}</td>", b.deals)),
            "{cells}"
        );
    }
    let page = browser.get("/collections?as_of=2025-02-30").await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "an impossible day");
    assert!(
        !page.body.contains("data-bucket"),
        "no table for a day that is not one"
    );

    // The live list: the snapshot, then the changes the vendor's rows make.
    let response = browser.open("/collections/do-not-contact/events").await;
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut events = Events {
        response,
        buffer: String::new(),
    };
    let mut streamed = BTreeSet::new();
    loop {
        let event = events.next().await;
        match event["kind"].as_str().unwrap() {
            "LISTED" => {
                streamed.insert(event["public_id"].as_str().unwrap().to_owned());
            }
            "SNAPSHOT_END" => break,
            _ => {}
        }
    }
    assert_eq!(streamed, listed);
    sim.mutate(400);
    let change = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let event = events.next().await;
            if matches!(event["kind"].as_str(), Some("ADDED" | "REMOVED")) {
                return event;
            }
        }
    })
    .await
    .expect("a change of the list arrives");
    assert!(change["sequence"].as_u64().unwrap() > 0, "{change}");

    // Signed out, a stream of the session ends (it checks its session every few seconds).
    let mut open = browser.open("/collections/do-not-contact/events").await;
    let token = browser.get("/collections").await.hidden("form_token");
    browser.post("/sign-out", &[("form_token", &token)]).await;
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        while open.chunk().await.unwrap().is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the stream of a signed-out session ends");

    // Another tenant's admin: no deals, an empty list.
    let mut other = Browser::new(platform.http_addr.unwrap());
    other.sign_in(&stranger).await;
    let page = other.get("/collections").await;
    assert!(
        page.body.contains("<span id=\"dnc-count\">0</span>"),
        "{}",
        page.body
    );
    for borrower in &listed {
        assert!(!page.body.contains(borrower.as_str()));
    }
    // No session, no stream.
    let mut anonymous = Browser::new(platform.http_addr.unwrap());
    let page = anonymous.get("/collections/do-not-contact/events").await;
    assert_eq!(page.location.as_deref(), Some("/sign-in"));
    platform.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portfolio_page_charts_par_by_day_from_one_series() {
    let dir = TempDir::new().unwrap();
    let platform = start(secured(dir.path())).await;
    let importer = make_key(&platform, Role::Importer, &["acme"]).await;
    let addr = platform.http_addr.unwrap();
    // Three accounts over two days; the second day moves one of them deep into arrears.
    let csv = "snapshot_date,account_external_id,days_arrears_consecutive_source,\
               amt_remaining_installment_source\n\
               2024-03-01,A1,0,100\n2024-03-01,A2,12,200\n2024-03-01,A3,45,300\n\
               2024-03-02,A1,1,90\n2024-03-02,A2,13,200\n2024-03-02,A3,200,300\n";
    let imported = reqwest::Client::new()
        .post(format!("http://{addr}/v1/paygo_snapshots_ts"))
        .bearer_auth(&importer)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(imported.status(), StatusCode::OK);

    let mut browser = Browser::new(addr);
    browser.sign_in(&importer).await;
    let path = "/portfolio?from=2024-02-29&to=2024-03-02";
    // The day's table once every row is projected: A3 at 200 days is 180+.
    let deep = "<th scope=\"row\">180+</th><td class=\"num\">1</td><td class=\"num\">300.00</td>";
    let mut page = browser.get(path).await;
    for _ in 0..400 {
        if page.body.contains(deep) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        page = browser.get(path).await;
    }
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body.contains("<h2 id=\"day\">On 2024-03-02</h2>"),
        "{}",
        page.body
    );
    assert_eq!(page.body.matches("<polygon class=\"bucket\"").count(), 8);
    assert!(page.body.contains("<polyline class=\"par30\""));
    assert!(page.body.contains("<polyline class=\"par90\""));
    // Three days drawn: each line has a point per day.
    let par30 = page
        .body
        .split("<polyline class=\"par30\" points=\"")
        .nth(1)
        .unwrap();
    let points = par30.split('"').next().unwrap();
    assert_eq!(points.split(' ').count(), 3, "{points}");
    // PAR30 and PAR90 are A3's 300 of 590.
    assert!(page.body.contains(deep), "{}", page.body);
    assert!(page.body.contains("50.8 % · 50.8 %"), "{}", page.body);
    // An earlier day of the range, by choice.
    let first = browser.get(&format!("{path}&day=2024-03-01")).await;
    assert!(first.body.contains("<h2 id=\"day\">On 2024-03-01</h2>"));
    assert!(
        first
            .body
            .contains("<th scope=\"row\">31-60</th><td class=\"num\">1</td>")
    );

    // Refusals: a basis that is none, a range backwards or over a year.
    let page = browser.get("/portfolio?basis=guess").await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    for range in [
        "from=2024-03-02&to=2024-03-01",
        "from=2023-01-01&to=2024-03-01",
    ] {
        let page = browser.get(&format!("/portfolio?{range}")).await;
        assert_eq!(
            page.status,
            StatusCode::BAD_REQUEST,
            "{range}: {}",
            page.body
        );
    }
    // One account's page: its latest snapshot and its days, charted and tabled.
    let account = "/accounts?uid=acme_generic_A3";
    let page = browser.get(account).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("<h1>Account A3</h1>"), "{}", page.body);
    let line = page
        .body
        .split("<polyline class=\"source\" points=\"")
        .nth(1)
        .unwrap();
    let points: Vec<&str> = line.split('"').next().unwrap().split(' ').collect();
    assert_eq!(points.len(), 2, "{points:?}");
    // 200 days is the top of the scale: the last point is at the plot's top.
    assert!(points[1].ends_with(",16.0"), "{points:?}");
    assert!(
        page.body
            .contains("on the last day 200 by the CRM, unknown forgiving"),
        "{}",
        page.body
    );
    let table = page.body.split("id=\"account-days\"").nth(1).unwrap();
    assert_eq!(table.matches("<th scope=\"row\">2024-03-0").count(), 2);
    assert!(table.find("2024-03-02").unwrap() < table.find("2024-03-01").unwrap());
    let lookup = browser.get("/accounts").await;
    assert_eq!(lookup.status, StatusCode::OK);
    assert!(lookup.body.contains("name=\"uid\""));
    let unknown = browser.get("/accounts?uid=acme_generic_nobody").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    // Another tenant's range is empty, and the account is not found.
    let stranger = make_key(&platform, Role::Viewer, &["globex"]).await;
    let mut other = Browser::new(addr);
    other.sign_in(&stranger).await;
    let page = other.get(path).await;
    assert!(
        page.body
            .contains("No account has a snapshot in this range.")
    );
    assert_eq!(other.get(account).await.status, StatusCode::NOT_FOUND);
    platform.shutdown().await.unwrap();
}

/// A `multipart/form-data` body of `fields` (name, file name, content) in their order, and its
/// content type.
fn multipart(fields: &[(&str, Option<&str>, &str)]) -> (String, Vec<u8>) {
    let boundary = "recoup-test-boundary-7d1f";
    let mut body = Vec::new();
    for (name, file, content) in fields {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        let disposition = match file {
            Some(file) => format!(
                "Content-Disposition: form-data; name=\"{name}\"; filename=\"{file}\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n"
            ),
            None => format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n"),
        };
        body.extend_from_slice(disposition.as_bytes());
        body.extend_from_slice(content.as_bytes());
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// Sends the import form with `token` and a file.
async fn upload(browser: &mut Browser, token: &str, file: &str, csv: &str) -> Page {
    let (content_type, body) = multipart(&[
        ("form_token", None, token),
        ("data_origin", None, "crm"),
        ("sheet", None, ""),
        ("file", Some(file), csv),
    ]);
    let request = browser
        .http
        .post(format!("{}/imports", browser.base))
        .header("content-type", content_type)
        .body(body);
    browser.send(request).await
}

/// The number in a report's cell `name`.
fn count(page: &str, name: &str) -> u64 {
    let marker = format!("data-count=\"{name}\">");
    let at = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {page}"))
        + marker.len();
    page[at..].split('<').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_with_bad_rows_is_uploaded_and_its_report_and_errors_are_shown() {
    let dir = TempDir::new().unwrap();
    let mut cfg = secured(dir.path());
    cfg.importer.max_upload_bytes = 64 * 1024;
    let platform = start(cfg).await;
    let addr = platform.http_addr.unwrap();
    let importer = make_key(&platform, Role::Importer, &["acme"]).await;
    let mut browser = Browser::new(addr);
    browser.sign_in(&importer).await;
    let list = browser.get("/imports").await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    assert!(list.body.contains("No imports yet."), "{}", list.body);
    let token = list.hidden("form_token");

    // Five rows: a bad date (row 3) and a bad integer (row 5).
    let csv = "snapshot_date,account_external_id,days_arrears_consecutive_source\n\
               2024-03-01,A1,0\n2024-13-01,A2,1\n2024-03-01,A3,2\n2024-03-01,A4,many\n\
               2024-03-01,A5,4\n";
    let sent = upload(&mut browser, &token, "march.csv", csv).await;
    assert_eq!(sent.status, StatusCode::SEE_OTHER, "{}", sent.body);
    let to = sent.location.unwrap();
    let id = to.strip_prefix("/imports/").unwrap().to_owned();
    let report = browser.get(&to).await;
    assert_eq!(report.status, StatusCode::OK, "{}", report.body);
    assert!(report.body.contains("<h1>Import of march.csv</h1>"));
    let counts = ["read", "accepted", "unchanged", "rejected"].map(|c| count(&report.body, c));
    assert_eq!(counts, [5, 3, 0, 2]);
    assert!(report.body.contains("2 in all."), "{}", report.body);
    assert!(report.body.contains("<td class=\"num\">3</td><td>snapshot_date</td><td><code>2024-13-01</code></td><td>date_format</td>"), "{}", report.body);
    assert!(report.body.contains("<td class=\"num\">5</td><td>days_arrears_consecutive_source</td><td><code>many</code></td><td>integer</td>"), "{}", report.body);

    // The errors as CSV, to download.
    let csv_answer = browser.open(&format!("/imports/{id}/errors.csv")).await;
    assert_eq!(csv_answer.status(), StatusCode::OK);
    let disposition = csv_answer.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        disposition,
        format!("attachment; filename=\"import-{id}-errors.csv\"")
    );
    let lines: Vec<String> = csv_answer
        .text()
        .await
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0], "row,column,value,rule,message");
    assert!(
        lines[1].starts_with("3,snapshot_date,2024-13-01,date_format,"),
        "{lines:?}"
    );
    assert!(
        lines[2].starts_with("5,days_arrears_consecutive_source,many,integer,"),
        "{lines:?}"
    );

    // The same file again changes nothing and says so.
    let again = upload(&mut browser, &token, "march.csv", csv).await;
    assert_eq!(
        again.location.as_deref(),
        Some(format!("{to}?duplicate=1").as_str())
    );
    let page = browser.get(&format!("{to}?duplicate=1")).await;
    assert!(
        page.body.contains("This file was imported before"),
        "{}",
        page.body
    );
    let list = browser.get("/imports").await;
    assert_eq!(
        list.body
            .matches(&format!("href=\"/imports/{id}\""))
            .count(),
        1,
        "{}",
        list.body
    );
    assert!(list.body.contains("<td>march.csv</td>"), "{}", list.body);

    // Refused, and nothing imported: another form's token, a token after the file, a file the
    // importer does not read, a file over the limit, names over the importer's limits, a form
    // too large before its file, no session.
    let other = "snapshot_date,account_external_id\n2024-03-02,B1\n";
    let forged = upload(&mut browser, "not-the-token", "april.csv", other).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN, "{}", forged.body);
    let (content_type, body) = multipart(&[
        ("file", Some("april.csv"), other),
        ("form_token", None, &token),
    ]);
    let request = browser
        .http
        .post(format!("{}/imports", browser.base))
        .header("content-type", content_type)
        .body(body);
    assert_eq!(browser.send(request).await.status, StatusCode::FORBIDDEN);
    let text = upload(&mut browser, &token, "april.txt", other).await;
    assert_eq!(text.status, StatusCode::BAD_REQUEST);
    assert!(
        text.body.contains("is not a file the importer reads"),
        "{}",
        text.body
    );
    // Over the limit: refused by the importer as it reads, or unread when the body says so.
    let big = format!("{other}{}", "2024-03-02,B2\n".repeat(6000));
    let large = upload(&mut browser, &token, "big.csv", &big).await;
    assert_eq!(
        large.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        large.body
    );
    assert!(
        large.body.contains("larger than the limit of 65536"),
        "{}",
        large.body
    );
    let huge = format!("{other}{}", "2024-03-02,B2\n".repeat(12000));
    let large = upload(&mut browser, &token, "huge.csv", &huge).await;
    assert_eq!(
        large.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        large.body
    );
    assert!(
        large.body.contains("larger than this recoup takes"),
        "{}",
        large.body
    );
    // The importer's own bounds: a data origin over 100 bytes.
    let (content_type, body) = multipart(&[
        ("form_token", None, &token),
        ("data_origin", None, &"o".repeat(101)),
        ("file", Some("april.csv"), other),
    ]);
    let request = browser
        .http
        .post(format!("{}/imports", browser.base))
        .header("content-type", content_type)
        .body(body);
    let long = browser.send(request).await;
    assert_eq!(long.status, StatusCode::BAD_REQUEST, "{}", long.body);
    assert!(
        long.body.contains("data_origin is 101 bytes long"),
        "{}",
        long.body
    );
    // The form before its file is bounded: a part's headers of 70 KiB.
    let (content_type, body) = multipart(&[
        ("form_token", None, &token),
        (&"n".repeat(70 * 1024), None, "x"),
        ("file", Some("april.csv"), other),
    ]);
    let request = browser
        .http
        .post(format!("{}/imports", browser.base))
        .header("content-type", content_type)
        .body(body);
    assert_eq!(browser.send(request).await.status, StatusCode::BAD_REQUEST);
    let mut anonymous = Browser::new(addr);
    let unsigned = upload(&mut anonymous, &token, "april.csv", other).await;
    assert_eq!(unsigned.location.as_deref(), Some("/sign-in"));
    let list = browser.get("/imports").await;
    assert_eq!(
        list.body.matches("href=\"/imports/").count(),
        1,
        "{}",
        list.body
    );

    // A viewer is offered no upload, and its forged one is refused unread.
    let viewer = make_key(&platform, Role::Viewer, &["acme"]).await;
    let mut reader = Browser::new(addr);
    reader.sign_in(&viewer).await;
    let list = reader.get("/imports").await;
    assert!(list.body.contains(&format!("href=\"/imports/{id}\"")));
    assert!(!list.body.contains("multipart/form-data"), "{}", list.body);
    let token = list.hidden("form_token");
    let refused = upload(&mut reader, &token, "april.csv", other).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert!(
        refused.body.contains("Your role may not import"),
        "{}",
        refused.body
    );
    // Another tenant finds none of it.
    let stranger = make_key(&platform, Role::Admin, &["globex"]).await;
    let mut other_tenant = Browser::new(addr);
    other_tenant.sign_in(&stranger).await;
    assert!(
        other_tenant
            .get("/imports")
            .await
            .body
            .contains("No imports yet.")
    );
    assert_eq!(other_tenant.get(&to).await.status, StatusCode::NOT_FOUND);
    let csv_path = format!("/imports/{id}/errors.csv");
    assert_eq!(
        other_tenant.get(&csv_path).await.status,
        StatusCode::NOT_FOUND
    );
    platform.shutdown().await.unwrap();
}

/// The state the health page gives the row of `service`.
fn health_of(page: &str, service: &str) -> String {
    let marker = format!("data-service=\"{service}\" data-status=\"");
    let at = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no {service} in {page}"))
        + marker.len();
    page[at..].split('"').next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_page_says_each_service_serves_kafka_answers_and_admins_see_the_lag() {
    let dir = TempDir::new().unwrap();
    let platform = start(secured(dir.path())).await;
    let viewer = make_key(&platform, Role::Viewer, &["acme"]).await;
    let mut browser = Browser::new(platform.http_addr.unwrap());
    assert_eq!(
        browser.get("/health").await.location.as_deref(),
        Some("/sign-in")
    );
    browser.sign_in(&viewer).await;
    let page = browser.get("/health").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body.contains("data-status=\"serving\" id=\"kafka\""),
        "{}",
        page.body
    );
    assert_eq!(
        health_of(&page.body, "recoup.v1.DebtCollectionCases"),
        "serving"
    );
    assert_eq!(
        health_of(&page.body, "recoup.v1.SnapshotImports"),
        "serving"
    );
    assert_eq!(health_of(&page.body, "recoup.v1.ApiKeys"), "serving");
    assert_eq!(health_of(&page.body, "recoup.v1.Query"), "serving");
    // The consumers' lag is an admin's: a viewer is told so, and is shown none.
    assert!(page.body.contains("Consumer lag is shown to admins."));
    assert!(!page.body.contains("id=\"lag\""), "{}", page.body);
    let admin = make_key(&platform, Role::Admin, &["acme"]).await;
    let mut operator = Browser::new(platform.http_addr.unwrap());
    operator.sign_in(&admin).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let page = operator.get("/health").await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        assert!(page.body.contains("id=\"lag\""), "{}", page.body);
        for model in ["Cases", "PAYGo accounts", "Collections deals"] {
            assert!(page.body.contains(&format!("data-read-model=\"{model}\"")));
        }
        // Measured once the consumers' statistics came (every 5 s): nothing is behind.
        if page.body.matches("data-lag=\"0\"").count() == 3
            && page.body.matches("data-stale=\"false\"").count() == 3
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{}", page.body);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    platform.shutdown().await.unwrap();
}
