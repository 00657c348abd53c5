//! The projection's consumer loop: Kafka → read model, offsets kept beside the read model.

use std::sync::Arc;
use std::time::Duration;

use event_backbone::consumer::EventConsumer;
use tokio::sync::watch;

use crate::cases::CaseReadModel;
use crate::generations::Live;
use crate::kernel::{BatchOutcome, Projection, ReadModelError};

/// Most messages applied in one sled batch.
const MAX_BATCH: usize = 2000;

/// Why the projection stopped.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error(transparent)]
    ReadModel(#[from] ReadModelError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Task(#[from] recoup_runtime::shutdown::TaskFailed),
}

/// Consumes one topic into a read model.
pub struct Projector<P: Projection + Clone = CaseReadModel> {
    /// The live generation, which a rebuild may replace between two batches.
    read_model: Live<P>,
    consumer: EventConsumer,
    /// Offsets are kept per cluster, so a new (embedded) cluster is read from its beginning.
    cluster_id: String,
    topic: String,
}

impl<P: Projection + Clone> Projector<P> {
    /// Assigns every partition of `topic`, starting after the offsets the read model recorded for
    /// this cluster.
    pub fn start(
        read_model: impl Into<Live<P>>,
        consumer: EventConsumer,
        cluster_id: String,
        topic: &str,
    ) -> Result<Self, ProjectionError> {
        let read_model = read_model.into();
        let consumer = consumer.metered();
        let partitions = consumer.partitions(Duration::from_secs(10))?;
        let offsets = read_model
            .current()
            .offsets(&cluster_id, topic, &partitions)?;
        consumer.assign(&offsets)?;
        tracing::info!(topic, %cluster_id, partitions = partitions.len(), "projection assigned");
        Ok(Self {
            read_model,
            consumer,
            cluster_id,
            topic: topic.to_owned(),
        })
    }

    /// Joins the consumer's group for `topic`: the partitions are shared with the group's other
    /// members (other processes), and each one handed over starts after the offset this read
    /// model recorded for it on this cluster (the beginning for a partition it never held). So
    /// every event of a partition this process holds is applied here exactly once, whichever
    /// member held the partition before.
    pub fn start_in_group(
        read_model: impl Into<Live<P>>,
        mut consumer: EventConsumer,
        cluster_id: String,
        topic: &str,
    ) -> Result<Self, ProjectionError> {
        let read_model = read_model.into();
        consumer = consumer.metered();
        let (model, cluster, name) = (read_model.clone(), cluster_id.clone(), topic.to_owned());
        consumer.subscribe(Arc::new(move |partitions: &[i32]| {
            model
                .current()
                .offsets(&cluster, &name, partitions)
                .unwrap_or_else(|error| {
                    // Reading again from the beginning is safe (the read models skip what they
                    // applied), only slower.
                    tracing::error!(%error, topic = %name, "cannot read the projection's offsets; reading from the beginning");
                    partitions.iter().map(|p| (*p, None)).collect()
                })
        }))?;
        tracing::info!(topic, %cluster_id, "projection joined its consumer group");
        Ok(Self {
            read_model,
            consumer,
            cluster_id,
            topic: topic.to_owned(),
        })
    }

    /// How far this projector is behind its topic, as of its consumer's last statistics.
    pub fn lag(&self) -> event_backbone::consumer::LagView {
        self.consumer.lag()
    }

    /// The partitions this projector holds now.
    pub fn assigned(&self) -> Vec<i32> {
        self.consumer.assigned()
    }

    /// Receives and applies one batch.
    pub async fn step(&self) -> Result<BatchOutcome, ProjectionError> {
        let messages = self.consumer.recv_batch(MAX_BATCH).await?;
        let outcome = {
            // A rebuild switches generations between two batches, never during one.
            let _turn = self.read_model.turn().await;
            self.read_model
                .current()
                .apply_batch(&self.cluster_id, &self.topic, &messages)?
        };
        if self.consumer.in_group() {
            let mut next: Vec<(i32, i64)> = Vec::new();
            for m in &messages {
                match next.iter_mut().find(|(p, _)| *p == m.partition) {
                    Some((_, n)) => *n = (*n).max(m.offset + 1),
                    None => next.push((m.partition, m.offset + 1)),
                }
            }
            self.consumer.report_progress(&next);
        }
        Ok(outcome)
    }

    /// Runs until `shutdown` turns true; then flushes the read model (offsets included).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<(), ProjectionError> {
        loop {
            tokio::select! {
                result = self.step() => match result {
                    Ok(outcome) => tracing::trace!(?outcome, "batch applied"),
                    Err(ProjectionError::Kafka(error)) => {
                        tracing::warn!(%error, "kafka consumer error; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => return Err(e),
                },
                // A sender gone without a word means the process is going away: stop too.
                changed = shutdown.changed() => if changed.is_err() { break },
            }
            if *shutdown.borrow() {
                break;
            }
        }
        self.read_model.current().flush()?;
        Ok(())
    }
}
