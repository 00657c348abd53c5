//! What every read model shares: the [`Projection`] trait the consumer loop drives, a batch of
//! messages applied one by one into staged changes, and the consumer offsets after the batch
//! written in the same atomic `sled::Batch` as those changes. A message that cannot be applied
//! is kept with its reason, never dropped.
//!
//! Every read model keeps these entries in its own tree (keys of `recoup_keys`):
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `o` | cluster id, topic, partition (i32) | next offset to read (i64 BE) |
//! | `x` | cluster id, topic, partition (i32), offset (i64) | the reason, a 0 byte, the message |
//! | `~layout` | | the layout of the tree's keys (`recoup_keys::layout`) |

use std::collections::BTreeMap;

use event_backbone::consumer::ReceivedEvent;
use recoup_keys::Key;

/// The start of every key of one tenant under `prefix`: a read model's entries are the
/// tenant's, and listings scan this prefix.
pub(crate) fn tenant_prefix(prefix: u8, tenant: &str) -> Key {
    Key::new(prefix).str(tenant)
}

/// The envelope in `bytes` when it is one of an aggregate of `aggregate_type`, else why not
/// (the message is then kept among the rejects).
pub(crate) fn envelope_of(
    bytes: &[u8],
    aggregate_type: &str,
) -> Result<recoup_proto::v1::EventEnvelope, String> {
    let envelope = event_backbone::envelope::decode_envelope(bytes).map_err(|e| e.to_string())?;
    if envelope.aggregate_type != aggregate_type {
        return Err(format!(
            "aggregate type {:?} does not belong on this topic",
            envelope.aggregate_type
        ));
    }
    Ok(envelope)
}

/// A technical failure of a read model.
#[derive(Debug, thiserror::Error)]
pub enum ReadModelError {
    #[error("read model I/O failed: {0}")]
    Sled(#[from] sled::Error),
    #[error("a read model thread failed: {0}")]
    Thread(String),
    #[error("read model entry {key} is unreadable: {reason}")]
    Corrupt { key: String, reason: String },
}

impl ReadModelError {
    /// An entry of `key` that does not read as what it should be.
    pub fn corrupt(key: impl AsRef<[u8]>, reason: &str) -> Self {
        ReadModelError::Corrupt {
            key: String::from_utf8_lossy(key.as_ref()).into_owned(),
            reason: reason.to_owned(),
        }
    }
}

/// What applying one batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchOutcome {
    pub applied: usize,
    /// Already applied (a redelivery or a resend).
    pub duplicates: usize,
    /// Arrived before an earlier version of the same case; parked until it comes.
    pub parked: usize,
    /// Could not be decoded or applied; kept under `x` with the reason.
    pub rejected: usize,
    /// Well-formed events this read model does not keep (deals of datasets other than D16).
    pub ignored: usize,
}

impl BatchOutcome {
    /// Adds another batch's counts to these.
    pub fn add(&mut self, other: BatchOutcome) {
        self.applied += other.applied;
        self.duplicates += other.duplicates;
        self.parked += other.parked;
        self.rejected += other.rejected;
        self.ignored += other.ignored;
    }
}

/// What one message came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Applied, with this many events (a parked successor may follow its predecessor).
    Applied(usize),
    Duplicate,
    /// Kept until its predecessor arrives.
    Parked,
    /// Well-formed, but not for this read model.
    Ignored,
    Rejected(String),
}

/// A read model fed from one topic, keeping its consumer offsets itself. A model says how one
/// message changes its staged changes and how those are written; the kernel applies a batch
/// ([`apply_batch`]): every message in order, rejects kept, the offsets after the batch in the
/// same atomic `sled::Batch`.
pub trait Projection: Send + Sync + 'static {
    /// The changes of one batch before they are written.
    type Staged: Default;
    /// What the model does once a batch is written (e.g. tell watchers).
    type Written: Send;

    /// The tree holding the read model, its offsets and its rejects.
    fn tree(&self) -> &sled::Tree;

    /// One message into the staged changes.
    fn apply(&self, message: &[u8], staged: &mut Self::Staged) -> Result<Step, ReadModelError>;

    /// The `sled::Batch` inside the staged changes (rejects go into it).
    fn batch(staged: &mut Self::Staged) -> &mut sled::Batch;

    /// The staged changes as one `sled::Batch`, and what to do once it is written.
    fn stage_writes(
        &self,
        staged: Self::Staged,
    ) -> Result<(sled::Batch, Self::Written), ReadModelError>;

    /// After the batch was written.
    fn written(&self, _written: Self::Written) -> Result<(), ReadModelError> {
        Ok(())
    }

    /// Writes a staged batch: its `sled::Batch`, atomically, then [`Projection::written`].
    fn write_staged(
        &self,
        batch: sled::Batch,
        written: Self::Written,
    ) -> Result<(), ReadModelError> {
        self.tree().apply_batch(batch)?;
        self.written(written)
    }

    /// Whether this model can stage a batch while the one before it is still being written
    /// ([`apply_recorded_batches`]): it then reads what is in flight through its own overlay.
    /// sled's `apply_batch` holds every reader of the process back while it runs, so such a
    /// model writes a pipelined batch key by key: no longer atomic, which only a tree nobody
    /// reads yet (a generation being rebuilt) can afford.
    fn pipelines(&self) -> bool {
        false
    }

    /// Turns that mode on or off (called only where [`Projection::pipelines`]); off forgets
    /// whatever is still in flight.
    fn set_pipelined(&self, _on: bool) {}

    /// A lock held from a batch's first read through [`Projection::written`], for models
    /// whose readers must see a batch and its aftermath as one (none by default).
    fn hold_turn(&self) -> Option<std::sync::MutexGuard<'_, ()>> {
        None
    }

    /// Applies a batch and records the offsets after it, atomically.
    fn apply_batch(
        &self,
        cluster: &str,
        topic: &str,
        messages: &[ReceivedEvent],
    ) -> Result<BatchOutcome, ReadModelError> {
        let _turn = self.hold_turn();
        apply_batch(self, cluster, topic, messages)
    }

    /// The next offset to read per partition of `topic` on `cluster` (`None`: the beginning).
    fn offsets(
        &self,
        cluster: &str,
        topic: &str,
        partitions: &[i32],
    ) -> Result<Vec<(i32, Option<i64>)>, ReadModelError> {
        partitions
            .iter()
            .map(|p| {
                let next = self
                    .tree()
                    .get(offset_key(cluster, topic, *p))?
                    .and_then(|v| v.as_ref().try_into().ok().map(i64::from_be_bytes));
                Ok((*p, next))
            })
            .collect()
    }

    /// Makes everything durable.
    fn flush(&self) -> Result<(), ReadModelError> {
        self.tree().flush()?;
        Ok(())
    }

    /// Messages kept because they could not be applied.
    fn rejected_count(&self) -> usize {
        self.tree().scan_prefix(b"x").count()
    }
}

/// Applies every message of a batch to `model` in order, keeps each reject with its reason, and
/// writes the model's changes and the offsets after the batch in one atomic `sled::Batch`.
pub fn apply_batch<P: Projection + ?Sized>(
    model: &P,
    cluster: &str,
    topic: &str,
    messages: &[ReceivedEvent],
) -> Result<BatchOutcome, ReadModelError> {
    apply_messages(model, cluster, topic, messages, true)
}

/// The cluster name under which messages read from a stream's record, not from Kafka, keep
/// their rejects (partition -1, the message's place in the rebuild as its offset).
pub const RECORD_CLUSTER: &str = "record";

/// Applies messages read from a stream's record (see [`RECORD_CLUSTER`]): as
/// [`apply_batch`], without offsets.
pub fn apply_recorded<P: Projection + ?Sized>(
    model: &P,
    topic: &str,
    messages: &[ReceivedEvent],
) -> Result<BatchOutcome, ReadModelError> {
    apply_messages(model, RECORD_CLUSTER, topic, messages, false)
}

/// Applies a stream's record, batch after batch from `next_batch` until it gives `None`, as
/// [`apply_recorded`] does each, and says after each how many messages it staged. A model that
/// [pipelines](Projection::pipelines) stages each batch while the one before is written, on
/// another thread: a rebuild keeps both cores busy. Each batch is still written whole, in order.
pub fn apply_recorded_batches<P, E>(
    model: &P,
    topic: &str,
    mut next_batch: impl FnMut() -> Result<Option<Vec<ReceivedEvent>>, E>,
    mut progress: impl FnMut(usize),
) -> Result<BatchOutcome, E>
where
    P: Projection + ?Sized,
    E: From<ReadModelError>,
{
    let mut total = BatchOutcome::default();
    if !model.pipelines() {
        while let Some(messages) = next_batch()? {
            total.add(apply_recorded(model, topic, &messages)?);
            progress(messages.len());
        }
        return Ok(total);
    }
    model.set_pipelined(true);
    let result = std::thread::scope(|scope| {
        // One batch written while the next is staged, one more waiting between them.
        let (to_writer, batches) = std::sync::mpsc::sync_channel::<(sled::Batch, P::Written)>(1);
        let writer = std::thread::Builder::new()
            .name("record-writer".into())
            .spawn_scoped(scope, move || -> Result<(), ReadModelError> {
                for (batch, written) in batches {
                    model.write_staged(batch, written)?;
                }
                Ok(())
            })
            .map_err(|e| {
                ReadModelError::Thread(format!("could not start the record writer: {e}"))
            })?;
        let staging = (|| -> Result<(), E> {
            while let Some(messages) = next_batch()? {
                let (batch, written, outcome) =
                    stage_messages(model, RECORD_CLUSTER, topic, &messages, false)?;
                if to_writer.send((batch, written)).is_err() {
                    // The writer failed: its error is the one to report.
                    break;
                }
                total.add(outcome);
                progress(messages.len());
            }
            Ok(())
        })();
        drop(to_writer);
        // A writer that panicked wrote part of a generation nobody reads: the rebuild fails.
        let written = writer.join().unwrap_or_else(|_| {
            Err(ReadModelError::Thread(
                "the record writer stopped with a panic".into(),
            ))
        });
        staging?;
        written.map_err(E::from)
    });
    model.set_pipelined(false);
    result.map(|()| total)
}

/// Records the next offset to read of each partition given, as they are.
pub fn write_offsets(
    tree: &sled::Tree,
    cluster: &str,
    topic: &str,
    offsets: &BTreeMap<i32, i64>,
) -> Result<(), ReadModelError> {
    let mut batch = sled::Batch::default();
    stage_offsets(&mut batch, cluster, topic, offsets);
    tree.apply_batch(batch)?;
    Ok(())
}

fn stage_offsets(
    batch: &mut sled::Batch,
    cluster: &str,
    topic: &str,
    offsets: &BTreeMap<i32, i64>,
) {
    for (partition, next) in offsets {
        batch.insert(
            offset_key(cluster, topic, *partition).into_vec(),
            &next.to_be_bytes(),
        );
    }
}

fn apply_messages<P: Projection + ?Sized>(
    model: &P,
    cluster: &str,
    topic: &str,
    messages: &[ReceivedEvent],
    offsets: bool,
) -> Result<BatchOutcome, ReadModelError> {
    let (batch, written, outcome) = stage_messages(model, cluster, topic, messages, offsets)?;
    model.write_staged(batch, written)?;
    Ok(outcome)
}

/// Stages a batch read from a stream's record without writing it: what
/// [`apply_recorded_batches`] hands its writer, for [`Projection::write_staged`] to write, in
/// the order staged.
pub fn stage_recorded<P: Projection + ?Sized>(
    model: &P,
    topic: &str,
    messages: &[ReceivedEvent],
) -> Result<(sled::Batch, P::Written, BatchOutcome), ReadModelError> {
    stage_messages(model, RECORD_CLUSTER, topic, messages, false)
}

/// Every message of a batch into one `sled::Batch`, with the offsets after it if asked.
fn stage_messages<P: Projection + ?Sized>(
    model: &P,
    cluster: &str,
    topic: &str,
    messages: &[ReceivedEvent],
    offsets: bool,
) -> Result<(sled::Batch, P::Written, BatchOutcome), ReadModelError> {
    let mut staged = P::Staged::default();
    let mut outcome = BatchOutcome::default();
    let mut next_offsets: BTreeMap<i32, i64> = BTreeMap::new();
    for message in messages {
        next_offsets.insert(message.partition, message.offset + 1);
        match model.apply(&message.value, &mut staged)? {
            Step::Applied(n) => outcome.applied += n,
            Step::Duplicate => outcome.duplicates += 1,
            Step::Parked => outcome.parked += 1,
            Step::Ignored => outcome.ignored += 1,
            Step::Rejected(reason) => {
                outcome.rejected += 1;
                stage_reject(P::batch(&mut staged), cluster, topic, message, reason);
            }
        }
    }
    let (mut batch, written) = model.stage_writes(staged)?;
    if offsets {
        stage_offsets(&mut batch, cluster, topic, &next_offsets);
    }
    Ok((batch, written, outcome))
}

fn offset_key(cluster: &str, topic: &str, partition: i32) -> Key {
    Key::new(b'o').str(cluster).str(topic).i32(partition)
}

fn reject_key(cluster: &str, topic: &str, partition: i32, offset: i64) -> Key {
    Key::new(b'x')
        .str(cluster)
        .str(topic)
        .i32(partition)
        .i64(offset)
}

/// Keeps a message that cannot be applied under `x`, with the reason, and logs it.
fn stage_reject(
    batch: &mut sled::Batch,
    cluster: &str,
    topic: &str,
    message: &ReceivedEvent,
    reason: String,
) {
    tracing::error!(
        topic, partition = message.partition, offset = message.offset, %reason,
        "event cannot be applied; kept in the read model's rejects"
    );
    batch.insert(
        reject_key(cluster, topic, message.partition, message.offset).into_vec(),
        reason_and(reason, &message.value),
    );
}

/// The value of a kept reject: the reason, a 0 byte, the bytes that could not be applied.
pub fn reason_and(reason: String, bytes: &[u8]) -> Vec<u8> {
    let mut value = reason.into_bytes();
    value.push(0);
    value.extend_from_slice(bytes);
    value
}

/// Totals kept as `N` counters in one value: the totals the read models keep. Each counter is
/// an i128 (16 bytes BE): sums of i64 amounts cannot overflow it, so a total stays exact
/// whatever amounts clients send, and one that an int64 field cannot carry is refused when it is
/// read ([`wire_total`]). Values of the first layout (an i64, 8 bytes, per counter) read as
/// they were.
pub trait Counters<const N: usize>: Sized {
    fn from_counters(counters: [i128; N]) -> Self;

    fn counters(&self) -> [i128; N];

    /// The totals of a stored value; missing bytes read as 0.
    fn decode(bytes: &[u8]) -> Self {
        let legacy = bytes.len() == N * 8;
        Self::from_counters(std::array::from_fn(|i| {
            if legacy {
                bytes
                    .get(i * 8..i * 8 + 8)
                    .and_then(|b| b.try_into().ok())
                    .map_or(0, |b| i128::from(i64::from_be_bytes(b)))
            } else {
                bytes
                    .get(i * 16..i * 16 + 16)
                    .and_then(|b| b.try_into().ok())
                    .map_or(0, i128::from_be_bytes)
            }
        }))
    }

    /// Adds `delta` counter by counter (saturating only past i128, which sums of i64 amounts
    /// never reach).
    fn add_counters(&mut self, delta: [i128; N]) {
        let mut counters = self.counters();
        for (counter, delta) in counters.iter_mut().zip(delta) {
            *counter = counter.saturating_add(delta);
        }
        *self = Self::from_counters(counters);
    }

    fn encode(&self) -> Vec<u8> {
        self.counters()
            .iter()
            .flat_map(|c| c.to_be_bytes())
            .collect()
    }
}

/// A total for an int64 field of a response, or OUT_OF_RANGE naming what it totals: the read
/// model keeps it exact, the wire cannot carry it.
pub fn wire_total(total: i128, what: impl std::fmt::Display) -> Result<i64, tonic::Status> {
    i64::try_from(total).map_err(|_| {
        tonic::Status::out_of_range(format!(
            "the total {what} is {total}, beyond what an int64 field carries"
        ))
    })
}

/// A count for a uint64 field of a response (negative reads as 0).
pub fn wire_count(count: i128) -> u64 {
    u64::try_from(count.max(0)).unwrap_or(u64::MAX)
}

/// A tree whose own entries were always written with the key codec, but whose offsets and
/// rejects were not: those are rewritten, in one atomic batch, the first time it is opened.
pub fn upgrade_offsets_and_rejects(tree: &sled::Tree) -> Result<(), ReadModelError> {
    recoup_keys::layout::upgrade_in_place(tree, b"ox", old_offset_or_reject_key)?;
    Ok(())
}

/// The key codec's key of an offset (`o`) or reject (`x`) key of layout 1: `prefix 0 cluster 0
/// topic 0 partition(4)` and, for rejects, `0 offset(8)`.
pub fn old_offset_or_reject_key(key: &[u8]) -> Option<Vec<u8>> {
    let (&prefix, tail) = key.split_first()?;
    let fixed = if prefix == b'x' { 13 } else { 4 };
    let (names, fixed) = recoup_keys::layout::separated(tail, 2, fixed)?;
    let partition = i32::from_be_bytes(fixed.get(..4)?.try_into().ok()?);
    let key = match prefix {
        b'o' => offset_key(names[0], names[1], partition),
        b'x' => {
            let offset = fixed.get(4..)?.strip_prefix(&[0])?;
            let offset = i64::from_be_bytes(offset.try_into().ok()?);
            reject_key(names[0], names[1], partition, offset)
        }
        _ => return None,
    };
    Some(key.into_vec())
}
