//! `recoup.v1.Query` over a real read model, served on loopback and called through the generated
//! client.
#![allow(clippy::unwrap_used)]

mod common;

use common::{CLUSTER, Case, Feed, TOPIC};
use projection::AccountReadModel;
use projection::CaseReadModel;
use projection::Projection;
use projection::grpc::Queries;
use recoup_proto::convert::case_to_proto;
use recoup_proto::tenant::TENANT_METADATA_KEY;
use recoup_proto::v1;
use recoup_proto::v1::query_client::QueryClient;
use tempfile::TempDir;
use tonic::transport::Channel;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request};

struct Fixture {
    client: QueryClient<Channel>,
    /// Tenant `acme`'s cases.
    acme: Vec<Case>,
    /// Tenant `other`'s case.
    other: Case,
    _dir: TempDir,
}

/// Seven cases of tenant `acme` (ids created out of order) and one of tenant `other`, served on a
/// free loopback port.
async fn start() -> Fixture {
    let acme = vec![
        Case::new("acme", "case-05", "CHF", &[5_000])
            .review()
            .prepare()
            .start()
            .receipt("r5", 500),
        Case::new("acme", "case-02", "EUR", &[2_000]),
        Case::new("acme", "case-07", "EUR", &[700]).review(),
        Case::new("acme", "case-01", "EUR", &[1_000]),
        Case::new("acme", "case-04", "EUR", &[4_000])
            .review()
            .prepare()
            .start()
            .receipt("r4", 1_500),
        Case::new("acme", "case-06", "EUR", &[6_000])
            .review()
            .prepare()
            .start()
            .receipt("r6", 6_000)
            .close(),
        Case::new("acme", "case-03", "CHF", &[3_000]),
    ];
    let other = Case::new("other", "case-99", "USD", &[999]);

    let dir = TempDir::new().unwrap();
    let rm = CaseReadModel::open(dir.path()).unwrap();
    let values: Vec<Vec<u8>> = acme.iter().chain([&other]).flat_map(Case::all).collect();
    let n = values.len();
    let outcome = rm
        .apply_batch(CLUSTER, TOPIC, &Feed::new().batch(values))
        .unwrap();
    assert_eq!(outcome.applied, n);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tonic::transport::Server::builder()
        .add_service(Queries::new(rm.clone(), AccountReadModel::open(&rm).unwrap()).into_server())
        .serve_with_incoming(TcpIncoming::from(listener));
    tokio::spawn(async move { server.await.unwrap() });
    let client = QueryClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    Fixture {
        client,
        acme,
        other,
        _dir: dir,
    }
}

fn req<T>(tenant: &str, message: T) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut()
        .insert(TENANT_METADATA_KEY, tenant.parse().unwrap());
    r
}

fn get(case_id: &str) -> v1::GetCaseRequest {
    v1::GetCaseRequest {
        case_id: case_id.into(),
    }
}

fn list(state: i32, page_size: u32, page_token: &str) -> v1::ListCasesRequest {
    v1::ListCasesRequest {
        state,
        page_size,
        page_token: page_token.into(),
    }
}

#[tokio::test]
async fn get_case_answers_the_case_as_the_read_model_holds_it() {
    let mut f = start().await;
    for c in f.acme.iter().chain([&f.other]) {
        let reply = f
            .client
            .get_case(req(&c.tenant, get(&c.id)))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            reply.case,
            Some(case_to_proto(&c.replay())),
            "case {}",
            c.id
        );
    }
}

#[tokio::test]
async fn get_case_of_an_unknown_case_is_not_found() {
    let mut f = start().await;
    let status = f
        .client
        .get_case(req("acme", get("case-08")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    // Without metadata the tenant is `default`, which holds nothing.
    let status = f
        .client
        .get_case(Request::new(get("case-01")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}

#[tokio::test]
async fn get_case_of_another_tenants_case_is_not_found() {
    let mut f = start().await;
    let status = f
        .client
        .get_case(req("other", get("case-04")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let status = f
        .client
        .get_case(req("acme", get("case-99")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    // A tenant whose id extends the owner's is another tenant too.
    let status = f
        .client
        .get_case(req("acme2", get("case-04")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}

#[tokio::test]
async fn a_bad_tenant_metadata_is_invalid_argument() {
    let mut f = start().await;
    let too_long = "t".repeat(65);
    for tenant in ["bad/tenant", "acme tenant", too_long.as_str()] {
        let status = f
            .client
            .get_case(req(tenant, get("case-01")))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{tenant}: {status:?}");
        let status = f
            .client
            .list_cases(req(tenant, list(0, 0, "")))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{tenant}: {status:?}");
        let status = f
            .client
            .case_stats(req(tenant, v1::CaseStatsRequest {}))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{tenant}: {status:?}");
    }
}

#[tokio::test]
async fn list_cases_rejects_a_page_size_above_1000() {
    let mut f = start().await;
    let status = f
        .client
        .list_cases(req("acme", list(0, 1001, "")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let status = f
        .client
        .list_cases(req("acme", list(0, u32::MAX, "")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    // 1000 itself is allowed.
    let page = f
        .client
        .list_cases(req("acme", list(0, 1000, "")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.cases.len(), 7);
    assert_eq!(page.next_page_token, "");
}

#[tokio::test]
async fn list_cases_rejects_a_page_token_it_did_not_issue() {
    let mut f = start().await;
    for token in ["garbage", "after:", "case-03", "after:case\0-03"] {
        let status = f
            .client
            .list_cases(req("acme", list(0, 3, token)))
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{token:?}: {status:?}"
        );
    }
}

#[tokio::test]
async fn list_cases_pages_through_every_case_once_in_order() {
    let mut f = start().await;
    let mut expected: Vec<v1::DebtCase> =
        f.acme.iter().map(|c| case_to_proto(&c.replay())).collect();
    expected.sort_by(|a, b| a.id.cmp(&b.id));

    let mut seen: Vec<v1::DebtCase> = Vec::new();
    let mut sizes = Vec::new();
    let mut token = String::new();
    loop {
        let page = f
            .client
            .list_cases(req("acme", list(0, 3, &token)))
            .await
            .unwrap()
            .into_inner();
        sizes.push(page.cases.len());
        seen.extend(page.cases);
        if page.next_page_token.is_empty() {
            break;
        }
        assert!(sizes.len() < 10, "paging does not end");
        token = page.next_page_token;
    }
    assert_eq!(sizes, [3, 3, 1]);
    assert_eq!(seen, expected);

    // A state filter pages the same way; a page that holds the rest exactly is the last one.
    let reviewing = v1::CaseState::Reviewing as i32;
    let page = f
        .client
        .list_cases(req("acme", list(reviewing, 1, "")))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = page.cases.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["case-01"]);
    assert!(!page.next_page_token.is_empty());
    let page = f
        .client
        .list_cases(req("acme", list(reviewing, 2, &page.next_page_token)))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = page.cases.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["case-02", "case-03"]);
    assert_eq!(page.next_page_token, "");

    // Another tenant sees only its own.
    let page = f
        .client
        .list_cases(req("other", list(0, 0, "")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.cases, [case_to_proto(&f.other.replay())]);
    assert_eq!(page.next_page_token, "");
}

#[tokio::test]
async fn case_stats_groups_per_state_with_per_currency_totals() {
    let mut f = start().await;
    let total = |currency: &str, amount_minor, collected_minor| v1::CurrencyTotal {
        currency: currency.into(),
        amount_minor,
        collected_minor,
    };
    let state = |state: v1::CaseState, count, totals| v1::StateStats {
        state: state as i32,
        count,
        totals,
    };
    let reply = f
        .client
        .case_stats(req("acme", v1::CaseStatsRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        reply.states,
        [
            state(
                v1::CaseState::Reviewing,
                3,
                vec![total("CHF", 3_000, 0), total("EUR", 3_000, 0)]
            ),
            state(v1::CaseState::Preparing, 1, vec![total("EUR", 700, 0)]),
            state(
                v1::CaseState::Processing,
                2,
                vec![total("CHF", 5_000, 500), total("EUR", 4_000, 1_500)]
            ),
            state(v1::CaseState::Closed, 1, vec![total("EUR", 6_000, 6_000)]),
        ]
    );

    let reply = f
        .client
        .case_stats(req("other", v1::CaseStatsRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        reply.states,
        [state(
            v1::CaseState::Reviewing,
            1,
            vec![total("USD", 999, 0)]
        )]
    );
    let reply = f
        .client
        .case_stats(Request::new(v1::CaseStatsRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert!(reply.states.is_empty());
}

fn history(case_id: &str, page_size: u32, page_token: &str) -> v1::GetCaseHistoryRequest {
    v1::GetCaseHistoryRequest {
        case_id: case_id.into(),
        page_size,
        page_token: page_token.into(),
    }
}

#[tokio::test]
async fn get_case_history_pages_through_every_event_in_order_with_who_and_why() {
    let mut f = start().await;
    // case-05: created, reviewed, prepared, started, a receipt.
    let case = f.acme[0].clone();
    let mut entries = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = f
            .client
            .get_case_history(req("acme", history(&case.id, 2, &token)))
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert!(page.entries.len() <= 2);
        entries.extend(page.entries);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    let types: Vec<&str> = entries.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "DebtCaseCreated",
            "DebtCaseReviewed",
            "DebtCasePrepared",
            "DebtCaseProcessingStarted",
            "DebtCasePaymentReceiptAdded"
        ]
    );
    for (i, e) in entries.iter().enumerate() {
        let version = i as u64 + 1;
        assert_eq!(e.version, version);
        assert_eq!(e.actor, common::actor(version));
        assert_eq!(e.correlation_id, common::correlation(version));
        assert!(!e.event_id.is_empty());
        let at = case.events[i].at();
        assert_eq!(
            e.occurred_at.map(|t| (t.seconds, t.nanos as u32)),
            Some((at.timestamp(), at.timestamp_subsec_nanos()))
        );
    }
    // The case names the same creator and reviewer as its history.
    let reply = f
        .client
        .get_case(req("acme", get(&case.id)))
        .await
        .unwrap()
        .into_inner();
    let shown = reply.case.unwrap();
    assert_eq!(shown.creator, entries[0].actor);
    assert_eq!(shown.reviewer, entries[1].actor);
    // One page of everything without a token to follow.
    let all = f
        .client
        .get_case_history(req("acme", history(&case.id, 0, "")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.entries, entries);
    assert_eq!(all.next_page_token, "");
}

#[tokio::test]
async fn get_case_history_of_an_unknown_or_another_tenants_case_is_not_found() {
    let mut f = start().await;
    for (tenant, case_id) in [
        ("acme", "case-08"),
        ("other", "case-04"),
        ("acme", "case-99"),
    ] {
        let status = f
            .client
            .get_case_history(req(tenant, history(case_id, 0, "")))
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::NotFound,
            "{tenant}/{case_id}: {status:?}"
        );
    }
    let status = f
        .client
        .get_case_history(req("acme", history("", 0, "")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(f.other.id, "case-99");
}

#[tokio::test]
async fn get_case_history_rejects_a_page_token_it_did_not_issue_and_a_page_too_large() {
    let mut f = start().await;
    for token in [
        "garbage",
        "version:",
        "version:x",
        "after:case-01",
        "version:-1",
    ] {
        let status = f
            .client
            .get_case_history(req("acme", history("case-05", 2, token)))
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{token:?}: {status:?}"
        );
    }
    let status = f
        .client
        .get_case_history(req("acme", history("case-05", 1001, "")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
}
