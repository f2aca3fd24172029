//! The collector's loop on its own thread: poll, decode, flush on size or
//! time, follow the assignment.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use allot_schemas::clock::SystemClock;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use super::consumer_config::consumer_defaults;
use super::context::{CollectorContext, PartitionRange};
use super::{KafkaIngestOptions, abort_before_commit_flush};
use crate::assemble::EventAssembler;
use crate::client::{ClientErrors, client_config, fetch_topic_metadata};
use crate::dead_letters::{self, DeadLetter, DeadLetterQueue};
use crate::error::IngestError;
use crate::stages::StageClock;
use crate::summary::IngestSummary;
use crate::telemetry;
use crate::writer::LakeWriter;

/// Messages between two looks at the clock, the cancellation token and the flush
/// in flight (an empty poll always looks).
pub(super) const HOUSEKEEPING_EVERY: u32 = 256;

/// How often the collector reports its buffered bytes.
pub(super) const REPORT_INTERVAL: Duration = Duration::from_secs(1);

pub(super) struct Collector {
    /// Shared with the poll loop, so a polled message borrows it, not the
    /// collector, and is decoded in place.
    pub(super) consumer: Arc<BaseConsumer<CollectorContext>>,
    pub(super) dead_letter_queue: Arc<dyn DeadLetterQueue>,
    /// The writer, unless a flush in flight has it.
    pub(super) writer: Option<LakeWriter>,
    pub(super) assembler: EventAssembler,
    pub(super) handle: Handle,
    pub(super) topic: String,
    pub(super) group: String,
    pub(super) flush_rows: usize,
    pub(super) flush_bytes: usize,
    pub(super) flush_interval: Duration,
    /// Per partition: what the buffer covers.
    pub(super) buffered: BTreeMap<i32, PartitionRange>,
    /// Per partition, the last offset of the flush in flight: where the
    /// buffer's ranges start.
    pub(super) in_flight: BTreeMap<i32, i64>,
    /// The dead letters of what is buffered, delivered by its flush.
    pub(super) dead_letters: Vec<DeadLetter>,
    pub(super) buffer_started: Option<Instant>,
    pub(super) flushes: u64,
    /// Failed flushes in a row, for the backoff.
    pub(super) failures: u32,
    pub(super) abort_before_commit: Option<u64>,
    pub(super) summary: IngestSummary,
    /// The clock the assembler and the writer report their stages to.
    pub(super) stages: Arc<StageClock>,
}

impl Collector {
    pub(super) fn new(
        options: KafkaIngestOptions,
        writer: LakeWriter,
        handle: Handle,
    ) -> Result<Self, IngestError> {
        let kafka_error = |context: &str| {
            let context = context.to_string();
            move |source| IngestError::Kafka { context, source }
        };
        let kafka = &options.config.kafka;
        let consumer_config = client_config(
            &options.brokers,
            &consumer_defaults(&options.group),
            &kafka.properties,
        );
        let context = CollectorContext {
            handle: handle.clone(),
            group: options.group.clone(),
            topic: options.topic.clone(),
            offsets: writer.usage_appender(),
            assignment: Mutex::new(BTreeMap::new()),
            reset: AtomicBool::new(false),
            flight: Mutex::new(None),
            errors: ClientErrors::default(),
        };
        let consumer: BaseConsumer<CollectorContext> = consumer_config
            .create_with_context(context)
            .map_err(kafka_error("creating the consumer"))?;
        // Reach the cluster before anything else: wrong credentials or an
        // untrusted certificate stop the collector with librdkafka's reason.
        fetch_topic_metadata(
            consumer.client(),
            &consumer.context().errors,
            &options.brokers,
            &options.topic,
            || {
                // Serves the consumer's queue, where librdkafka's errors wait.
                if let Some(Err(err)) = consumer.poll(Duration::ZERO) {
                    consumer.context().errors.record(&err, "");
                }
            },
        )?;
        let dead_letter_queue = dead_letters::open(
            kafka.dlq,
            &options.brokers,
            &options.topic,
            &kafka.properties,
        )?;
        consumer
            .subscribe(&[&options.topic])
            .map_err(kafka_error(&format!("subscribing to {}", options.topic)))?;
        let ingest = &options.config.ingest;
        let stages = writer.stages();
        Ok(Collector {
            assembler: EventAssembler::new(
                &options.config,
                options.clock.unwrap_or_else(|| Arc::new(SystemClock)),
            )
            .with_stages(Arc::clone(&stages)),
            stages,
            flush_rows: ingest.flush_rows,
            flush_bytes: usize::try_from(ingest.flush_bytes.0).unwrap_or(usize::MAX),
            flush_interval: ingest.flush_interval.0,
            consumer: Arc::new(consumer),
            dead_letter_queue,
            writer: Some(writer),
            handle,
            topic: options.topic,
            group: options.group,
            buffered: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            dead_letters: Vec::new(),
            buffer_started: None,
            flushes: 0,
            failures: 0,
            abort_before_commit: abort_before_commit_flush(),
            summary: IngestSummary::default(),
        })
    }

    pub(super) fn run(&mut self, cancel: &CancellationToken) -> Result<IngestSummary, IngestError> {
        let started = Instant::now();
        let mut outage: Option<Instant> = None;
        let mut reported = Instant::now();
        let mut since_housekeeping = 0u32;
        let consumer = Arc::clone(&self.consumer);
        loop {
            // The clock, the cancellation token and the flight are looked at every
            // HOUSEKEEPING_EVERY messages and whenever a poll comes back empty: at
            // hundreds of thousands of events a second, reading them per message
            // cost as much as decoding a small event.
            since_housekeeping += 1;
            // The payload is decoded where librdkafka holds it, never copied.
            let polled = consumer.poll(Duration::from_millis(100));
            if self.consumer.context().reset.swap(false, Ordering::SeqCst) {
                // The flight landed before the rebalance; the new assignment
                // already starts at what the lake records.
                self.collect_flight(Wait::Yes, Landing::AfterRebalance)?;
                self.drop_buffer();
            }
            let mut partition_full = false;
            match polled {
                None => since_housekeeping = HOUSEKEEPING_EVERY,
                Some(Ok(message)) => {
                    if let Some(since) = outage.take() {
                        tracing::info!(down_for_s = since.elapsed().as_secs(), "kafka is back");
                    }
                    let (partition, offset) = (message.partition(), message.offset());
                    let payload = message.payload().unwrap_or_default();
                    self.accept(partition, offset, payload);
                    partition_full = self
                        .buffered
                        .get(&partition)
                        .is_some_and(|range| range.messages >= self.flush_rows);
                }
                // librdkafka reconnects by itself; errors are reported, not waited on,
                // so that queued errors never delay the next message.
                Some(Err(err)) => {
                    since_housekeeping = HOUSEKEEPING_EVERY;
                    if outage.is_none() {
                        tracing::warn!(%err, "kafka unavailable; the client keeps reconnecting");
                        outage = Some(Instant::now());
                    } else {
                        tracing::debug!(%err, "kafka still unavailable");
                    }
                }
            }
            let mut interval_passed = false;
            if since_housekeeping >= HOUSEKEEPING_EVERY {
                since_housekeeping = 0;
                self.assembler.refresh_clock();
                if cancel.is_cancelled() {
                    break;
                }
                if reported.elapsed() >= REPORT_INTERVAL {
                    telemetry::set_buffered_bytes(self.assembler.buffered_bytes());
                    reported = Instant::now();
                }
                self.collect_flight(Wait::No, Landing::InPlace)?;
                interval_passed = self
                    .buffer_started
                    .is_some_and(|t| t.elapsed() >= self.flush_interval);
            }
            // A flush when one Kafka partition's share of the buffer reached
            // `flush_rows`, the whole buffer `flush_bytes`, or the oldest buffered
            // event `flush_interval`.
            if partition_full
                || interval_passed
                || self.assembler.buffered_bytes() >= self.flush_bytes
            {
                self.start_flush()?;
            }
        }
        tracing::info!("shutting down: flushing what is buffered");
        self.start_flush()?;
        let failed = self.collect_flight(Wait::Yes, Landing::InPlace)?;
        self.consumer.unsubscribe();
        self.summary.elapsed = started.elapsed();
        self.summary.stages = self.stages.times();
        match failed {
            Some(err) => Err(err),
            None => Ok(self.summary.clone()),
        }
    }

    /// Seeks each partition to the offset after the one given (`None`: the
    /// beginning), which the lake records, and makes that the assignment's
    /// recorded offset.
    pub(super) fn seek_to(&mut self, recorded: BTreeMap<i32, Option<i64>>) {
        let mut tpl = TopicPartitionList::new();
        {
            let mut assignment = self.consumer.context().assignment();
            for (&partition, &offset) in &recorded {
                let Some(current) = assignment.get_mut(&partition) else {
                    continue; // no longer ours
                };
                *current = offset;
                let start = offset.map_or(Offset::Beginning, |o| Offset::Offset(o + 1));
                let _ = tpl.add_partition_offset(&self.topic, partition, start);
            }
        }
        // A partition that could not be sought would go on from where it was, and
        // the next commit would skip what the failed one covered: any error, even
        // for one partition, sends the collector through a fresh assignment, which
        // starts every partition at the lake's offsets.
        let failed = match self.consumer.seek_partitions(tpl, Duration::from_secs(10)) {
            Ok(sought) => sought
                .elements()
                .iter()
                .find_map(|e| e.error().err())
                .map(|err| err.to_string()),
            Err(err) => Some(err.to_string()),
        };
        if let Some(err) = failed {
            self.rejoin(&err);
        }
    }

    /// Leaves the group and joins again: the next assignment starts every
    /// partition at the offsets the lake records.
    pub(super) fn rejoin(&mut self, why: &str) {
        tracing::error!(%why, "cannot resume at the lake's offsets; leaving the group to re-read");
        self.consumer.unsubscribe();
        self.consumer.context().assignment().clear();
        if let Err(err) = self.consumer.subscribe(&[&self.topic]) {
            tracing::error!(%err, "cannot subscribe again");
        }
    }
}

/// Whether [`Collector::collect_flight`] waits for a flush still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wait {
    Yes,
    No,
}

/// Whether the partitions a landed flush covered are still assigned as they were.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Landing {
    /// Nothing changed since the flush started.
    InPlace,
    /// It landed during a rebalance; the new assignment read the lake afresh.
    AfterRebalance,
}
