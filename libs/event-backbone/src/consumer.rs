//! Consuming events with offsets the caller keeps (in its own store, beside what it derived).
//!
//! Two ways to get partitions: [`EventConsumer::assign`] takes every partition named (one
//! process reads them all), [`EventConsumer::subscribe`] joins the consumer group and takes
//! what the group hands over. Either way each partition starts at the offset the caller's store
//! names, not at the group's committed offset: the store commits its offsets atomically with
//! what it derived, so nothing is applied twice nor skipped, whichever member held the partition
//! before.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use futures::FutureExt;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::config::KafkaConfig;
use crate::flow::FlowGate;

/// One message as received.
#[derive(Debug, Clone)]
pub struct ReceivedEvent {
    pub partition: i32,
    pub offset: i64,
    pub key: Vec<u8>,
    /// An encoded `EventEnvelope`, or whatever a foreign producer wrote.
    pub value: Vec<u8>,
}

/// How long the embedded cluster may hold a fetch, in ms (see [`EventConsumer::new_eager`]).
const EMBEDDED_FETCH_WAIT_MS: &str = "5";

/// What a consumer prefetches at most, in KiB, unless the operator says otherwise.
pub const CONSUMER_PREFETCH_KIB: &str = "8192";

/// Where each of the given partitions starts: the next offset to read, `None` for the beginning.
pub type StartOffsets = Arc<dyn Fn(&[i32]) -> Vec<(i32, Option<i64>)> + Send + Sync>;

/// How far a consumer is behind, as of its last statistics (every 5 s): per partition it holds,
/// the partition's end less the next offset handed to the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lag {
    /// Messages behind, by partition.
    pub partitions: BTreeMap<i32, i64>,
    /// Partitions held whose end or position is not known yet (just taken, not yet fetched).
    pub unknown: BTreeSet<i32>,
    pub measured_at: SystemTime,
}

/// A consumer's [`Lag`], shared: readable while the consumer runs in a task of its own.
#[derive(Debug, Clone, Default)]
pub struct LagView(Arc<Mutex<Option<Lag>>>);

impl LagView {
    /// The last measure; `None` before the consumer's first statistics and once the consumer
    /// is gone (a stopped consumer lags by nothing anyone can measure).
    pub fn last(&self) -> Option<Lag> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, lag: Lag) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(lag);
    }

    fn forget(&self, partitions: &[i32]) {
        if let Some(lag) = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
        {
            for partition in partitions {
                lag.partitions.remove(partition);
                lag.unknown.remove(partition);
            }
        }
    }

    fn clear(&self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// The consumer's context: in a group, it starts every partition the group assigns at the
/// offset the caller's store names, and keeps the current assignment.
#[derive(Default)]
pub struct GroupContext {
    start: Mutex<Option<StartOffsets>>,
    assigned: Arc<Mutex<BTreeSet<i32>>>,
    /// Counts into the process's consumer metrics (projections; not the puller's read-back).
    metered: AtomicBool,
    lag: LagView,
}

impl Drop for GroupContext {
    /// The consumer is gone: what it measured no longer says anything.
    fn drop(&mut self) {
        self.lag.clear();
    }
}

impl ClientContext for GroupContext {
    /// Measures the lag of every partition this consumer holds: the partition's end less the
    /// next offset handed to the application (before the first message since the partition was
    /// taken: less the offset it is fetched from). Kept in the consumer's [`LagView`] and, for a
    /// metered consumer, set as `recoup_consumer_lag`.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let metered = self.metered.load(Ordering::Relaxed);
        let gauge = &recoup_metrics::metrics().consumer_lag;
        let (mut held, mut unknown) = (BTreeMap::new(), BTreeSet::new());
        for (name, topic) in &statistics.topics {
            for (id, partition) in &topic.partitions {
                if *id < 0 {
                    continue;
                }
                let label = || recoup_metrics::PartitionLabel {
                    topic: name.clone(),
                    partition: *id,
                };
                let (app, next, end) = (
                    partition.app_offset,
                    partition.next_offset,
                    partition.hi_offset,
                );
                let lag = partition_lag(app, next, end).filter(|_| partition.desired);
                if let Some(lag) = lag {
                    held.insert(*id, lag);
                } else if partition.desired {
                    unknown.insert(*id);
                }
                match lag {
                    Some(lag) if metered => {
                        gauge.get_or_create(&label()).set(lag);
                    }
                    None if metered => {
                        gauge.remove(&label());
                    }
                    _ => {}
                }
            }
        }
        self.lag.set(Lag {
            partitions: held,
            unknown,
            measured_at: SystemTime::now(),
        });
    }
}

/// A partition's lag from its statistics: its end (`hi_offset`) less the next offset handed to
/// the application (`app_offset`), or, before the first message since the partition was taken,
/// less the offset it is fetched from (`next_offset`). `None` while its end or position is not
/// known yet (negative).
fn partition_lag(app_offset: i64, next_offset: i64, hi_offset: i64) -> Option<i64> {
    let position = [app_offset, next_offset].into_iter().find(|o| *o >= 0)?;
    (hi_offset >= 0).then(|| (hi_offset - position).max(0))
}

impl GroupContext {
    /// The partitions of `tpl`, each with the offset the caller's store names.
    fn starting(&self, tpl: &TopicPartitionList) -> (TopicPartitionList, Vec<i32>) {
        let start = self
            .start
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let partitions: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        let ids: Vec<i32> = partitions.iter().map(|(_, p)| *p).collect();
        let offsets = start.map(|start| start(&ids)).unwrap_or_default();
        let mut list = TopicPartitionList::new();
        for (topic, partition) in &partitions {
            let next = offsets
                .iter()
                .find(|(p, _)| p == partition)
                .and_then(|(_, next)| *next);
            let offset = next.map_or(Offset::Beginning, Offset::Offset);
            if let Err(error) = list.add_partition_offset(topic, *partition, offset) {
                tracing::error!(%error, topic, partition, "cannot start a partition");
            }
        }
        (list, ids)
    }

    fn forget_lag(&self, topic: &str, partitions: &[i32]) {
        self.lag.forget(partitions);
        if !self.metered.load(Ordering::Relaxed) {
            return;
        }
        for partition in partitions {
            recoup_metrics::metrics()
                .consumer_lag
                .remove(&recoup_metrics::PartitionLabel {
                    topic: topic.to_owned(),
                    partition: *partition,
                });
        }
    }
}

impl ConsumerContext for GroupContext {
    // Eager protocols (range, roundrobin: the default) hand over and take back the whole
    // assignment; the cooperative one (cooperative-sticky) only what moves. Either way, each
    // partition handed over starts at the caller's offset.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let mut assigned = self.assigned.lock().unwrap_or_else(PoisonError::into_inner);
        let topic = tpl
            .elements()
            .first()
            .map(|e| e.topic().to_owned())
            .unwrap_or_default();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let (list, ids) = self.starting(tpl);
                let taken = if cooperative {
                    consumer.incremental_assign(&list)
                } else {
                    consumer.assign(&list)
                };
                match taken {
                    Ok(()) => {
                        if !cooperative {
                            assigned.clear();
                        }
                        assigned.extend(ids.iter().copied());
                        let held: Vec<i32> = assigned.iter().copied().collect();
                        tracing::info!(%topic, partitions = ?held, "consumer group assigned partitions");
                    }
                    Err(error) => {
                        tracing::error!(%error, %topic, "cannot take the assigned partitions")
                    }
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let ids: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                let given = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(error) = given {
                    tracing::error!(%error, %topic, "cannot give up the revoked partitions");
                }
                for id in &ids {
                    assigned.remove(id);
                }
                self.forget_lag(&topic, &ids);
                tracing::info!(%topic, partitions = ?ids, "consumer group revoked partitions");
            }
            other => {
                tracing::error!(error = ?other, %topic, "consumer group rebalance failed");
                let _ = consumer.unassign();
                let ids: Vec<i32> = assigned.iter().copied().collect();
                self.forget_lag(&topic, &ids);
                assigned.clear();
            }
        }
    }
}

/// A consumer of one topic with caller-kept offsets.
pub struct EventConsumer {
    consumer: StreamConsumer<GroupContext>,
    topic: String,
    gate: Option<Arc<FlowGate>>,
    /// The partitions this consumer holds now (every assigned one, or the group's share).
    assigned: Arc<Mutex<BTreeSet<i32>>>,
    in_group: bool,
}

impl EventConsumer {
    /// Connects a consumer for `topic`; `gate` is released as messages arrive (embedded mode).
    pub fn new(
        kafka: &KafkaConfig,
        group_id: &str,
        topic: &str,
        gate: Option<Arc<FlowGate>>,
    ) -> Result<Self, KafkaError> {
        Self::connect(kafka, group_id, topic, gate, EMBEDDED_FETCH_WAIT_MS)
    }

    /// [`EventConsumer::new`] for a consumer whose latency users see (the case projection: a
    /// command's answer to its visibility in `Query`). On the embedded cluster it asks every
    /// millisecond instead of every 5 (about 2 % of a core while idle); a real broker answers a
    /// fetch as soon as data arrives, so elsewhere nothing changes.
    pub fn new_eager(
        kafka: &KafkaConfig,
        group_id: &str,
        topic: &str,
        gate: Option<Arc<FlowGate>>,
    ) -> Result<Self, KafkaError> {
        Self::connect(kafka, group_id, topic, gate, "1")
    }

    fn connect(
        kafka: &KafkaConfig,
        group_id: &str,
        topic: &str,
        gate: Option<Arc<FlowGate>>,
        embedded_fetch_wait_ms: &str,
    ) -> Result<Self, KafkaError> {
        let mut config = kafka.client_config();
        config
            .set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            // Statistics feed the consumer-lag gauge (GroupContext::stats).
            .set("statistics.interval.ms", "5000");
        // A group notices a dead member (and tansu completes a first join) after the session
        // timeout: 10 s rather than librdkafka's 45, unless the operator set one.
        if !kafka.given("session.timeout.ms") {
            config.set("session.timeout.ms", "10000");
        }
        // librdkafka prefetches up to 64 MiB per consumer by default; a few MiB keep up with
        // every projection here and bound the process's memory.
        if !kafka.given("queued.max.messages.kbytes") {
            config.set("queued.max.messages.kbytes", CONSUMER_PREFETCH_KIB);
        }
        if kafka.embedded {
            // The mock broker answers a fetch only when fetch.wait.max.ms (500 ms) ran out, even
            // if data arrived meanwhile; with flow control holding producers to a small budget,
            // that wait would bound the whole pipeline.
            config.set("fetch.wait.max.ms", embedded_fetch_wait_ms);
        }
        let consumer: StreamConsumer<GroupContext> =
            config.create_with_context(GroupContext::default())?;
        let assigned = consumer.context().assigned.clone();
        Ok(Self {
            consumer,
            topic: topic.to_owned(),
            gate,
            assigned,
            in_group: false,
        })
    }

    /// Counts this consumer into the process's consumer metrics (`recoup_events_consumed_total`,
    /// `recoup_consumer_lag`): the projections' consumers, not tools that read a topic once.
    pub fn metered(self) -> Self {
        self.consumer
            .context()
            .metered
            .store(true, Ordering::Relaxed);
        self
    }

    /// This consumer's lag, as of its last statistics.
    pub fn lag(&self) -> LagView {
        self.consumer.context().lag.clone()
    }

    /// The topic this consumer reads.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The topic's partition ids, from the broker's metadata.
    pub fn partitions(&self, timeout: Duration) -> Result<Vec<i32>, KafkaError> {
        let metadata = self.consumer.fetch_metadata(Some(&self.topic), timeout)?;
        let topic = metadata
            .topics()
            .iter()
            .find(|t| t.name() == self.topic)
            .ok_or(KafkaError::MetadataFetch(
                rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
            ))?;
        if let Some(error) = topic.error() {
            return Err(KafkaError::MetadataFetch(error.into()));
        }
        let mut ids: Vec<i32> = topic.partitions().iter().map(|p| p.id()).collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// The first offset the broker still holds and the next it will write, of one partition.
    pub fn watermarks(&self, partition: i32, timeout: Duration) -> Result<(i64, i64), KafkaError> {
        self.consumer
            .fetch_watermarks(&self.topic, partition, timeout)
    }

    /// The cluster's id as the broker reports it.
    pub fn cluster_id(&self, timeout: Duration) -> Option<String> {
        self.consumer.client().fetch_cluster_id(timeout)
    }

    /// Starts reading each partition at the given next offset (`None`: from the beginning).
    pub fn assign(&self, start: &[(i32, Option<i64>)]) -> Result<(), KafkaError> {
        let mut list = TopicPartitionList::new();
        for (partition, next) in start {
            let offset = match next {
                Some(o) => Offset::Offset(*o),
                None => Offset::Beginning,
            };
            list.add_partition_offset(&self.topic, *partition, offset)?;
        }
        self.consumer.assign(&list)?;
        *self.assigned.lock().unwrap_or_else(PoisonError::into_inner) =
            start.iter().map(|(p, _)| *p).collect();
        Ok(())
    }

    /// Joins the consumer group (the `group_id` given to [`EventConsumer::new`]) for the topic:
    /// the group spreads the partitions over its members and moves them when members come and
    /// go. Each partition handed over starts where `start` says.
    pub fn subscribe(&mut self, start: StartOffsets) -> Result<(), KafkaError> {
        *self
            .consumer
            .context()
            .start
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(start);
        self.consumer.subscribe(&[&self.topic])?;
        self.in_group = true;
        Ok(())
    }

    /// True when the partitions come from the consumer group.
    pub fn in_group(&self) -> bool {
        self.in_group
    }

    /// The partitions this consumer holds now.
    pub fn assigned(&self) -> Vec<i32> {
        self.assigned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .copied()
            .collect()
    }

    /// Tells the group how far this member got (next offsets), so that group tools (lag
    /// monitors, Kafka UIs) see progress. Not the truth recoup resumes from: that is in the
    /// caller's store. Asynchronous; a commit the group refuses (the partition moved on) only
    /// loses the report.
    pub fn report_progress(&self, next: &[(i32, i64)]) {
        if !self.in_group || next.is_empty() {
            return;
        }
        let held = self.assigned();
        let mut list = TopicPartitionList::new();
        // A batch drained before a revocation may hold partitions another member has now.
        for (partition, offset) in next.iter().filter(|(p, _)| held.contains(p)) {
            if list
                .add_partition_offset(&self.topic, *partition, Offset::Offset(*offset))
                .is_err()
            {
                return;
            }
        }
        if list.count() == 0 {
            return;
        }
        if let Err(error) = self.consumer.commit(&list, CommitMode::Async) {
            tracing::debug!(%error, "consumer group progress not reported");
        }
    }

    /// Waits for the next message, then takes whatever else is already there, up to `max`.
    pub async fn recv_batch(&self, max: usize) -> Result<Vec<ReceivedEvent>, KafkaError> {
        let mut batch = Vec::new();
        let first = self.consumer.recv().await?;
        batch.push(self.take(&first));
        while batch.len() < max {
            match self.consumer.recv().now_or_never() {
                Some(Ok(message)) => batch.push(self.take(&message)),
                Some(Err(error)) => {
                    tracing::warn!(%error, "kafka consumer error while draining a batch");
                    break;
                }
                None => break,
            }
        }
        if self.consumer.context().metered.load(Ordering::Relaxed) {
            recoup_metrics::count_topic(
                &recoup_metrics::metrics().events_consumed,
                &self.topic,
                batch.len() as u64,
            );
        }
        Ok(batch)
    }

    fn take(&self, message: &rdkafka::message::BorrowedMessage<'_>) -> ReceivedEvent {
        let key = message.key().unwrap_or_default().to_vec();
        let value = message.payload().unwrap_or_default().to_vec();
        if let Some(gate) = &self.gate {
            gate.release(FlowGate::cost(key.len(), value.len()));
        }
        ReceivedEvent {
            partition: message.partition(),
            offset: message.offset(),
            key,
            value,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_lags_by_its_end_less_what_the_application_was_handed() {
        // 4 messages handed over of 10.
        assert_eq!(partition_lag(4, 9, 10), Some(6));
        // None handed over yet: from where it is fetched.
        assert_eq!(partition_lag(-1001, 3, 10), Some(7));
        assert_eq!(partition_lag(10, 10, 10), Some(0));
        // The end read before the position moved past it: never negative.
        assert_eq!(partition_lag(12, 12, 10), Some(0));
        // End unknown, position unknown.
        assert_eq!(partition_lag(4, 9, -1), None);
        assert_eq!(partition_lag(-1001, -1001, 10), None);
    }

    #[test]
    fn a_lag_view_forgets_the_partitions_given_up() {
        let view = LagView::default();
        assert_eq!(view.last(), None);
        let measured_at = SystemTime::now();
        view.set(Lag {
            partitions: BTreeMap::from([(0, 3), (1, 0), (2, 8)]),
            unknown: BTreeSet::from([4, 5]),
            measured_at,
        });
        view.forget(&[2, 5]);
        assert_eq!(
            view.last(),
            Some(Lag {
                partitions: BTreeMap::from([(0, 3), (1, 0)]),
                unknown: BTreeSet::from([4]),
                measured_at,
            })
        );
    }

    #[test]
    fn a_consumer_gone_leaves_no_measure_behind() {
        let context = GroupContext::default();
        let view = context.lag.clone();
        view.set(Lag {
            partitions: BTreeMap::from([(0, 0)]),
            unknown: BTreeSet::new(),
            measured_at: SystemTime::now(),
        });
        drop(context);
        assert_eq!(view.last(), None);
    }
}
