//! What the collector has buffered since its last flush: the messages decoded
//! into the assembler, and per partition the offsets they cover.

use std::collections::btree_map::Entry;
use std::time::Instant;

use allot_schemas::layout::Provenance;
use rdkafka::consumer::Consumer;

use super::collector::Collector;
use super::context::PartitionRange;
use crate::dead_letters::DeadLetter;

impl Collector {
    /// Buffers one message unless it is at or before the offset already recorded
    /// (or covered by the flush in flight).
    pub(super) fn accept(&mut self, partition: i32, offset: i64, payload: &[u8]) {
        // A partition's range starts with its first buffered message; a
        // rebalance drops the buffer, so a partition with a range is still ours.
        let range = match self.buffered.entry(partition) {
            Entry::Occupied(range) => range.into_mut(),
            Entry::Vacant(slot) => {
                let Some(&recorded) = self.consumer.context().assignment().get(&partition) else {
                    return; // not (or no longer) ours
                };
                let recorded = self.in_flight.get(&partition).copied().or(recorded);
                slot.insert(PartitionRange {
                    recorded,
                    last: recorded.unwrap_or(-1),
                    messages: 0,
                })
            }
        };
        if offset <= range.last {
            return; // delivered again before the seek took effect
        }
        range.last = offset;
        range.messages += 1;
        self.buffer_started.get_or_insert_with(Instant::now);
        let source = Provenance::Kafka {
            topic: &self.topic,
            partition,
            offset,
        };
        if let Some(rejection) = self.assembler.push(payload, source) {
            self.dead_letters.push(DeadLetter {
                payload: payload.to_vec(),
                code: rejection.reason.as_str(),
                message: rejection.message,
                source: source.to_string(),
            });
        }
    }

    /// Discards everything buffered; the partitions are re-read from the lake's offsets.
    pub(super) fn drop_buffer(&mut self) {
        if let Err(err) = self.assembler.take() {
            tracing::error!(%err, "discarding the buffer");
        }
        self.buffered.clear();
        self.dead_letters.clear();
        self.buffer_started = None;
    }
}
