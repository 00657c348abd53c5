//! Every metric is registered under the name and help text dashboards rely on.

use recoup_metrics::{
    GrpcLabel, OutcomeLabel, PartitionLabel, StatusLabel, count_topic, metrics, render,
};

#[test]
fn every_metric_is_rendered_with_its_name_and_help() {
    // A family is rendered once it has a series.
    let m = metrics();
    count_topic(&m.events_published, "t", 1);
    count_topic(&m.events_publish_failed, "t", 1);
    count_topic(&m.events_consumed, "t", 1);
    let partition = PartitionLabel {
        topic: "t".to_owned(),
        partition: 0,
    };
    m.consumer_lag.get_or_create(&partition).set(3);
    let accepted = OutcomeLabel {
        outcome: "accepted",
    };
    m.import_rows.get_or_create(&accepted).inc();
    m.pull_rows.get_or_create(&accepted).inc();
    let ok = StatusLabel {
        status: "200".to_owned(),
    };
    m.pull_pages.get_or_create(&ok).inc();
    let grpc = GrpcLabel {
        method: "m".to_owned(),
        code: "0".to_owned(),
    };
    m.grpc_duration.get_or_create(&grpc).observe(0.001);
    m.kafka_up.set(1);
    let text = render();
    for (name, help) in [
        ("recoup_events_published", "Events Kafka acknowledged"),
        (
            "recoup_events_publish_failed",
            "Events Kafka did not take (kept and sent again)",
        ),
        (
            "recoup_events_consumed",
            "Messages received by the projections",
        ),
        (
            "recoup_consumer_lag",
            "Messages behind the end of each partition this process holds",
        ),
        (
            "recoup_outbox_depth",
            "Events stored but not yet acknowledged by Kafka",
        ),
        ("recoup_import_rows", "Snapshot rows imported, by outcome"),
        ("recoup_pull_pages", "Export API answers, by HTTP status"),
        ("recoup_pull_rows", "Exported rows pulled, by outcome"),
        (
            "recoup_grpc_request_duration_seconds",
            "gRPC requests: time to the response headers",
        ),
        (
            "recoup_kafka_up",
            "1 while the Kafka cluster answers the probe",
        ),
    ] {
        assert!(
            text.contains(&format!("# HELP {name} {help}.\n"))
                || text.contains(&format!("# HELP {name} {help}\n")),
            "{name} with its help in:\n{text}"
        );
    }
    assert!(text.contains("\nrecoup_kafka_up 1\n"), "{text}");
}
