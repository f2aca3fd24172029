//! The consumer's context: librdkafka's logs, errors and statistics, and the
//! rebalances, which wait for the flush in flight and read the offsets the
//! lake records.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use allot_schemas::layout::kafka_app_id;
use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::TopicPartitionListElem;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::runtime::Handle;

use crate::client::ClientErrors;
use crate::error::IngestError;
use crate::telemetry;
use crate::writer::{LakeWriter, SharedAppender};

/// The consumer's context: reacts to rebalances.
pub(super) struct CollectorContext {
    pub(super) handle: Handle,
    pub(super) group: String,
    pub(super) topic: String,
    /// The `usage_events` appender, which reads the recorded offsets.
    pub(super) offsets: SharedAppender,
    /// Partition → offset the table recorded at assignment (`None`: nothing yet).
    pub(super) assignment: Mutex<BTreeMap<i32, Option<i64>>>,
    /// Set when the assignment changed: the loop drops what it buffered.
    pub(super) reset: AtomicBool,
    /// The flush being written and committed in the background, if any.
    pub(super) flight: Mutex<Option<Flight>>,
    /// The errors librdkafka reported.
    pub(super) errors: ClientErrors,
}

/// A flush handed to the runtime.
pub(super) enum Flight {
    /// Still writing or committing.
    Running(tokio::task::JoinHandle<Landed>),
    /// Done (or its task failed), not yet looked at by the loop.
    Landed(Box<Result<Landed, IngestError>>),
}

/// What a finished flush hands back.
pub(super) struct Landed {
    pub(super) writer: LakeWriter,
    /// Per partition, what the flush covered.
    pub(super) ranges: BTreeMap<i32, PartitionRange>,
    pub(super) result: Result<crate::writer::AppendOutcome, IngestError>,
    pub(super) took: Duration,
}

impl ClientContext for CollectorContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.errors.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.errors.record(&error, reason);
    }

    /// librdkafka's statistics (every [`STATISTICS_INTERVAL_MS`]) carry each
    /// partition's high watermark as of its last fetch; lag is what the lake still
    /// lacks: high watermark − the offset after the one the lake records.
    fn stats(&self, statistics: Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else {
            return;
        };
        let assignment = self.assignment();
        for (&partition, recorded) in assignment.iter() {
            let Some(stats) = topic.partitions.get(&partition) else {
                continue;
            };
            if stats.hi_offset < 0 {
                continue; // not fetched yet
            }
            let next = recorded.map_or(stats.lo_offset.max(0), |offset| offset + 1);
            telemetry::set_lag(&self.topic, partition, stats.hi_offset - next);
        }
    }
}

impl ConsumerContext for CollectorContext {
    /// Lets a flush in flight land before partitions change hands, so that its
    /// commit never lands after the next owner read the lake's offsets.
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, _: &Rebalance<'_>) {
        let mut flight = self.flight();
        if let Some(Flight::Running(task)) = flight.take() {
            *flight = Some(Flight::Landed(Box::new(land(&self.handle, task))));
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(assigned) => {
                let partitions: Vec<i32> = assigned
                    .elements()
                    .iter()
                    .map(TopicPartitionListElem::partition)
                    .collect();
                match self.recorded_offsets(&partitions) {
                    Ok(recorded) => {
                        let mut tpl = TopicPartitionList::new();
                        for (&partition, &offset) in &recorded {
                            let start = offset.map_or(Offset::Beginning, |o| Offset::Offset(o + 1));
                            if let Err(err) =
                                tpl.add_partition_offset(&self.topic, partition, start)
                            {
                                tracing::error!(partition, %err, "cannot set start offset");
                            }
                        }
                        if let Err(err) = consumer.assign(&tpl) {
                            tracing::error!(%err, "cannot assign partitions at the lake's offsets");
                        }
                        tracing::info!(topic = %self.topic, partitions = ?recorded, "assigned; resuming after the offsets recorded in the lake");
                        *self.assignment() = recorded;
                    }
                    Err(err) => {
                        // Without the lake's offsets nothing may be consumed: give up
                        // the partitions; the group reassigns them.
                        tracing::error!(%err, "cannot read offsets from the lake; unassigning");
                        let _ = consumer.unassign();
                        self.assignment().clear();
                    }
                }
                self.reset.store(true, Ordering::SeqCst);
            }
            Rebalance::Revoke(_) => {
                tracing::info!(topic = %self.topic, "partitions revoked; dropping what was buffered (the next owner re-reads it)");
                self.assignment().clear();
                self.reset.store(true, Ordering::SeqCst);
            }
            Rebalance::Error(err) => tracing::warn!(%err, "rebalance error"),
        }
    }
}

/// Waits for a flush task.
pub(super) fn land(
    handle: &Handle,
    task: tokio::task::JoinHandle<Landed>,
) -> Result<Landed, IngestError> {
    handle.block_on(task).map_err(|source| IngestError::Worker {
        worker: "a flush",
        source,
    })
}

impl CollectorContext {
    /// The flush in flight, if any.
    pub(super) fn flight(&self) -> std::sync::MutexGuard<'_, Option<Flight>> {
        self.flight.lock().expect("not poisoned")
    }

    /// Partition → offset the table recorded, for the partitions assigned.
    pub(super) fn assignment(&self) -> std::sync::MutexGuard<'_, BTreeMap<i32, Option<i64>>> {
        self.assignment.lock().expect("not poisoned")
    }

    /// Reads the offsets the lake records for `partitions`.
    pub(super) fn recorded_offsets(
        &self,
        partitions: &[i32],
    ) -> Result<BTreeMap<i32, Option<i64>>, IngestError> {
        let app_ids: Vec<String> = partitions
            .iter()
            .map(|&p| kafka_app_id(&self.group, &self.topic, p))
            .collect();
        let recorded = self
            .handle
            .block_on(async { self.offsets.lock().await.recorded_offsets(&app_ids).await })?;
        Ok(partitions.iter().copied().zip(recorded).collect())
    }
}

/// Offsets buffered for one partition.
#[derive(Debug, Clone, Copy)]
pub(super) struct PartitionRange {
    /// The offset the table recorded when this buffer started (`None`: nothing).
    pub(super) recorded: Option<i64>,
    /// The last offset buffered.
    pub(super) last: i64,
    /// Messages buffered from this partition.
    pub(super) messages: usize,
}
