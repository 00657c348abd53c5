//! The deal RPCs of `recoup.v1.Query` over a real deal read model, served on loopback and called
//! through the generated client: GetDeal, ListDeals (filters, paging, tokens),
//! CollectionsFunnel, PtpSummary, DpdBuckets and WatchDoNotContact (snapshot, live changes, changes racing
//! subscriptions, watchers that fall behind, shutdown).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::net::SocketAddr;

use chrono::{DateTime, Utc};
use common::deals::{DEALS_TOPIC, Row, day, instant};
use common::{CLUSTER, Feed};
use projection::Projection;
use projection::deals::{DealReadModel, PtpChannel};
use projection::grpc::Queries;
use projection::{AccountReadModel, CaseReadModel};
use recoup_proto::tenant::TENANT_METADATA_KEY;
use recoup_proto::v1;
use recoup_proto::v1::do_not_contact_update::Kind;
use recoup_proto::v1::query_client::QueryClient;
use tempfile::TempDir;
use tokio::sync::watch;
use tonic::transport::Channel;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Streaming};

const TENANT: &str = "acme";

/// A guard against a hang, never a measure: every wait ends far sooner.
const PATIENCE: Duration = Duration::from_secs(120);

/// The fixture's deals of tenant `acme` as of 2026-06-01:
///
/// | row | borrower | pipeline / stage | amount | DPD (bucket) | PTP human / ai | DNC |
/// |---|---|---|---|---|---|---|
/// | a1 | b-a | Early / negotiation | 920000 | 31 (31-60) | open / – | false |
/// | a2 | b-a | Early / contact | 10000 | 0 (current) | – / kept | true |
/// | b1 | b-b | Early / negotiation | 5000 | 92 (90+) | broken / – | – |
/// | c1 | b-c | Late / legal | 700000 | 1 (1-30) | – / – | true |
/// | c2 | b-c | Late / negotiation | 300 | – (unknown) | open (today) / broken | – |
/// | d1 | b-d | – / – | – | 90 (61-90) | – / – | false |
/// | e1 | b-e | Early / negotiation (rev 2) | 1 | 60 (31-60) | – / – | false (rev 1: true) |
struct Rows {
    a1: Row,
    a2: Row,
    b1: Row,
    c1: Row,
    c2: Row,
    d1: Row,
    e1: Row,
}

const EARLY: &str = "Early Collections";
const LATE: &str = "Late Collections";

fn rows() -> Rows {
    let a1 = Row::new(TENANT, "b-a", instant(2026, 4, 18, 10, 5, 12, 0))
        .stage(EARLY, "stage_negotiation")
        .amount(920_000)
        .due(day(2026, 5, 1))
        .ptp(PtpChannel::Human, day(2026, 6, 5))
        .dnc(false);
    let a2 = Row::new(TENANT, "b-a", instant(2026, 5, 2, 8, 0, 0, 250_000))
        .stage(EARLY, "stage_contact")
        .amount(10_000)
        .due(day(2026, 6, 1))
        .ptp(PtpChannel::Ai, day(2026, 5, 20))
        .dnc(true);
    let b1 = Row::new(TENANT, "b-b", instant(2026, 2, 1, 9, 30, 0, 0))
        .stage(EARLY, "stage_negotiation")
        .amount(5_000)
        .due(day(2026, 3, 1))
        .ptp(PtpChannel::Human, day(2026, 5, 5))
        .broken(PtpChannel::Human, day(2026, 5, 10));
    let c1 = Row::new(TENANT, "b-c", instant(2026, 3, 3, 3, 3, 3, 3))
        .stage(LATE, "stage_legal")
        .amount(700_000)
        .due(day(2026, 5, 31))
        .dnc(true);
    let c2 = Row::new(TENANT, "b-c", instant(2026, 3, 4, 0, 0, 0, 0))
        .stage(LATE, "stage_negotiation")
        .amount(300)
        .ptp(PtpChannel::Human, day(2026, 6, 1))
        .broken(PtpChannel::Ai, day(2026, 5, 1));
    let d1 = Row::new(TENANT, "b-d", instant(2026, 1, 10, 12, 0, 0, 0))
        .due(day(2026, 3, 3))
        .dnc(false);
    let e1 = Row::new(TENANT, "b-e", instant(2026, 1, 11, 12, 0, 0, 0))
        .stage(EARLY, "stage_contact")
        .amount(1)
        .due(day(2026, 4, 2))
        .dnc(true)
        .revise(|r| r.stage(EARLY, "stage_negotiation").dnc(false));
    Rows {
        a1,
        a2,
        b1,
        c1,
        c2,
        d1,
        e1,
    }
}

struct Fixture {
    client: QueryClient<Channel>,
    deals: DealReadModel,
    feed: Feed,
    rows: Rows,
    clock: Arc<Mutex<DateTime<Utc>>>,
    stop: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
    addr: SocketAddr,
    _dir: TempDir,
}

impl Fixture {
    fn apply(&mut self, rows: &[&Row]) {
        let messages = self.feed.batch(rows.iter().map(|r| r.envelope()));
        self.deals
            .apply_batch(CLUSTER, DEALS_TOPIC, &messages)
            .unwrap();
    }
}

async fn serve(
    queries: Queries,
    stop: watch::Receiver<bool>,
) -> (
    QueryClient<Channel>,
    tokio::task::JoinHandle<()>,
    SocketAddr,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut stop_server = stop.clone();
    let server = tonic::transport::Server::builder()
        .add_service(queries.with_shutdown(stop).into_server())
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), async move {
            let _ = stop_server.wait_for(|s| *s).await;
        });
    let handle = tokio::spawn(async move { server.await.unwrap() });
    let client = QueryClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    (client, handle, addr)
}

/// The fixture's deals (e1's first revision in an earlier batch) and one deal of tenant `other`,
/// served with a clock the test sets (2026-06-01 12:00 UTC to begin with).
async fn start_with_capacity(capacity: usize) -> Fixture {
    let dir = TempDir::new().unwrap();
    let cases = CaseReadModel::open(dir.path()).unwrap();
    let accounts = AccountReadModel::open(&cases).unwrap();
    let deals = DealReadModel::open_with_feed_capacity(&cases, capacity).unwrap();
    let rows = rows();
    let mut feed = Feed::new();
    let mut e1_first = rows.e1.clone();
    e1_first.deal = Row::new(TENANT, "b-e", instant(2026, 1, 11, 12, 0, 0, 0))
        .stage(EARLY, "stage_contact")
        .amount(1)
        .due(day(2026, 4, 2))
        .dnc(true)
        .deal;
    let other = Row::new("other", "b-a", instant(2026, 4, 18, 10, 5, 12, 0))
        .stage(EARLY, "stage_negotiation")
        .amount(1_000_000)
        .dnc(true);
    for batch in [
        vec![&rows.a1, &rows.a2, &rows.b1, &e1_first],
        vec![&rows.c1, &rows.c2, &rows.d1, &rows.e1, &other],
    ] {
        let messages = feed.batch(batch.iter().map(|r| r.envelope()));
        deals.apply_batch(CLUSTER, DEALS_TOPIC, &messages).unwrap();
    }
    let clock = Arc::new(Mutex::new(instant(2026, 6, 1, 12, 0, 0, 0)));
    let now = clock.clone();
    let queries = Queries::new(cases, accounts)
        .with_deals(deals.clone(), Arc::new(move || *now.lock().unwrap()));
    let (stop, stop_rx) = watch::channel(false);
    let (client, server, addr) = serve(queries, stop_rx).await;
    Fixture {
        client,
        deals,
        feed,
        rows,
        clock,
        stop,
        server,
        addr,
        _dir: dir,
    }
}

async fn start() -> Fixture {
    start_with_capacity(projection::deals::DEFAULT_FEED_CAPACITY).await
}

fn req<T>(tenant: &str, message: T) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut()
        .insert(TENANT_METADATA_KEY, tenant.parse().unwrap());
    r
}

fn get(row: &Row) -> v1::GetDealRequest {
    v1::GetDealRequest {
        public_id: row.public_id().into(),
        created_at: row.created_at_text(),
    }
}

fn key_of(view: &v1::DealView) -> (String, DateTime<Utc>) {
    let deal = view.deal.as_ref().unwrap();
    (
        deal.public_id.clone(),
        recoup_proto::from_timestamp(deal.created_at.as_ref().unwrap()).unwrap(),
    )
}

fn keys(rows: &[&Row]) -> BTreeSet<(String, DateTime<Utc>)> {
    rows.iter().map(|r| r.key()).collect()
}

#[tokio::test]
async fn get_deal_answers_the_latest_content_with_its_facts_as_of_today() {
    let mut f = start().await;
    let view = f
        .client
        .get_deal(req(TENANT, get(&f.rows.a1)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        view,
        v1::DealView {
            deal: Some(f.rows.a1.deal.clone()),
            as_of: "2026-06-01".into(),
            dpd_days: Some(31),
            dpd_bucket: "31-60".into(),
            ptp_human: v1::PtpStatus::Open.into(),
            ptp_ai: v1::PtpStatus::None.into(),
        }
    );
    // The latest revision.
    let view = f
        .client
        .get_deal(req(TENANT, get(&f.rows.e1)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(view.deal.as_ref().unwrap().revision, 2);
    assert_eq!(view.deal, Some(f.rows.e1.deal.clone()));
    let view = f
        .client
        .get_deal(req(TENANT, get(&f.rows.c2)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            view.dpd_days,
            view.dpd_bucket.as_str(),
            view.ptp_human,
            view.ptp_ai
        ),
        (
            None,
            "unknown",
            v1::PtpStatus::Open.into(),
            v1::PtpStatus::Broken.into()
        )
    );

    // The same instant in another offset and without fractions finds the same deal.
    let same = v1::GetDealRequest {
        public_id: "b-a".into(),
        created_at: "2026-04-18T14:05:12+04:00".into(),
    };
    let view = f
        .client
        .get_deal(req(TENANT, same))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(view.deal, Some(f.rows.a1.deal.clone()));

    // Facts follow the clock's day.
    *f.clock.lock().unwrap() = instant(2026, 6, 6, 0, 0, 1, 0);
    let view = f
        .client
        .get_deal(req(TENANT, get(&f.rows.a1)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (view.as_of.as_str(), view.dpd_days, view.ptp_human),
        ("2026-06-06", Some(36), v1::PtpStatus::Kept.into())
    );
}

#[tokio::test]
async fn get_deal_of_an_unknown_deal_is_not_found_and_a_bad_request_is_invalid() {
    let mut f = start().await;
    for request in [
        // Another created_at of a known borrower.
        v1::GetDealRequest {
            public_id: "b-a".into(),
            created_at: "2026-04-18T10:05:12.000001Z".into(),
        },
        v1::GetDealRequest {
            public_id: "b-zz".into(),
            created_at: f.rows.a1.created_at_text(),
        },
    ] {
        let status = f.client.get_deal(req(TENANT, request)).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
    }
    // Another tenant's deal.
    let status = f
        .client
        .get_deal(req("other", get(&f.rows.a2)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");

    for (public_id, created_at, field) in [
        ("b-a", "18/04/2026", "created_at"),
        ("b-a", "2026-04-18", "created_at"),
        ("b-a", "2026-04-18T10:05:12", "created_at"),
        ("b-a", "", "created_at"),
        ("", "2026-04-18T10:05:12Z", "public_id"),
    ] {
        let request = v1::GetDealRequest {
            public_id: public_id.into(),
            created_at: created_at.into(),
        };
        let status = f.client.get_deal(req(TENANT, request)).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{created_at:?}: {status:?}"
        );
        assert!(status.message().contains(field), "{status:?}");
    }
    let status = f
        .client
        .get_deal(req("bad/tenant", get(&f.rows.a1)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
}

fn list(
    stage: &str,
    pipeline: &str,
    bucket: &str,
    dnc: Option<bool>,
    page_size: u32,
    page_token: &str,
) -> v1::ListDealsRequest {
    v1::ListDealsRequest {
        deal_stage_id: stage.into(),
        pipeline: pipeline.into(),
        dpd_bucket: bucket.into(),
        do_not_contact: dnc,
        page_size,
        page_token: page_token.into(),
    }
}

/// Every page of a listing; checks page sizes and that paging ends.
async fn list_pages(f: &mut Fixture, request: v1::ListDealsRequest) -> Vec<v1::DealView> {
    let mut out = Vec::new();
    let mut request = request;
    for _ in 0..100 {
        let page = f
            .client
            .list_deals(req(TENANT, request.clone()))
            .await
            .unwrap()
            .into_inner();
        let limit = match request.page_size {
            0 => 100,
            n => n as usize,
        };
        assert!(page.deals.len() <= limit);
        out.extend(page.deals);
        if page.next_page_token.is_empty() {
            return out;
        }
        request.page_token = page.next_page_token;
    }
    panic!("paging does not end");
}

#[tokio::test]
async fn list_deals_applies_every_given_filter_and_pages_through_each_match_once() {
    let mut f = start().await;
    let r = rows();
    let all = [&r.a1, &r.a2, &r.b1, &r.c1, &r.c2, &r.d1, &r.e1];
    let cases: Vec<(v1::ListDealsRequest, Vec<&Row>)> = vec![
        (list("", "", "", None, 0, ""), all.to_vec()),
        (
            list("stage_negotiation", "", "", None, 0, ""),
            vec![&r.a1, &r.b1, &r.c2, &r.e1],
        ),
        (
            list("", EARLY, "", None, 0, ""),
            vec![&r.a1, &r.a2, &r.b1, &r.e1],
        ),
        (
            list("stage_negotiation", EARLY, "", None, 0, ""),
            vec![&r.a1, &r.b1, &r.e1],
        ),
        (list("", "", "current", None, 0, ""), vec![&r.a2]),
        (list("", "", "1-30", None, 0, ""), vec![&r.c1]),
        (list("", "", "31-60", None, 0, ""), vec![&r.a1, &r.e1]),
        (list("", "", "61-90", None, 0, ""), vec![&r.d1]),
        (list("", "", "90+", None, 0, ""), vec![&r.b1]),
        (list("", "", "unknown", None, 0, ""), vec![&r.c2]),
        (list("", "", "", Some(true), 0, ""), vec![&r.a2, &r.c1]),
        (
            list("", "", "", Some(false), 0, ""),
            vec![&r.a1, &r.b1, &r.c2, &r.d1, &r.e1],
        ),
        (
            list("", EARLY, "31-60", Some(false), 0, ""),
            vec![&r.a1, &r.e1],
        ),
        (list("stage_negotiation", "", "", Some(true), 0, ""), vec![]),
        (
            list("stage_legal", LATE, "1-30", Some(true), 0, ""),
            vec![&r.c1],
        ),
        (list("nowhere", "", "", None, 0, ""), vec![]),
    ];
    for (request, expected) in cases {
        let whole = list_pages(&mut f, request.clone()).await;
        let whole_keys: Vec<_> = whole.iter().map(key_of).collect();
        assert_eq!(
            whole_keys.iter().cloned().collect::<BTreeSet<_>>(),
            keys(&expected),
            "{request:?}"
        );
        assert_eq!(
            whole_keys.len(),
            expected.len(),
            "{request:?}: a deal twice"
        );
        // Facts as of today.
        for view in &whole {
            assert_eq!(view.as_of, "2026-06-01");
        }
        // The same order one deal and two deals at a time.
        for page_size in [1, 2] {
            let paged = list_pages(
                &mut f,
                v1::ListDealsRequest {
                    page_size,
                    ..request.clone()
                },
            )
            .await;
            let paged_keys: Vec<_> = paged.iter().map(key_of).collect();
            assert_eq!(paged_keys, whole_keys, "{request:?}, pages of {page_size}");
        }
    }
    // Another tenant sees only its own.
    let page = f
        .client
        .list_deals(req("other", list("", "", "", None, 0, "")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.deals.len(), 1);
}

#[tokio::test]
async fn list_deals_keeps_the_day_of_its_first_page() {
    let mut f = start().await;
    let first = f
        .client
        .list_deals(req(TENANT, list("", "", "31-60", None, 1, "")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.deals.len(), 1);
    // The clock passes midnight between the pages; the listing stays on its day.
    *f.clock.lock().unwrap() = instant(2026, 6, 2, 0, 0, 1, 0);
    let second = f
        .client
        .list_deals(req(
            TENANT,
            list("", "", "31-60", None, 1, &first.next_page_token),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.deals.len(), 1);
    assert_eq!(second.deals[0].as_of, "2026-06-01");
    assert_eq!(second.next_page_token, "");
    let seen: BTreeSet<_> = first
        .deals
        .iter()
        .chain(&second.deals)
        .map(key_of)
        .collect();
    assert_eq!(seen, keys(&[&f.rows.a1, &f.rows.e1]));
    // A new listing uses the new day: a1 (DPD 32) and e1 (61 → 61-90) are elsewhere now.
    let fresh = list_pages(&mut f, list("", "", "31-60", None, 0, "")).await;
    assert_eq!(
        fresh.iter().map(key_of).collect::<BTreeSet<_>>(),
        keys(&[&f.rows.a1])
    );
}

#[tokio::test]
async fn list_deals_rejects_tokens_it_did_not_issue_unknown_buckets_and_big_pages() {
    let mut f = start().await;
    let page = f
        .client
        .list_deals(req(TENANT, list("", EARLY, "", None, 1, "")))
        .await
        .unwrap()
        .into_inner();
    let token = page.next_page_token;
    assert!(!token.is_empty());
    let mut tampered = token.clone().into_bytes();
    let last = tampered.len() - 3;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    for bad in [
        "garbage",
        "after:b-a",
        "AAAA",
        "!!!",
        tampered.as_str(),
        &token[..token.len() - 2],
    ] {
        let status = f
            .client
            .list_deals(req(TENANT, list("", EARLY, "", None, 1, bad)))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}: {status:?}");
        assert!(status.message().contains("page_token"), "{status:?}");
    }
    // A token is bound to the filters and the tenant it was issued for.
    for (tenant, request) in [
        (TENANT, list("", LATE, "", None, 1, &token)),
        (TENANT, list("", EARLY, "", Some(true), 1, &token)),
        (TENANT, list("stage_contact", EARLY, "", None, 1, &token)),
        ("other", list("", EARLY, "", None, 1, &token)),
    ] {
        let status = f.client.list_deals(req(tenant, request)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains("page_token"), "{status:?}");
    }
    // The page size may change between pages.
    let rest = f
        .client
        .list_deals(req(TENANT, list("", EARLY, "", None, 10, &token)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.deals.len(), 3);

    for bucket in ["91+", "Current", "1-31", " current"] {
        let status = f
            .client
            .list_deals(req(TENANT, list("", "", bucket, None, 0, "")))
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{bucket:?}: {status:?}"
        );
        assert!(status.message().contains("dpd_bucket"), "{status:?}");
    }
    let status = f
        .client
        .list_deals(req(TENANT, list("", "", "", None, 1001, "")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("page_size"), "{status:?}");
}

#[tokio::test]
async fn collections_funnel_counts_every_stage_of_every_pipeline() {
    let mut f = start().await;
    let stage = |pipeline: &str, stage: &str, deals, amount_minor| v1::FunnelStage {
        pipeline: pipeline.into(),
        deal_stage_id: stage.into(),
        deals,
        amount_minor,
    };
    let funnel = f
        .client
        .collections_funnel(req(TENANT, v1::CollectionsFunnelRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        funnel,
        v1::CollectionsFunnelResponse {
            stages: vec![
                stage("", "", 1, 0),
                stage(EARLY, "stage_contact", 1, 10_000),
                stage(EARLY, "stage_negotiation", 3, 925_001),
                stage(LATE, "stage_legal", 1, 700_000),
                stage(LATE, "stage_negotiation", 1, 300),
            ],
            deals: 7,
            amount_minor: 1_635_301,
        }
    );
    // A stage move shows at once.
    let moved = f
        .rows
        .c2
        .revise(|r| r.stage(LATE, "stage_legal").amount(700));
    f.apply(&[&moved]);
    let funnel = f
        .client
        .collections_funnel(req(TENANT, v1::CollectionsFunnelRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(funnel.stages.len(), 4);
    assert_eq!(funnel.stages[3], stage(LATE, "stage_legal", 2, 700_700));
    assert_eq!((funnel.deals, funnel.amount_minor), (7, 1_635_701));
    let empty = f
        .client
        .collections_funnel(req("nobody", v1::CollectionsFunnelRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(empty, v1::CollectionsFunnelResponse::default());
}

fn channel(
    name: &str,
    open: (u64, i64),
    kept: (u64, i64),
    broken: (u64, i64),
) -> v1::PtpChannelSummary {
    v1::PtpChannelSummary {
        channel: name.into(),
        open: open.0,
        open_amount_minor: open.1,
        kept: kept.0,
        kept_amount_minor: kept.1,
        broken: broken.0,
        broken_amount_minor: broken.1,
    }
}

#[tokio::test]
async fn ptp_summary_answers_any_day_and_today_by_default() {
    let mut f = start().await;
    let summary = |as_of: &str| {
        let request = req(
            TENANT,
            v1::PtpSummaryRequest {
                as_of: as_of.into(),
            },
        );
        let mut client = f.client.clone();
        async move { client.ptp_summary(request).await }
    };
    assert_eq!(
        summary("").await.unwrap().into_inner(),
        v1::PtpSummaryResponse {
            as_of: "2026-06-01".into(),
            channels: vec![
                channel("human", (2, 920_300), (0, 0), (1, 5_000)),
                channel("ai", (0, 0), (1, 10_000), (1, 300)),
            ],
        }
    );
    assert_eq!(
        summary("2026-06-02").await.unwrap().into_inner().channels,
        [
            channel("human", (1, 920_000), (1, 300), (1, 5_000)),
            channel("ai", (0, 0), (1, 10_000), (1, 300)),
        ]
    );
    assert_eq!(
        summary("2026-06-06").await.unwrap().into_inner().channels[0],
        channel("human", (0, 0), (2, 920_300), (1, 5_000))
    );
    assert_eq!(
        summary("2026-05-20").await.unwrap().into_inner().channels[1],
        channel("ai", (1, 10_000), (0, 0), (1, 300))
    );
    for bad in ["01/06/2026", "2026-13-01", "today"] {
        let status = summary(bad).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}: {status:?}");
        assert!(status.message().contains("as_of"), "{status:?}");
    }
    let empty = f
        .client
        .ptp_summary(req("nobody", v1::PtpSummaryRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        empty.channels,
        [
            channel("human", (0, 0), (0, 0), (0, 0)),
            channel("ai", (0, 0), (0, 0), (0, 0)),
        ]
    );
}

fn bucket(name: &str, deals: u64, amount_minor: i64) -> v1::DpdBucketTotals {
    v1::DpdBucketTotals {
        bucket: name.into(),
        deals,
        amount_minor,
    }
}

#[tokio::test]
async fn dpd_buckets_answer_any_day_and_today_by_default() {
    let mut f = start().await;
    let client = f.client.clone();
    let buckets = |as_of: &str| {
        let request = req(
            TENANT,
            v1::DpdBucketsRequest {
                as_of: as_of.into(),
            },
        );
        let mut client = client.clone();
        async move { client.dpd_buckets(request).await }
    };
    // Today is 2026-06-01: the DPD column of the fixture's table.
    assert_eq!(
        buckets("").await.unwrap().into_inner(),
        v1::DpdBucketsResponse {
            as_of: "2026-06-01".into(),
            buckets: vec![
                bucket("current", 1, 10_000),
                bucket("1-30", 1, 700_000),
                bucket("31-60", 2, 920_001),
                bucket("61-90", 1, 0),
                bucket("90+", 1, 5_000),
                bucket("unknown", 1, 300),
            ],
        }
    );
    // 29 days on, every dated deal has moved: a2 to 1-30, e1 to 61-90, d1 to 90+.
    assert_eq!(
        buckets("2026-06-30").await.unwrap().into_inner().buckets,
        [
            bucket("current", 0, 0),
            bucket("1-30", 2, 710_000),
            bucket("31-60", 1, 920_000),
            bucket("61-90", 1, 1),
            bucket("90+", 2, 5_000),
            bucket("unknown", 1, 300),
        ]
    );
    for bad in ["01/06/2026", "2026-02-30", "today"] {
        let status = buckets(bad).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}: {status:?}");
        assert!(status.message().contains("as_of"), "{status:?}");
    }
    let empty = f
        .client
        .dpd_buckets(req("nobody", v1::DpdBucketsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(empty.buckets.len(), 6);
    assert!(empty.buckets.iter().all(|b| b.deals == 0), "{empty:?}");
    // A revision with a new due date moves its deal out of its old bucket at once.
    let moved = f.rows.c1.revise(|r| r.due(day(2026, 6, 1)));
    f.apply(&[&moved]);
    let now = buckets("").await.unwrap().into_inner().buckets;
    assert_eq!(now[0], bucket("current", 2, 710_000));
    assert_eq!(now[1], bucket("1-30", 0, 0));
}

#[tokio::test]
async fn without_the_deals_read_model_the_deal_rpcs_are_a_failed_precondition() {
    let dir = TempDir::new().unwrap();
    let cases = CaseReadModel::open(dir.path()).unwrap();
    let accounts = AccountReadModel::open(&cases).unwrap();
    let (_stop, stop_rx) = watch::channel(false);
    let (mut client, _server, _) = serve(Queries::new(cases, accounts), stop_rx).await;
    let check = |status: tonic::Status| {
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        assert!(status.message().contains("deals read model"), "{status:?}");
    };
    check(
        client
            .get_deal(req(
                TENANT,
                v1::GetDealRequest {
                    public_id: "b".into(),
                    created_at: "2026-01-01T00:00:00Z".into(),
                },
            ))
            .await
            .unwrap_err(),
    );
    check(
        client
            .list_deals(req(TENANT, list("", "", "", None, 0, "")))
            .await
            .unwrap_err(),
    );
    check(
        client
            .collections_funnel(req(TENANT, v1::CollectionsFunnelRequest {}))
            .await
            .unwrap_err(),
    );
    check(
        client
            .dpd_buckets(req(TENANT, v1::DpdBucketsRequest::default()))
            .await
            .unwrap_err(),
    );
    check(
        client
            .ptp_summary(req(TENANT, v1::PtpSummaryRequest::default()))
            .await
            .unwrap_err(),
    );
    check(
        client
            .watch_do_not_contact(req(TENANT, v1::WatchDoNotContactRequest {}))
            .await
            .unwrap_err(),
    );
    // The case RPCs still answer.
    client
        .case_stats(req(TENANT, v1::CaseStatsRequest {}))
        .await
        .unwrap();
}

// ---- WatchDoNotContact ----

/// A client that follows the protocol, checking it as it goes.
#[derive(Debug, Default)]
struct Follower {
    list: BTreeSet<String>,
    /// The last change applied (or the snapshot's).
    sequence: u64,
    in_snapshot: bool,
    snapshots: usize,
    changes: Vec<(Kind, String, u64)>,
}

impl Follower {
    fn take(&mut self, update: v1::DoNotContactUpdate) {
        let kind = update.kind();
        match kind {
            Kind::SnapshotBegin => {
                self.list.clear();
                self.in_snapshot = true;
                self.snapshots += 1;
                // A fresh snapshot may skip changes, never go back.
                assert!(
                    update.sequence >= self.sequence,
                    "{update:?} after {}",
                    self.sequence
                );
                self.sequence = update.sequence;
            }
            Kind::Listed => {
                assert!(self.in_snapshot, "{update:?} outside a snapshot");
                assert_eq!(update.sequence, self.sequence);
                assert!(self.list.insert(update.public_id), "listed twice");
            }
            Kind::SnapshotEnd => {
                assert!(self.in_snapshot, "{update:?} outside a snapshot");
                assert_eq!(update.sequence, self.sequence);
                self.in_snapshot = false;
            }
            Kind::Added | Kind::Removed => {
                assert!(!self.in_snapshot, "{update:?} inside a snapshot");
                assert_eq!(
                    update.sequence,
                    self.sequence + 1,
                    "a change lost or repeated: {update:?}"
                );
                assert!(update.changed_at.is_some());
                self.sequence = update.sequence;
                if kind == Kind::Added {
                    assert!(
                        self.list.insert(update.public_id.clone()),
                        "{update:?}: listed already"
                    );
                } else {
                    assert!(
                        self.list.remove(&update.public_id),
                        "{update:?}: not listed"
                    );
                }
                self.changes.push((kind, update.public_id, update.sequence));
            }
            Kind::Unspecified => panic!("{update:?}"),
        }
    }

    /// Reads until the list is complete and includes change `sequence`.
    async fn follow_to(&mut self, stream: &mut Streaming<v1::DoNotContactUpdate>, sequence: u64) {
        tokio::time::timeout(PATIENCE, async {
            while self.in_snapshot || self.snapshots == 0 || self.sequence < sequence {
                let update = stream.message().await.unwrap().expect("stream ended");
                self.take(update);
            }
        })
        .await
        .expect("the stream stopped short");
    }
}

async fn watch(client: &mut QueryClient<Channel>) -> Streaming<v1::DoNotContactUpdate> {
    client
        .watch_do_not_contact(req(TENANT, v1::WatchDoNotContactRequest {}))
        .await
        .unwrap()
        .into_inner()
}

fn strings(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test]
async fn watch_do_not_contact_sends_the_list_then_every_change_as_batches_are_applied() {
    let mut f = start().await;
    let mut stream = watch(&mut f.client).await;
    // b-a (a2), b-c (c1), b-e (added, then removed by its second revision): 4 changes so far.
    let expected_snapshot = [
        (Kind::SnapshotBegin, ""),
        (Kind::Listed, "b-a"),
        (Kind::Listed, "b-c"),
        (Kind::SnapshotEnd, ""),
    ];
    for (kind, public_id) in expected_snapshot {
        let update = stream.message().await.unwrap().unwrap();
        assert_eq!(
            update,
            v1::DoNotContactUpdate {
                kind: kind.into(),
                public_id: public_id.into(),
                sequence: 4,
                changed_at: None,
            }
        );
    }

    let d1 = f.rows.d1.revise(|r| r.dnc(true));
    f.apply(&[&d1]);
    let a2 = f.rows.a2.revise(|r| r.dnc(false));
    f.apply(&[&a2]);
    // b-c has two flagged deals now: flagging c2 and unflagging c1 change nothing.
    let c2 = f.rows.c2.revise(|r| r.dnc(true));
    f.apply(&[&c2]);
    let c1 = f.rows.c1.revise(|r| r.dnc(false));
    f.apply(&[&c1]);
    // Another tenant's changes are not this tenant's.
    let other = Row::new("other", "b-x", instant(2026, 1, 1, 0, 0, 0, 0)).dnc(true);
    f.apply(&[&other]);
    let c2_off = c2.revise(|r| r.dnc(false));
    f.apply(&[&c2_off]);

    for (kind, row, sequence) in [
        (Kind::Added, &d1, 5),
        (Kind::Removed, &a2, 6),
        (Kind::Removed, &c2_off, 7),
    ] {
        let update = stream.message().await.unwrap().unwrap();
        assert_eq!(
            update,
            v1::DoNotContactUpdate {
                kind: kind.into(),
                public_id: row.public_id().into(),
                sequence,
                changed_at: Some(recoup_proto::to_timestamp(row.updated_at())),
            }
        );
    }

    // A second watcher starts from the list as it is now.
    let mut late = Follower::default();
    let mut second = watch(&mut f.client).await;
    late.follow_to(&mut second, 7).await;
    assert_eq!(late.list, strings(&["b-d"]));
    assert_eq!(late.changes, []);
}

/// Applies `batches` batches, each flipping the flag of a few borrowers' deals in a pseudo-random
/// pattern; answers the final list's sequence.
fn churn(deals: &DealReadModel, feed: &mut Feed, batches: usize, seed: u64) -> u64 {
    let mut state = seed;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as usize
    };
    let mut rows: Vec<Row> = (0..24)
        .map(|i| {
            Row::new(
                TENANT,
                &format!("churn-{}", i % 12),
                instant(2026, 1, 1, 0, 0, 0, i),
            )
        })
        .collect();
    for _ in 0..batches {
        let mut batch = Vec::new();
        for _ in 0..1 + next() % 4 {
            let i = next() % rows.len();
            let flagged = rows[i].deal.do_not_contact == Some(true);
            rows[i] = rows[i].revise(|r| r.dnc(!flagged));
            batch.push(rows[i].envelope());
        }
        deals
            .apply_batch(CLUSTER, DEALS_TOPIC, &feed.batch(batch))
            .unwrap();
    }
    deals.do_not_contact_list(TENANT).unwrap().sequence
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_change_is_lost_or_repeated_when_changes_race_the_subscriptions() {
    let mut f = start().await;
    let deals = f.deals.clone();
    let mut feed = std::mem::take(&mut f.feed);
    let writer = tokio::task::spawn_blocking(move || churn(&deals, &mut feed, 300, 7));
    // Watchers subscribe while the writer runs, each at whatever point it has reached.
    let mut watchers = Vec::new();
    while watchers.len() < 12 {
        let mut client = f.client.clone();
        watchers.push(tokio::spawn(async move {
            let stream = watch(&mut client).await;
            let mut follower = Follower::default();
            let mut stream = stream;
            // Take what comes while the writer runs.
            follower.follow_to(&mut stream, 0).await;
            (follower, stream)
        }));
        tokio::task::yield_now().await;
        if watchers.len() % 3 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let last = writer.await.unwrap();
    assert!(last > 4, "the churn changed the list");
    let expected: BTreeSet<String> = f
        .deals
        .do_not_contact_list(TENANT)
        .unwrap()
        .borrowers
        .into_iter()
        .collect();
    for watcher in watchers {
        let (mut follower, mut stream) = watcher.await.unwrap();
        follower.follow_to(&mut stream, last).await;
        assert_eq!(follower.sequence, last);
        assert_eq!(follower.list, expected);
        assert_eq!(follower.snapshots, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_falls_behind_gets_a_fresh_snapshot_and_ends_right() {
    // The feed keeps 2 batches of changes; the client reads nothing while 40 batches of 250
    // changes each are applied, far more than the transport buffers hold (HTTP/2 windows of
    // 64 KiB here: hyper's default of 2 MiB per stream would hold them all).
    let f = start_with_capacity(2).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", f.addr))
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let mut client = QueryClient::new(channel);
    let mut stream = watch(&mut client).await;
    let mut follower = Follower::default();
    follower.follow_to(&mut stream, 4).await;
    let deals = f.deals.clone();
    let last = tokio::task::spawn_blocking(move || {
        let mut feed = Feed::new();
        let mut rows: Vec<Row> = (0..250)
            .map(|i| {
                Row::new(
                    TENANT,
                    &format!("bulk-{i:03}"),
                    instant(2026, 1, 1, 0, 0, 0, 0),
                )
            })
            .collect();
        for _ in 0..40 {
            for row in rows.iter_mut() {
                let flagged = row.deal.do_not_contact == Some(true);
                *row = row.revise(|r| r.dnc(!flagged));
            }
            let batch = feed.batch(rows.iter().map(Row::envelope));
            deals.apply_batch(CLUSTER, DEALS_TOPIC, &batch).unwrap();
        }
        deals.do_not_contact_list(TENANT).unwrap().sequence
    })
    .await
    .unwrap();
    assert_eq!(last, 4 + 40 * 250);
    follower.follow_to(&mut stream, last).await;
    assert!(
        follower.snapshots >= 2,
        "no fresh snapshot: {}",
        follower.snapshots
    );
    // 40 flips: every bulk borrower is off the list again.
    assert_eq!(follower.list, strings(&["b-a", "b-c"]));
    assert_eq!(follower.sequence, last);
}

#[tokio::test]
async fn watch_do_not_contact_ends_when_the_server_shuts_down() {
    let mut f = start().await;
    let mut stream = watch(&mut f.client).await;
    let mut follower = Follower::default();
    follower.follow_to(&mut stream, 4).await;
    f.stop.send(true).unwrap();
    let end = tokio::time::timeout(PATIENCE, stream.message())
        .await
        .expect("the stream goes on after shutdown");
    match end {
        Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        Ok(None) => {}
        Ok(Some(update)) => panic!("an update after shutdown: {update:?}"),
    }
    // The server's graceful shutdown does not wait for the watcher.
    tokio::time::timeout(PATIENCE, f.server)
        .await
        .expect("the server waits for the watcher")
        .unwrap();
}

#[tokio::test]
async fn a_watcher_that_goes_away_stops_its_feed() {
    let mut f = start().await;
    assert_eq!(f.deals.watcher_count(), 0);
    let stream = watch(&mut f.client).await;
    assert_eq!(f.deals.watcher_count(), 1);
    drop(stream);
    tokio::time::timeout(PATIENCE, async {
        while f.deals.watcher_count() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the feed of a watcher that went away goes on");
    // Changes go on being applied and other watchers go on hearing them.
    let d1 = f.rows.d1.revise(|r| r.dnc(true));
    f.apply(&[&d1]);
    let mut follower = Follower::default();
    let mut stream = watch(&mut f.client).await;
    follower.follow_to(&mut stream, 5).await;
    assert_eq!(follower.list, strings(&["b-a", "b-c", "b-d"]));
}
