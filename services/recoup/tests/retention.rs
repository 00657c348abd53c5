//! The embedded broker keeps only about 5 MiB per partition and drops older data silently.
//! Writing far more than that as fast as the API takes it must still bring every event into the
//! read model: flow control holds the relay back while the projection is behind.
#![allow(clippy::unwrap_used)]

mod common;

use projection::Projection;
use std::time::Duration;

use common::*;
use recoup_proto::v1;

const CASES: usize = 50_000;
const WRITERS: usize = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn far_more_than_the_broker_retains_reaches_the_read_model() {
    let dir = tempfile::tempdir().unwrap();
    let p = start(config(dir.path())).await;
    let ch = channel(&p).await;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let mut cases = Cases::new(ch.clone());
        writers.push(tokio::spawn(async move {
            let mut amount = 0i64;
            for i in (w..CASES).step_by(WRITERS) {
                let reference = format!("R-{i:06}-{}", "x".repeat(64));
                let c = create(&mut cases, "t", &reference, 100 + i as i64).await;
                let c = case_of(cases.mark_reviewed(req("t", cmd(&c))).await).unwrap();
                let c = case_of(cases.mark_prepared(req("t", cmd(&c))).await).unwrap();
                cases.close_case(req("t", cmd(&c))).await.unwrap();
                amount += 100 + i as i64;
            }
            amount
        }));
    }
    let started = std::time::Instant::now();
    let mut amount = 0;
    for w in writers {
        amount += w.await.unwrap();
    }
    eprintln!("{} commands accepted in {:?}", CASES * 4, started.elapsed());
    // 200,000 events of several hundred bytes: many times the broker's retention.
    let (_, mut query) = clients(&p).await;
    let complete = eventually(Duration::from_secs(120), || {
        let mut q = query.clone();
        async move { stats_of(&mut q, "t", v1::CaseState::Closed).await.0 == CASES as u64 }
    })
    .await;
    let closed = stats_of(&mut query, "t", v1::CaseState::Closed).await;
    assert!(
        complete,
        "only {} of {CASES} cases reached the read model",
        closed.0
    );
    assert_eq!(closed, (CASES as u64, amount, 0));
    for state in [
        v1::CaseState::Reviewing,
        v1::CaseState::Preparing,
        v1::CaseState::Pending,
    ] {
        assert_eq!(stats_of(&mut query, "t", state).await.0, 0, "{state:?}");
    }
    assert_eq!(p.read_model().unwrap().rejected_count(), 0);
    p.shutdown().await.unwrap();
}
