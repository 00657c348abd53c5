//! A projector stops when told, and when whoever could tell it is gone.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use event_backbone::EmbeddedKafka;
use event_backbone::consumer::EventConsumer;
use event_backbone::topics::{self, DEBT_CASES};
use projection::{CaseReadModel, Projector};
use tokio::sync::watch;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_whose_stop_sender_is_gone_stops() {
    let kafka = EmbeddedKafka::start(topics::ALL).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let read_model = CaseReadModel::open(dir.path()).unwrap();
    let consumer =
        EventConsumer::new(&kafka.kafka_config(), "test", DEBT_CASES.name, None).unwrap();
    let projector = Projector::start(
        read_model,
        consumer,
        kafka.cluster_id().to_owned(),
        DEBT_CASES.name,
    )
    .unwrap();
    let (stop, stopped) = watch::channel(false);
    drop(stop);
    tokio::time::timeout(Duration::from_secs(30), projector.run(stopped))
        .await
        .expect("the projector ends")
        .unwrap();
}
