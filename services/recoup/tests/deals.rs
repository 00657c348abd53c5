//! Collections deals end to end in one process: the puller pulls a simulated vendor, the
//! projection builds the deals read models, `recoup.v1.Query` serves them over loopback gRPC.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::SecondsFormat;
use common::*;
use export_puller::dataset;
use export_puller::normalise::{Normalised, fingerprint, normalise};
use export_sim::{SimConfig, Simulator};
use recoup_proto::v1;
use tempfile::TempDir;

const TENANT: &str = "acme";

fn sim_config(rows: usize) -> SimConfig {
    SimConfig {
        rows,
        lender: "acme".to_owned(),
        lender_public_id: "lender-acme-0001".to_owned(),
        email: "ops@acme.example".to_owned(),
        password: "s3cret".to_owned(),
        malformed_share: 0.01,
        ..SimConfig::default()
    }
}

/// What the simulator holds now: (public_id, created_at RFC 3339) → content fingerprint.
fn expected(sim: &Simulator) -> BTreeMap<(String, String), u128> {
    let d16 = dataset::d16();
    let lender = sim.config().lender_public_id.clone();
    sim.latest()
        .iter()
        .filter_map(|raw| normalise(&d16, raw).ok())
        .map(|row| {
            let Some(Normalised::Instant(created_at)) = row.value(&d16, "created_at") else {
                panic!("created_at is an instant");
            };
            (
                (
                    row.partition.clone(),
                    created_at.to_rfc3339_opts(SecondsFormat::Micros, true),
                ),
                fingerprint(&row.to_deal(&d16, &lender)),
            )
        })
        .collect()
}

async fn funnel(query: &mut Query) -> v1::CollectionsFunnelResponse {
    query
        .collections_funnel(req(TENANT, v1::CollectionsFunnelRequest {}))
        .await
        .unwrap()
        .into_inner()
}

/// Every deal of the tenant, through ListDeals pages.
async fn all_deals(query: &mut Query) -> BTreeMap<(String, String), v1::CollectionsDealObserved> {
    let mut out = BTreeMap::new();
    let mut token = String::new();
    loop {
        let page = query
            .list_deals(req(
                TENANT,
                v1::ListDealsRequest {
                    page_size: 1000,
                    page_token: token.clone(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        for view in page.deals {
            let deal = view.deal.unwrap();
            let created = deal.created_at.as_ref().unwrap();
            let at = chrono::DateTime::from_timestamp(created.seconds, created.nanos as u32)
                .unwrap()
                .to_rfc3339_opts(SecondsFormat::Micros, true);
            assert!(
                out.insert((deal.public_id.clone(), at), deal).is_none(),
                "no deal listed twice"
            );
        }
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
}

/// Waits until the read model holds exactly the simulator's latest contents.
async fn converged(query: &Query, sim: &Simulator) -> bool {
    let want = expected(sim);
    eventually(Duration::from_secs(30), || {
        let mut q = query.clone();
        let want = want.clone();
        async move {
            if funnel(&mut q).await.deals != want.len() as u64 {
                return false;
            }
            let have: BTreeMap<_, _> = all_deals(&mut q)
                .await
                .into_iter()
                .map(|(k, d)| (k, fingerprint(&d)))
                .collect();
            have == want
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulled_deals_reach_the_query_api_and_follow_the_vendor() {
    let sim_config = sim_config(1500);
    let sim = Simulator::new(sim_config.clone());
    let running = sim.start(([127, 0, 0, 1], 0).into()).await.unwrap();
    let dir = TempDir::new().unwrap();
    let mut config = config(dir.path());
    config.pull = Some(pull_settings(&running.base_url(), &sim_config, false));
    let platform = start(config).await;
    let (_, mut query) = clients(&platform).await;

    assert!(converged(&query, &sim).await, "every deal arrives");
    let want = expected(&sim);
    let funnel_now = funnel(&mut query).await;
    assert_eq!(
        funnel_now.stages.iter().map(|s| s.deals).sum::<u64>(),
        want.len() as u64
    );

    // One deal by its key, with the facts derived as of today.
    let ((public_id, created_at), _) = want.iter().next().unwrap();
    let view = query
        .get_deal(req(
            TENANT,
            v1::GetDealRequest {
                public_id: public_id.clone(),
                created_at: created_at.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let deal = view.deal.unwrap();
    assert_eq!(&deal.public_id, public_id);
    assert_eq!(deal.dataset, "S3/D16");
    assert!(!view.dpd_bucket.is_empty());

    // The do-not-contact stream begins with the current list.
    let dnc: BTreeSet<String> = all_deals(&mut query)
        .await
        .values()
        .filter(|d| d.do_not_contact == Some(true))
        .map(|d| d.public_id.clone())
        .collect();
    let mut watch = query
        .watch_do_not_contact(req(TENANT, v1::WatchDoNotContactRequest {}))
        .await
        .unwrap()
        .into_inner();
    let mut listed = BTreeSet::new();
    loop {
        let update = watch.message().await.unwrap().unwrap();
        match v1::do_not_contact_update::Kind::try_from(update.kind).unwrap() {
            v1::do_not_contact_update::Kind::SnapshotBegin => {}
            v1::do_not_contact_update::Kind::Listed => {
                listed.insert(update.public_id);
            }
            v1::do_not_contact_update::Kind::SnapshotEnd => break,
            other => panic!("{other:?} before the end of the snapshot"),
        }
    }
    assert_eq!(listed, dnc);

    // The vendor's rows move on: the continuous pull brings the read model along.
    sim.mutate(200);
    sim.add_rows(50);
    assert!(
        converged(&query, &sim).await,
        "changes and new deals arrive"
    );
    drop(watch);
    platform.shutdown().await.unwrap();
}

/// The embedded broker is memory: deals it acknowledged but the projection had not taken when
/// the process ended are gone. The next start notices, moves the pull back before them and
/// publishes them again with revisions the read model does not skip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deals_lost_with_the_embedded_broker_are_pulled_again() {
    let sim_config = sim_config(800);
    let sim = Simulator::new(sim_config.clone());
    let running = sim.start(([127, 0, 0, 1], 0).into()).await.unwrap();
    let dir = TempDir::new().unwrap();
    let with_pull = || {
        let mut c = config(dir.path());
        c.pull = Some(pull_settings(&running.base_url(), &sim_config, false));
        c
    };

    // Run 1: everything arrives; a clean shutdown.
    let platform = start(with_pull()).await;
    let (_, query) = clients(&platform).await;
    assert!(converged(&query, &sim).await);
    platform.shutdown().await.unwrap();

    // Run 2: changes are pulled and acknowledged by the embedded broker, never projected.
    sim.mutate(60);
    sim.add_rows(20);
    let mut cfg = with_pull();
    cfg.projection.deals = false;
    cfg.drain_timeout = Duration::from_millis(300);
    let platform = start(cfg).await;
    let store = platform.pull_store().unwrap().clone();
    let stream = export_puller::store::StreamId::new(TENANT, "S3/D16");
    let want = expected(&sim).len();
    assert!(
        eventually(Duration::from_secs(20), || {
            let store = store.clone();
            let stream = stream.clone();
            async move { store.fingerprint_count(&stream).unwrap() == want }
        })
        .await,
        "the puller published the changes"
    );
    drop(store);
    platform.shutdown().await.unwrap();

    // Run 3: the lost deals are pulled again and reach the read model.
    let platform = start(with_pull()).await;
    let (_, query) = clients(&platform).await;
    assert!(converged(&query, &sim).await, "the lost changes arrive");
    platform.shutdown().await.unwrap();
}

/// A crash can take the commit of a page whose deals the read model already has: the store
/// forgot them. The next start counts on from the read model's revisions, so their later
/// contents are not skipped there as old.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deals_the_store_forgot_count_on_from_the_read_models_revision() {
    let sim_config = sim_config(600);
    let sim = Simulator::new(sim_config.clone());
    let running = sim.start(([127, 0, 0, 1], 0).into()).await.unwrap();
    let dir = TempDir::new().unwrap();
    let with_pull = || {
        let mut c = config(dir.path());
        c.pull = Some(pull_settings(&running.base_url(), &sim_config, false));
        c
    };
    let platform = start(with_pull()).await;
    let (_, query) = clients(&platform).await;
    assert!(converged(&query, &sim).await);
    platform.shutdown().await.unwrap();

    // As a crash leaves it: no clean mark, and no fingerprint of what was published.
    {
        let store =
            export_puller::store::PullStore::open(&dir.path().join("export-puller")).unwrap();
        let stream = export_puller::store::StreamId::new(TENANT, "S3/D16");
        assert!(store.take_clean_mark().unwrap());
        let keys: Vec<String> = store
            .fingerprints(&stream)
            .unwrap()
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        assert!(keys.len() > 500);
        store.rewind(&stream, &keys, &[], None).unwrap();
        store.flush().unwrap();
    }
    sim.mutate(40);
    tokio::time::sleep(Duration::from_millis(100)).await;

    let platform = start(with_pull()).await;
    let (_, query) = clients(&platform).await;
    assert!(converged(&query, &sim).await, "the changed deals arrive");
    platform.shutdown().await.unwrap();
}

/// A do-not-contact watch and the list it has shown so far.
struct Watched {
    stream: tonic::Streaming<v1::DoNotContactUpdate>,
    list: BTreeSet<String>,
    snapshot_done: bool,
}

/// Follows `watch` until, after a whole snapshot, `until` holds of the list it shows (or 30 s
/// pass: `None`).
async fn watched_list(
    watch: &mut Watched,
    mut until: impl FnMut(&BTreeSet<String>) -> bool,
) -> Option<BTreeSet<String>> {
    use v1::do_not_contact_update::Kind;
    let Watched {
        stream,
        list,
        snapshot_done,
    } = watch;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if *snapshot_done && until(list) {
            return Some(list.clone());
        }
        let update = tokio::time::timeout_at(deadline, stream.message())
            .await
            .ok()?
            .unwrap()?;
        match Kind::try_from(update.kind).unwrap() {
            Kind::SnapshotBegin => {
                list.clear();
                *snapshot_done = false;
            }
            Kind::Listed | Kind::Added => {
                list.insert(update.public_id);
            }
            Kind::Removed => {
                list.remove(&update.public_id);
            }
            Kind::SnapshotEnd => *snapshot_done = true,
            Kind::Unspecified => panic!("an update without a kind"),
        }
    }
}

/// The borrowers of the tenant of `authorization` whose deals say do-not-contact.
async fn dnc_list(mut query: Query, authorization: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut token = String::new();
    loop {
        let list = v1::ListDealsRequest {
            page_size: 1000,
            page_token: token,
            ..Default::default()
        };
        let page = query
            .list_deals(req_as(TENANT, list, Some(authorization)))
            .await
            .unwrap()
            .into_inner();
        out.extend(
            page.deals
                .into_iter()
                .filter_map(|v| v.deal)
                .filter(|d| d.do_not_contact == Some(true))
                .map(|d| d.public_id),
        );
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
}

/// Two tenants on a platform with keys: one's deals arrive and change, the other's viewer sees
/// none of them, through the deal queries or its do-not-contact watch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_deals_and_do_not_contact_list_stay_out_of_sight() {
    use recoup_access::{KeySpec, Role};
    let sim_config = sim_config(300);
    let sim = Simulator::new(sim_config.clone());
    let running = sim.start(([127, 0, 0, 1], 0).into()).await.unwrap();
    let dir = TempDir::new().unwrap();
    let mut config = secured(dir.path());
    config.pull = Some(pull_settings(&running.base_url(), &sim_config, false));
    let platform = start(config).await;
    let registry = platform.keys().unwrap();
    let mut viewer = BTreeMap::new();
    for tenant in [TENANT, "globex"] {
        let spec = KeySpec {
            name: format!("{tenant}-viewer"),
            tenants: vec![tenant.to_owned()],
            role: Role::Viewer,
            expires_at: None,
            created_by: "test".to_owned(),
        };
        let issued = registry.create(&spec, chrono::Utc::now()).await.unwrap();
        viewer.insert(tenant, format!("Bearer {}", issued.key));
    }
    let (acme, globex) = (
        Some(viewer[TENANT].as_str()),
        Some(viewer["globex"].as_str()),
    );
    let (_, mut query) = clients(&platform).await;

    // acme's list, as the deals say and as its watch shows it, once every deal arrived.
    let want = expected(&sim).len() as u64;
    let arrived = eventually(Duration::from_secs(30), || {
        let mut q = query.clone();
        let r = req_as(TENANT, v1::CollectionsFunnelRequest {}, acme);
        async move { q.collections_funnel(r).await.unwrap().into_inner().deals == want }
    })
    .await;
    assert!(arrived, "acme's deals arrive");
    let before = dnc_list(query.clone(), &viewer[TENANT]).await;
    assert!(!before.is_empty(), "the simulator lists some borrowers");
    let watch = |tenant: &str, auth| {
        let mut q = query.clone();
        let r = req_as(tenant, v1::WatchDoNotContactRequest {}, auth);
        async move {
            Watched {
                stream: q.watch_do_not_contact(r).await.unwrap().into_inner(),
                list: BTreeSet::new(),
                snapshot_done: false,
            }
        }
    };
    let mut acme_watch = watch(TENANT, acme).await;
    let shown = watched_list(&mut acme_watch, |l| *l == before).await;
    assert_eq!(shown.as_ref(), Some(&before));

    // globex's viewer: an empty snapshot, no deals, no funnel.
    let mut globex_watch = watch("globex", globex).await;
    let empty = watched_list(&mut globex_watch, |_| true).await;
    assert_eq!(empty, Some(BTreeSet::new()));
    let listed = query
        .list_deals(req_as("globex", v1::ListDealsRequest::default(), globex))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.deals.is_empty());
    let funnel = query
        .collections_funnel(req_as("globex", v1::CollectionsFunnelRequest {}, globex))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(funnel.deals, 0);
    let ((public_id, created_at), _) = expected(&sim).into_iter().next().unwrap();
    let get = v1::GetDealRequest {
        public_id,
        created_at,
    };
    let refused = query
        .get_deal(req_as("globex", get, globex))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::NotFound);

    // acme's list changes: its watch follows, globex's stays silent.
    sim.mutate(300);
    assert!(
        eventually(Duration::from_secs(30), || {
            let q = query.clone();
            let before = before.clone();
            let auth = viewer[TENANT].clone();
            async move { dnc_list(q, &auth).await != before }
        })
        .await,
        "some borrower's do-not-contact flag changes"
    );
    let after = dnc_list(query.clone(), &viewer[TENANT]).await;
    let followed = watched_list(&mut acme_watch, |l| *l == after).await;
    assert_eq!(followed.as_ref(), Some(&after), "acme's watch follows");
    let silent =
        tokio::time::timeout(Duration::from_millis(500), globex_watch.stream.message()).await;
    assert!(silent.is_err(), "globex's watch showed {silent:?}");
    drop((acme_watch, globex_watch));
    platform.shutdown().await.unwrap();
}
