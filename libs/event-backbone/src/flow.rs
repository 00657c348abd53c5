//! Flow control between producers and the in-process consumer of the embedded cluster.
//!
//! librdkafka's mock broker keeps about 5 MiB per partition and silently drops older data. In
//! embedded mode a producer therefore acquires room for every message before sending it, and the
//! consumer releases that room once it has received the message: the bytes between them, which is
//! all that the broker must still hold, never exceed the budget.

use std::sync::Mutex;

use tokio::sync::Notify;

/// A byte budget shared by the producers and the consumer of one topic.
#[derive(Debug)]
pub struct FlowGate {
    budget: u64,
    in_flight: Mutex<u64>,
    freed: Notify,
}

/// What the broker stores per message beyond key and value (record and batch headers), bytes;
/// deliberately generous so the budget errs on the safe side.
pub const MESSAGE_OVERHEAD: u64 = 256;

/// The default budget: well under the mock broker's 5 MiB per partition, even if every message
/// landed in one partition.
pub const EMBEDDED_BUDGET_BYTES: u64 = 2 * 1024 * 1024;

impl FlowGate {
    /// A gate letting at most `budget` bytes be in the broker unconsumed.
    pub fn new(budget: u64) -> Self {
        Self {
            budget,
            in_flight: Mutex::new(0),
            freed: Notify::new(),
        }
    }

    /// The room a message of this key and value takes.
    pub fn cost(key_len: usize, value_len: usize) -> u64 {
        (key_len + value_len) as u64 + MESSAGE_OVERHEAD
    }

    /// Waits until `bytes` fit in the budget and takes them. A message larger than the whole
    /// budget passes alone when nothing else is in flight.
    pub async fn acquire(&self, bytes: u64) {
        loop {
            let notified = self.freed.notified();
            {
                let mut in_flight = self.lock();
                if *in_flight == 0 || *in_flight + bytes <= self.budget {
                    *in_flight += bytes;
                    return;
                }
            }
            notified.await;
        }
    }

    /// Gives back room taken by a message the consumer has received.
    pub fn release(&self, bytes: u64) {
        {
            let mut in_flight = self.lock();
            *in_flight = in_flight.saturating_sub(bytes);
        }
        self.freed.notify_waiters();
    }

    /// Bytes currently produced but not yet consumed.
    pub fn in_flight(&self) -> u64 {
        *self.lock()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, u64> {
        // A poisoned counter is still a valid number.
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn acquire_waits_until_the_consumer_releases() {
        let gate = Arc::new(FlowGate::new(1000));
        gate.acquire(600).await;
        let second = tokio::spawn({
            let gate = gate.clone();
            async move { gate.acquire(600).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!second.is_finished(), "second message must wait for room");
        gate.release(600);
        tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("released room lets the waiting producer go")
            .expect("task");
        assert_eq!(gate.in_flight(), 600);
    }

    #[tokio::test]
    async fn a_message_larger_than_the_budget_passes_alone() {
        let gate = FlowGate::new(100);
        gate.acquire(500).await;
        assert_eq!(gate.in_flight(), 500);
    }
}
