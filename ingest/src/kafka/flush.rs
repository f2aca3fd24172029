//! Flushes: one at a time in flight on the runtime while the consumer thread
//! goes on, landed (committed, failed or fenced) before the next.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use allot_lake::txns::AppOffset;
use allot_schemas::layout::kafka_app_id;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::collector::{Collector, Landing, Wait};
use super::context::{Flight, Landed, PartitionRange, land};
use crate::error::IngestError;
use crate::telemetry::{self, CommitOutcome};
use crate::writer::OffsetCommit;

impl Collector {
    /// Hands what is buffered to a flush task, once the previous flight landed.
    pub(super) fn start_flush(&mut self) -> Result<(), IngestError> {
        self.collect_flight(Wait::Yes, Landing::InPlace)?;
        if self.buffered.is_empty() {
            self.buffer_started = None;
            return Ok(());
        }
        let batch = self.assembler.take()?;
        let ranges = std::mem::take(&mut self.buffered);
        let expected: Vec<(String, Option<i64>)> = ranges
            .iter()
            .map(|(&p, range)| (kafka_app_id(&self.group, &self.topic, p), range.recorded))
            .collect();
        let records: Vec<AppOffset> = ranges
            .iter()
            .map(|(&p, range)| {
                AppOffset::new(kafka_app_id(&self.group, &self.topic, p), range.last)
            })
            .collect();
        self.flushes += 1;
        let offsets = OffsetCommit {
            expected,
            records,
            abort_before_commit: self.abort_before_commit == Some(self.flushes),
        };
        self.in_flight = ranges.iter().map(|(&p, range)| (p, range.last)).collect();
        let dead_letters = std::mem::take(&mut self.dead_letters);
        let dead_letter_queue = Arc::clone(&self.dead_letter_queue);
        let mut writer = self.writer.take().expect("one flight at a time");
        let task = self.handle.spawn(async move {
            let started = Instant::now();
            // Dead letters first: acknowledged before any offset covering them is recorded.
            let result = match dead_letter_queue.deliver(&dead_letters).await {
                Ok(()) => writer.append_with_offsets(batch, &offsets).await,
                Err(err) => Err(err),
            };
            Landed {
                writer,
                ranges,
                result,
                took: started.elapsed(),
            }
        });
        *self.consumer.context().flight() = Some(Flight::Running(task));
        self.buffer_started = None;
        telemetry::set_buffered_bytes(self.assembler.buffered_bytes());
        Ok(())
    }

    /// Takes in the flush in flight if it landed (or, with [`Wait::Yes`], once it
    /// does). A worker failure stops the collector (the error); a failed or
    /// fenced commit rewinds the partitions and is returned, and only the last
    /// flush at shutdown turns it into an error.
    pub(super) fn collect_flight(
        &mut self,
        wait: Wait,
        landing: Landing,
    ) -> Result<Option<IngestError>, IngestError> {
        let waiting = Instant::now();
        let landed = {
            let mut flight = self.consumer.context().flight();
            match flight.take() {
                None => return Ok(None),
                Some(Flight::Landed(landed)) => *landed,
                Some(Flight::Running(task)) => {
                    if wait == Wait::No && !task.is_finished() {
                        *flight = Some(Flight::Running(task));
                        return Ok(None);
                    }
                    land(&self.handle, task)
                }
            }
        }?;
        tracing::debug!(
            took_secs = landed.took.as_secs_f64(),
            waited_secs = waiting.elapsed().as_secs_f64(),
            "a flush landed"
        );
        self.writer = Some(landed.writer);
        self.in_flight.clear();
        let failure = match landed.result {
            Ok(outcome) => {
                telemetry::record_commit(CommitOutcome::Committed, landed.took);
                telemetry::record_flush(&outcome.counts);
                self.summary.add(outcome);
                self.failures = 0;
                if landing == Landing::InPlace {
                    self.record_landed(&landed.ranges);
                }
                return Ok(None);
            }
            Err(failure) => failure,
        };
        // Whatever was buffered meanwhile started from the flight's offsets.
        let mut rewind: BTreeMap<i32, Option<i64>> = std::mem::take(&mut self.buffered)
            .into_iter()
            .map(|(p, range)| (p, range.recorded))
            .collect();
        rewind.extend(landed.ranges.iter().map(|(&p, range)| (p, range.recorded)));
        self.drop_buffer();
        match &failure {
            IngestError::Fenced(reason) => {
                telemetry::record_commit(CommitOutcome::Fenced, landed.took);
                tracing::warn!(%reason, "commit fenced: another collector recorded newer offsets; dropping the buffer");
            }
            err => {
                telemetry::record_commit(CommitOutcome::Failed, landed.took);
                self.failures += 1;
                tracing::warn!(%err, attempt = self.failures, "flush failed; re-reading from the lake's offsets");
            }
        }
        if landing == Landing::InPlace {
            // A fenced flush means the lake moved on: start from what it records now.
            let resume = match &failure {
                IngestError::Fenced(_) => {
                    let context = self.consumer.context();
                    let assigned: Vec<i32> = context.assignment().keys().copied().collect();
                    context.recorded_offsets(&assigned)
                }
                _ => Ok(rewind),
            };
            match resume {
                Ok(resume) => self.seek_to(resume),
                Err(err) => self.rejoin(&err.to_string()),
            }
        }
        if !matches!(failure, IngestError::Fenced(_)) {
            let backoff = Duration::from_millis(200 * u64::from(self.failures.min(25)));
            std::thread::sleep(backoff);
        }
        Ok(Some(failure))
    }

    /// After a commit: the lake records the flight's offsets, and Kafka gets them
    /// for lag monitoring.
    pub(super) fn record_landed(&mut self, ranges: &BTreeMap<i32, PartitionRange>) {
        let mut commit = TopicPartitionList::new();
        {
            let mut assignment = self.consumer.context().assignment();
            for (&partition, range) in ranges {
                if let Some(recorded) = assignment.get_mut(&partition) {
                    *recorded = Some(range.last);
                }
                let _ = commit.add_partition_offset(
                    &self.topic,
                    partition,
                    Offset::Offset(range.last + 1),
                );
            }
        }
        // For lag monitoring only; the lake's offsets are the truth.
        if let Err(err) = self.consumer.commit(&commit, CommitMode::Async) {
            tracing::debug!(%err, "committing offsets to Kafka for lag monitoring failed");
        }
    }
}
