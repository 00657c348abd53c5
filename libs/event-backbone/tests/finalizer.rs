//! The finalizer against the embedded cluster (librdkafka's mock broker): entries come back in
//! the order their events were enqueued, with where each landed; a refusal closes it.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use event_backbone::EmbeddedKafka;
use event_backbone::finalizer::{AckFinalizer, Settlement};
use event_backbone::producer::Acknowledged;
use event_backbone::producer::{EventProducer, OutgoingEvent, ProducerSettings, PublishError};
use event_backbone::topics::{self, DEBT_CASES};

fn event<'a>(key: &'a str, value: &'a [u8]) -> OutgoingEvent<'a> {
    OutgoingEvent {
        topic: DEBT_CASES.name,
        key,
        value,
        event_id: "e",
        event_type: "T",
    }
}

fn producer(kafka: &EmbeddedKafka, message_timeout: Duration) -> EventProducer {
    let settings = ProducerSettings {
        message_timeout,
        ..ProducerSettings::default()
    };
    EventProducer::new(&kafka.kafka_config(), &settings, None).unwrap()
}

#[tokio::test]
async fn entries_come_back_in_enqueue_order_with_where_each_landed() {
    let kafka = EmbeddedKafka::start(topics::ALL).unwrap();
    let producer = producer(&kafka, Duration::from_secs(30));
    let mut finalizer = AckFinalizer::with_capacity(40);
    let keys: Vec<String> = (0..40).map(|i| format!("case-{}", i % 7)).collect();
    for (i, key) in keys.iter().enumerate() {
        assert!(finalizer.push(&producer, event(key, b"v"), i).await);
    }
    assert_eq!(finalizer.len(), 40);
    let settlement = finalizer.settle().await;
    assert!(settlement.is_complete());
    let entries: Vec<usize> = settlement.outcomes.iter().map(|(i, _)| *i).collect();
    assert_eq!(entries, (0..40).collect::<Vec<_>>());
    // One key, one partition, offsets growing in enqueue order.
    let mut last: std::collections::HashMap<&str, Acknowledged> = Default::default();
    for (i, ack) in &settlement.outcomes {
        let ack = ack.expect("acknowledged");
        if let Some(before) = last.insert(&keys[*i], ack) {
            assert_eq!(before.partition, ack.partition);
            assert!(before.offset < ack.offset);
        }
    }
    let (prefix, refusal) = settlement.prefix();
    assert_eq!(prefix.len(), 40);
    assert!(refusal.is_none());
}

#[tokio::test]
async fn a_refused_event_closes_the_finalizer_and_ends_the_prefix() {
    let kafka = EmbeddedKafka::start(topics::ALL).unwrap();
    let producer = producer(&kafka, Duration::from_secs(30));
    let mut finalizer = AckFinalizer::default();
    assert!(
        finalizer
            .push(&producer, event("a", b"first"), "first")
            .await
    );
    // Larger than librdkafka's message.max.bytes (1 MB): refused before it is enqueued.
    let huge = vec![b'x'; 2_000_000];
    assert!(!finalizer.push(&producer, event("a", &huge), "huge").await);
    assert!(finalizer.is_refused());
    // Nothing after a refusal is enqueued, so the order per key survives a retry.
    assert!(
        !finalizer
            .push(&producer, event("a", b"third"), "third")
            .await
    );
    assert_eq!(finalizer.len(), 1);
    let (prefix, refusal) = finalizer.settle().await.prefix();
    assert_eq!(
        prefix.iter().map(|(e, _)| *e).collect::<Vec<_>>(),
        ["first"]
    );
    assert!(
        matches!(refusal, Some(PublishError::Kafka(_))),
        "{refusal:?}"
    );
}

#[tokio::test]
async fn deliveries_that_time_out_are_refusals() {
    let kafka = EmbeddedKafka::start(topics::ALL).unwrap();
    let producer = producer(&kafka, Duration::from_secs(1));
    kafka.set_broker_down(true).unwrap();
    let mut finalizer = AckFinalizer::default();
    for i in 0..3 {
        assert!(finalizer.push(&producer, event("k", b"v"), i).await);
    }
    let settlement = finalizer.settle().await;
    assert!(!settlement.is_complete());
    assert!(settlement.outcomes.iter().all(|(_, ack)| ack.is_none()));
    let (acknowledged, refusal) = settlement.acknowledged();
    assert!(acknowledged.is_empty());
    assert!(refusal.is_some());
}

#[test]
fn the_prefix_stops_at_the_first_refusal_and_the_acknowledged_do_not() {
    let at = |offset| {
        Some(Acknowledged {
            partition: 0,
            offset,
        })
    };
    let settlement = || Settlement {
        outcomes: vec![(1, at(10)), (2, at(11)), (3, None), (4, at(13))],
        refusal: Some(PublishError::Canceled),
    };
    let (prefix, refusal) = settlement().prefix();
    assert_eq!(prefix.iter().map(|(e, _)| *e).collect::<Vec<_>>(), [1, 2]);
    assert!(refusal.is_some());
    let (acknowledged, _) = settlement().acknowledged();
    assert_eq!(
        acknowledged.iter().map(|(e, _)| *e).collect::<Vec<_>>(),
        [1, 2, 4]
    );
    assert_eq!(acknowledged[2].1.offset, 13);
}
