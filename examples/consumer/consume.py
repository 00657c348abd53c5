#!/usr/bin/env python3
"""A Kafka consumer of recoup's events, as a warehouse loader or a dialer would write one.

It reads recoup's topics from the beginning, decodes every message with the contract that
`recoup schema export DIR` writes (the descriptor set: no generated code), and follows the
contract's rules: the headers name the event before it is decoded, an event id seen before is
a duplicate and is dropped, a debt case's events come in version order per key, a schema
version newer than this consumer knows is set aside, not guessed at.

    pip install confluent-kafka protobuf
    recoup schema export ./contract
    python consume.py --brokers 127.0.0.1:39481 --schema ./contract

Prints one line per event and a summary; exits 1 if a message could not be read.
"""

import argparse
import sys
import time

from confluent_kafka import Consumer, TopicPartition
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2

TOPICS = [
    "recoup.debt-cases.v1",
    "recoup.paygo-snapshots.v1",
    "recoup.collections-deals.v1",
    "recoup.rejects.v1",
    "recoup.paygo-metrics.v1",
]
# The payload message of each event type, and the newest schema version this consumer reads
# (CONTRACT.md lists them).
EVENTS = {
    "DebtCaseCreated": ("DebtCaseCreated", 2),
    "DebtCaseUpdated": ("DebtCaseUpdated", 1),
    "DebtCaseReviewed": ("DebtCaseReviewed", 1),
    "DebtCasePrepared": ("DebtCasePrepared", 1),
    "DebtCaseProcessingStarted": ("DebtCaseProcessingStarted", 1),
    "DebtCasePaymentReceiptAdded": ("DebtCasePaymentReceiptAdded", 1),
    "DebtCaseClosed": ("DebtCaseClosed", 1),
    "DebtCaseFailed": ("DebtCaseFailed", 1),
    "DebtCaseDeleted": ("DebtCaseDeleted", 1),
    "AccountSnapshotRecorded": ("AccountSnapshotRecorded", 1),
    "RowRejected": ("RowRejected", 1),
    "CollectionsDealObserved": ("CollectionsDealObserved", 1),
    "ExportRowRejected": ("ExportRowRejected", 1),
    "AccountMetricsCalculated": ("AccountMetricsCalculated", 1),
}


def message_classes(schema_dir):
    """recoup.v1's message classes, from the exported descriptor set."""
    fds = descriptor_pb2.FileDescriptorSet()
    with open(f"{schema_dir}/recoup.binpb", "rb") as f:
        fds.ParseFromString(f.read())
    pool = descriptor_pool.DescriptorPool()
    names = {f.name for f in fds.file}
    if "google/protobuf/timestamp.proto" not in names:
        pool.Add(descriptor_pb2.FileDescriptorProto.FromString(
            timestamp_pb2.DESCRIPTOR.serialized_pb))
    for file in fds.file:
        pool.Add(file)

    def cls(name):
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"recoup.v1.{name}"))
    return cls


def summary_of(event_type, payload):
    """A few fields worth a glance, per kind of event."""
    if event_type == "DebtCaseCreated":
        return f"reference={payload.content.reference} creator={payload.creator or '-'}"
    if event_type == "AccountSnapshotRecorded":
        return f"account={payload.snapshot.account_external_id} day={payload.snapshot.snapshot_date} revision={payload.revision}"
    if event_type == "CollectionsDealObserved":
        return f"deal={payload.public_id} dnc={payload.do_not_contact}"
    if event_type == "RowRejected":
        return f"row={payload.row} rules={','.join(e.rule for e in payload.errors)}"
    return ""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--schema", required=True, help="the directory `recoup schema export` wrote")
    parser.add_argument("--idle-seconds", type=float, default=3.0,
                        help="stop once nothing arrived for this long")
    parser.add_argument("--expect", default="",
                        help="comma-separated event types that must have been read (exit 1 otherwise)")
    args = parser.parse_args()

    cls = message_classes(args.schema)
    Envelope = cls("EventEnvelope")
    consumer = Consumer({
        "bootstrap.servers": args.brokers,
        "group.id": "recoup-example-consumer",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    })
    partitions = []
    for topic in TOPICS:
        metadata = consumer.list_topics(topic, timeout=10)
        for p in metadata.topics[topic].partitions:
            partitions.append(TopicPartition(topic, p, 0))
    consumer.assign(partitions)

    seen_ids, versions, counts = set(), {}, {}
    failures = duplicates = set_aside = 0
    last = time.monotonic()
    while time.monotonic() - last < args.idle_seconds:
        msg = consumer.poll(0.2)
        if msg is None:
            continue
        if msg.error():
            print(f"error: {msg.error()}", file=sys.stderr)
            failures += 1
            continue
        last = time.monotonic()
        headers = {k: v.decode() for k, v in (msg.headers() or [])}
        try:
            envelope = Envelope.FromString(msg.value())
        except Exception as e:  # noqa: BLE001 - any undecodable message is reported
            print(f"{msg.topic()}/{msg.partition()}@{msg.offset()}: not an EventEnvelope: {e}", file=sys.stderr)
            failures += 1
            continue
        if headers.get("recoup-event-id") != envelope.event_id or headers.get("recoup-event-type") != envelope.event_type:
            print(f"{msg.topic()}/{msg.partition()}@{msg.offset()}: headers {headers} do not match the envelope", file=sys.stderr)
            failures += 1
            continue
        if envelope.event_id in seen_ids:
            duplicates += 1
            continue
        seen_ids.add(envelope.event_id)
        known = EVENTS.get(envelope.event_type)
        version = envelope.schema_version or 1
        if known is None or version > known[1]:
            print(f"set aside: {envelope.event_type} v{version} is newer than this consumer reads")
            set_aside += 1
            continue
        payload = cls(known[0]).FromString(envelope.payload)
        if envelope.aggregate_type == "debt_case":
            key = (envelope.tenant, envelope.aggregate_id)
            expected = versions.get(key, 0) + 1
            if envelope.aggregate_version != expected:
                print(f"{key}: version {envelope.aggregate_version} after {expected - 1}", file=sys.stderr)
                failures += 1
            versions[key] = max(versions.get(key, 0), envelope.aggregate_version)
        counts[envelope.event_type] = counts.get(envelope.event_type, 0) + 1
        print(f"{msg.topic()} {msg.partition()}@{msg.offset()} key={msg.key().decode(errors='replace')} "
              f"{envelope.event_type} v{version} tenant={envelope.tenant} "
              f"{envelope.aggregate_id}@{envelope.aggregate_version} {summary_of(envelope.event_type, payload)}")
    consumer.close()

    missing = [t for t in args.expect.split(",") if t and t not in counts]
    print(f"read {sum(counts.values())} events ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}); "
          f"{duplicates} duplicates dropped, {set_aside} set aside, {failures} unreadable")
    if missing:
        print(f"expected but not read: {', '.join(missing)}", file=sys.stderr)
    sys.exit(1 if failures or missing else 0)


if __name__ == "__main__":
    main()
