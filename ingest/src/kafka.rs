//! The Kafka collector (`allot ingest --brokers B --topic T --group G`).
//!
//! Exactly once into the lake: each flush is one Delta commit that adds the new
//! files and records, per Kafka partition, the last offset it covers (a `txn`
//! action with app id `<group>-<topic>-<partition>`). On every assignment the
//! collector reads those offsets from the table and assigns each partition at the
//! offset after it; Kafka's committed offsets are written only for lag monitoring.
//! Before committing, the collector checks that the table still records the
//! offsets it started from; if another collector moved them (this one was paused
//! past its session and lost the partition), the commit is abandoned and its
//! files are never referenced. The check covers every commit up to the version
//! the commit takes, and only one writer can take a version
//! ([`allot_lake::append::LogAppender`]), so check and commit are atomic.
//!
//! Rejected events go to the dead-letter queue ([`crate::dead_letters`]) and to
//! `rejected_events`; the dead letters are acknowledged by the broker and the
//! rejected rows committed before the offsets that cover them are recorded, so a
//! rejected event is recorded at least once in both.
//!
//! Every client gets the configuration's `[kafka.properties]` (TLS, SASL, …). A
//! collector that cannot reach the cluster at start, or that the cluster refuses
//! (wrong credentials, an untrusted certificate), stops with librdkafka's reason.
//!
//! The consumer runs on a dedicated thread (librdkafka's rebalance callbacks run
//! inside `poll`). A flush is written and committed by a task on the runtime
//! while the thread goes on decoding the next batch; at most one flush is in
//! flight, and the next batch's offsets start where the flight's end. A failed
//! flight sends its partitions and the next batch's back to the offsets the lake
//! records. Before partitions are revoked the thread waits for the flight to
//! land, so a commit never follows a partition to its next owner.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use allot_lake::compact::{BackgroundCompaction, CompactOptions, run_background_compaction};
use allot_lake::dedup::DedupWindow;
use allot_schemas::clock::{Clock, SystemClock};
use allot_schemas::config::Config;
use allot_schemas::layout::{LakeLocation, Provenance, kafka_app_id};
use deltalake::kernel::Transaction;
use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::TopicPartitionListElem;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::assemble::EventAssembler;
use crate::client::{ClientErrors, client_config, fetch_topic_metadata};
use crate::dead_letters::{self, DeadLetter, DeadLetterQueue};
use crate::error::IngestError;
use crate::stages::StageClock;
use crate::summary::IngestSummary;
use crate::telemetry::{self, CommitOutcome};
use crate::writer::{LakeWriter, OffsetCommit, SharedAppender};

/// Environment variable of the crash test hook: when set to `N`, the collector
/// aborts the process after writing the files of its `N`-th flush and before
/// committing them, as a crash between upload and commit would. Only builds
/// with the `test-hooks` feature (the test suite's) read it.
#[cfg(feature = "test-hooks")]
pub const ABORT_BEFORE_COMMIT_ENV: &str = "ALLOT_TEST_ABORT_BEFORE_COMMIT";

/// The flush the crash test hook aborts before committing, if any.
fn abort_before_commit_flush() -> Option<u64> {
    #[cfg(feature = "test-hooks")]
    return std::env::var(ABORT_BEFORE_COMMIT_ENV)
        .ok()
        .and_then(|v| v.parse().ok());
    #[cfg(not(feature = "test-hooks"))]
    None
}

/// What a collector needs.
pub struct KafkaIngestOptions {
    /// Bootstrap servers.
    pub brokers: String,
    /// The topic of usage events.
    pub topic: String,
    /// The consumer group of the collector fleet.
    pub group: String,
    /// The lake to write to.
    pub lake: LakeLocation,
    /// Catalog, limits, batch sizes and extra librdkafka properties.
    pub config: Config,
    /// The clock for `future_timestamp` checks and `ingested_at`.
    pub clock: Option<Arc<dyn Clock>>,
}

/// Runs a collector until `cancel` fires, then flushes, commits and leaves the group.
pub async fn run_collector(
    options: KafkaIngestOptions,
    cancel: CancellationToken,
) -> Result<IngestSummary, IngestError> {
    let writer = LakeWriter::for_collector(
        &options.lake,
        DedupWindow::new(options.config.ingest.dedup_window.0),
    )
    .await?;
    let ingest = &options.config.ingest;
    let compaction = BackgroundCompaction {
        interval: ingest.compaction_interval.0,
        options: CompactOptions {
            lake: options.lake.clone(),
            target_file_bytes: ingest.compaction_target_bytes.0,
            min_files: ingest.compaction_min_files,
            catalog: options.config.catalog(),
            dedup_window: DedupWindow::new(ingest.dedup_window.0),
        },
    };
    let stop_compaction = cancel.child_token();
    let mut compactor = tokio::spawn(run_background_compaction(
        compaction,
        stop_compaction.clone(),
    ));
    let handle = Handle::current();
    let collected = tokio::task::spawn_blocking(move || {
        let mut collector = Collector::new(options, writer, handle)?;
        collector.run(&cancel)
    })
    .await
    .map_err(|source| IngestError::Worker {
        worker: "the collector's thread",
        source,
    });
    // A compaction cut short only leaves uncommitted files behind, which readers
    // never see; give a running one a moment to commit, then stop it.
    stop_compaction.cancel();
    if tokio::time::timeout(COMPACTION_STOP_GRACE, &mut compactor)
        .await
        .is_err()
    {
        compactor.abort();
    }
    collected?
}

/// How long a stopping collector waits for a background compaction to finish.
const COMPACTION_STOP_GRACE: Duration = Duration::from_secs(10);

/// Messages between two looks at the clock, the cancellation token and the flush
/// in flight (an empty poll always looks).
const HOUSEKEEPING_EVERY: u32 = 256;

/// How often the collector reports its buffered bytes.
const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// How often librdkafka reports statistics, from which lag is computed.
pub const STATISTICS_INTERVAL_MS: &str = "3000";

/// How long librdkafka waits before fetching again once its local queue was
/// full. Its default (1 s) makes a consumer that keeps up wait idle every time it
/// has drained the queue: it held a backlog to about 180,000 events/s here, while
/// 10 ms reads over 1.7 million a second. `kafka.properties` overrides it.
pub const FETCH_QUEUE_BACKOFF_MS: &str = "10";

/// What librdkafka may hold prefetched, in KiB of payload (its default is 64 MiB;
/// its bookkeeping about triples that in resident memory). With the short backoff
/// above, 8 MiB keeps the consumer fed: the benchmark ran as fast as with 32 MiB,
/// in about 80 MiB less memory.
pub const QUEUED_MAX_MESSAGES_KBYTES: &str = "8192";

/// The consumer's context: reacts to rebalances.
struct CollectorContext {
    handle: Handle,
    group: String,
    topic: String,
    /// The `usage_events` appender, which reads the recorded offsets.
    offsets: SharedAppender,
    /// Partition → offset the table recorded at assignment (`None`: nothing yet).
    assignment: Mutex<BTreeMap<i32, Option<i64>>>,
    /// Set when the assignment changed: the loop drops what it buffered.
    reset: AtomicBool,
    /// The flush being written and committed in the background, if any.
    flight: Mutex<Option<Flight>>,
    /// The errors librdkafka reported.
    errors: ClientErrors,
}

/// A flush handed to the runtime.
enum Flight {
    /// Still writing or committing.
    Running(tokio::task::JoinHandle<Landed>),
    /// Done (or its task failed), not yet looked at by the loop.
    Landed(Box<Result<Landed, IngestError>>),
}

/// What a finished flush hands back.
struct Landed {
    writer: LakeWriter,
    /// Per partition, what the flush covered.
    ranges: BTreeMap<i32, PartitionRange>,
    result: Result<crate::writer::AppendOutcome, IngestError>,
    took: Duration,
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
fn land(handle: &Handle, task: tokio::task::JoinHandle<Landed>) -> Result<Landed, IngestError> {
    handle.block_on(task).map_err(|source| IngestError::Worker {
        worker: "a flush",
        source,
    })
}

impl CollectorContext {
    /// The flush in flight, if any.
    fn flight(&self) -> std::sync::MutexGuard<'_, Option<Flight>> {
        self.flight.lock().expect("not poisoned")
    }

    /// Partition → offset the table recorded, for the partitions assigned.
    fn assignment(&self) -> std::sync::MutexGuard<'_, BTreeMap<i32, Option<i64>>> {
        self.assignment.lock().expect("not poisoned")
    }

    /// Reads the offsets the lake records for `partitions`.
    fn recorded_offsets(
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
struct PartitionRange {
    /// The offset the table recorded when this buffer started (`None`: nothing).
    recorded: Option<i64>,
    /// The last offset buffered.
    last: i64,
    /// Messages buffered from this partition.
    messages: usize,
}

struct Collector {
    /// Shared with the poll loop, so a polled message borrows it, not the
    /// collector, and is decoded in place.
    consumer: Arc<BaseConsumer<CollectorContext>>,
    dead_letter_queue: Arc<dyn DeadLetterQueue>,
    /// The writer, unless a flush in flight has it.
    writer: Option<LakeWriter>,
    assembler: EventAssembler,
    handle: Handle,
    topic: String,
    group: String,
    flush_rows: usize,
    flush_bytes: usize,
    flush_interval: Duration,
    /// Per partition: what the buffer covers.
    buffered: BTreeMap<i32, PartitionRange>,
    /// Per partition, the last offset of the flush in flight: where the
    /// buffer's ranges start.
    in_flight: BTreeMap<i32, i64>,
    /// The dead letters of what is buffered, delivered by its flush.
    dead_letters: Vec<DeadLetter>,
    buffer_started: Option<Instant>,
    flushes: u64,
    /// Failed flushes in a row, for the backoff.
    failures: u32,
    abort_before_commit: Option<u64>,
    summary: IngestSummary,
    /// The clock the assembler and the writer report their stages to.
    stages: Arc<StageClock>,
}

impl Collector {
    fn new(
        options: KafkaIngestOptions,
        writer: LakeWriter,
        handle: Handle,
    ) -> Result<Self, IngestError> {
        let kafka_error = |context: &str| {
            let context = context.to_string();
            move |source| IngestError::Kafka { context, source }
        };
        let kafka = &options.config.kafka;
        let consumer_defaults = [
            ("group.id", options.group.as_str()),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            ("partition.assignment.strategy", "range,roundrobin"),
            ("session.timeout.ms", "10000"),
            ("heartbeat.interval.ms", "1000"),
            ("statistics.interval.ms", STATISTICS_INTERVAL_MS),
            ("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS),
            ("queued.max.messages.kbytes", QUEUED_MAX_MESSAGES_KBYTES),
        ];
        let consumer_config =
            client_config(&options.brokers, &consumer_defaults, &kafka.properties);
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

    fn run(&mut self, cancel: &CancellationToken) -> Result<IngestSummary, IngestError> {
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

    /// Buffers one message unless it is at or before the offset already recorded
    /// (or covered by the flush in flight).
    fn accept(&mut self, partition: i32, offset: i64, payload: &[u8]) {
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
    fn drop_buffer(&mut self) {
        if let Err(err) = self.assembler.take() {
            tracing::error!(%err, "discarding the buffer");
        }
        self.buffered.clear();
        self.dead_letters.clear();
        self.buffer_started = None;
    }

    /// Hands what is buffered to a flush task, once the previous flight landed.
    fn start_flush(&mut self) -> Result<(), IngestError> {
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
        let txns: Vec<Transaction> = ranges
            .iter()
            .map(|(&p, range)| {
                Transaction::new(kafka_app_id(&self.group, &self.topic, p), range.last)
            })
            .collect();
        self.flushes += 1;
        let offsets = OffsetCommit {
            expected,
            txns,
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
    fn collect_flight(
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
    fn record_landed(&mut self, ranges: &BTreeMap<i32, PartitionRange>) {
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

    /// Seeks each partition to the offset after the one given (`None`: the
    /// beginning), which the lake records, and makes that the assignment's
    /// recorded offset.
    fn seek_to(&mut self, recorded: BTreeMap<i32, Option<i64>>) {
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
    fn rejoin(&mut self, why: &str) {
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
enum Wait {
    Yes,
    No,
}

/// Whether the partitions a landed flush covered are still assigned as they were.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Landing {
    /// Nothing changed since the flush started.
    InPlace,
    /// It landed during a rebalance; the new assignment read the lake afresh.
    AfterRebalance,
}

#[cfg(test)]
mod tests {
    //! The collector's loop against librdkafka's mock cluster and a local lake:
    //! what it commits, from which offsets it resumes, how it survives a failed
    //! flush, a fenced commit and partitions changing hands, and how it stops.

    use std::ops::Range;

    use allot_schemas::config::HumanDuration;
    use rdkafka::ClientConfig;
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use tokio::runtime::Runtime;
    use tokio::task::JoinHandle;

    use super::*;

    const TOPIC: &str = "usage";
    const GROUP: &str = "collectors";

    /// How long a test waits for the lake to reach an offset.
    const PATIENCE: Duration = Duration::from_secs(30);

    /// A mock cluster with the topic in `partitions` partitions.
    fn cluster(
        partitions: i32,
    ) -> (
        MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
        String,
    ) {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic(TOPIC, partitions, 1).unwrap();
        let brokers = cluster.bootstrap_servers();
        (cluster, brokers)
    }

    /// Produces the valid events numbered `events` of `tenant` to `partition`
    /// (each partition numbers its own event ids).
    fn produce(brokers: &str, partition: i32, tenant: &str, events: Range<usize>) {
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .create()
            .unwrap();
        let ts = chrono::Utc::now().to_rfc3339();
        for i in events {
            let payload = format!(
                r#"{{"event_id":"p{partition}-e{i}","tenant_id":"{tenant}","ts":"{ts}","metric":"compute_seconds","value":1}}"#
            );
            producer
                .send(
                    BaseRecord::<(), _>::to(TOPIC)
                        .partition(partition)
                        .payload(&payload),
                )
                .unwrap();
        }
        producer.flush(Duration::from_secs(10)).unwrap();
    }

    /// Options for a collector of `brokers` into `lake` that flushes quickly and
    /// whose group notices a member leaving within seconds.
    fn options(brokers: &str, lake: &LakeLocation) -> KafkaIngestOptions {
        let mut config = Config::default();
        config.kafka.dlq = false;
        for (key, value) in [
            ("session.timeout.ms", "3000"),
            ("heartbeat.interval.ms", "300"),
        ] {
            config
                .kafka
                .properties
                .insert(key.to_string(), value.to_string());
        }
        config.ingest.flush_interval = HumanDuration(Duration::from_millis(100));
        KafkaIngestOptions {
            brokers: brokers.to_string(),
            topic: TOPIC.to_string(),
            group: GROUP.to_string(),
            lake: lake.clone(),
            config,
            clock: None,
        }
    }

    /// The offset the lake records for `partition`, if any.
    async fn recorded(lake: &LakeLocation, partition: i32) -> Option<i64> {
        let writer = LakeWriter::for_collector(lake, DedupWindow::default())
            .await
            .unwrap();
        let appender = writer.usage_appender();
        let mut appender = appender.lock().await;
        appender
            .recorded_offsets(&[kafka_app_id(GROUP, TOPIC, partition)])
            .await
            .unwrap()[0]
    }

    /// A collector running on the runtime. Dropped (a test failed), it is
    /// cancelled, so that the runtime can shut down.
    struct Running {
        stop: tokio_util::sync::DropGuard,
        task: JoinHandle<Result<IngestSummary, IngestError>>,
    }

    impl Running {
        fn start(runtime: &Runtime, options: KafkaIngestOptions) -> Running {
            let cancel = CancellationToken::new();
            let task = runtime.spawn(run_collector(options, cancel.clone()));
            Running {
                stop: cancel.drop_guard(),
                task,
            }
        }

        /// Cancels the collector and returns what it reports (an error if it
        /// did not stop cleanly).
        fn stop(self, runtime: &Runtime) -> Result<IngestSummary, IngestError> {
            drop(self.stop);
            runtime.block_on(self.task).unwrap()
        }
    }

    /// Waits until the lake records `last` for each of `partitions`; the
    /// collectors must keep running meanwhile.
    fn wait_for(
        runtime: &Runtime,
        lake: &LakeLocation,
        partitions: &[i32],
        last: i64,
        running: &[&Running],
    ) {
        runtime.block_on(async {
            let deadline = Instant::now() + PATIENCE;
            for &partition in partitions {
                while recorded(lake, partition).await != Some(last) {
                    assert!(
                        Instant::now() < deadline,
                        "the lake never recorded {last} for partition {partition}"
                    );
                    for collector in running {
                        assert!(!collector.task.is_finished(), "a collector stopped early");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        });
    }

    /// Runs a collector until the lake records `last` for partition 0, then
    /// stops it.
    fn collect_until(
        runtime: &Runtime,
        brokers: &str,
        lake: &LakeLocation,
        last: i64,
    ) -> Result<IngestSummary, IngestError> {
        let collector = Running::start(runtime, options(brokers, lake));
        wait_for(runtime, lake, &[0], last, &[&collector]);
        collector.stop(runtime)
    }

    /// A local lake in a fresh directory.
    fn local_lake(dir: &tempfile::TempDir) -> LakeLocation {
        LakeLocation::parse(dir.path().join("lake").to_str().unwrap()).unwrap()
    }

    /// Events on the topic are committed once with their offsets, and a second
    /// collector resumes after them: it commits only the event produced since.
    #[test]
    fn a_collector_commits_each_event_once_and_the_next_resumes_after_it() {
        let (_cluster, brokers) = cluster(1);
        let dir = tempfile::tempdir().unwrap();
        let lake = local_lake(&dir);
        let runtime = Runtime::new().unwrap();

        produce(&brokers, 0, "acme", 0..10);
        let first = collect_until(&runtime, &brokers, &lake, 9).unwrap();
        assert_eq!(first.accepted, 10);

        produce(&brokers, 0, "acme", 10..11);
        let second = collect_until(&runtime, &brokers, &lake, 10).unwrap();
        assert_eq!(
            second.accepted, 1,
            "the second run re-read committed events"
        );
        assert_eq!(second.duplicates, 0);
    }

    /// A collector told to stop commits what it buffered before it returns:
    /// events short of every flush threshold are not left to the next owner.
    #[test]
    fn stopping_commits_what_is_buffered() {
        let (_cluster, brokers) = cluster(1);
        let dir = tempfile::tempdir().unwrap();
        let lake = local_lake(&dir);
        let runtime = Runtime::new().unwrap();
        let mut options = options(&brokers, &lake);
        options.config.ingest.flush_rows = 5;
        options.config.ingest.flush_interval = HumanDuration(Duration::from_secs(3600));

        // Five events fill a flush; the two after them (fetched with them) wait
        // for a threshold that never comes.
        produce(&brokers, 0, "acme", 0..7);
        let collector = Running::start(&runtime, options);
        wait_for(&runtime, &lake, &[0], 4, &[&collector]);
        let summary = collector.stop(&runtime).unwrap();

        assert_eq!(summary.accepted, 7);
        assert_eq!(runtime.block_on(recorded(&lake, 0)), Some(6));
    }

    /// A flush that cannot be written (its partition's directory is a file)
    /// commits nothing; the collector re-reads from the lake's offsets and
    /// retries, and once the lake is writable every event lands exactly once.
    #[test]
    fn a_failed_flush_is_retried_from_the_lakes_offsets() {
        let (_cluster, brokers) = cluster(1);
        let dir = tempfile::tempdir().unwrap();
        let lake = local_lake(&dir);
        let runtime = Runtime::new().unwrap();

        produce(&brokers, 0, "acme", 0..3);
        let collector = Running::start(&runtime, options(&brokers, &lake));
        wait_for(&runtime, &lake, &[0], 2, &[&collector]);

        let blocker = dir.path().join("lake/usage_events/tenant_id=blocked");
        std::fs::write(&blocker, b"not a directory").unwrap();
        produce(&brokers, 0, "blocked", 3..6);
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(
            runtime.block_on(recorded(&lake, 0)),
            Some(2),
            "a flush into an unwritable partition was committed"
        );
        assert!(
            !collector.task.is_finished(),
            "a failed flush stopped the collector"
        );

        std::fs::remove_file(&blocker).unwrap();
        wait_for(&runtime, &lake, &[0], 5, &[&collector]);
        let summary = collector.stop(&runtime).unwrap();
        assert_eq!(summary.accepted, 6);
        assert_eq!(summary.duplicates, 0);
    }

    /// When the lake records newer offsets than a collector started from (another
    /// collector took the partition meanwhile), the collector's commit is fenced:
    /// it commits none of what it buffered and resumes after the lake's offset.
    #[test]
    fn a_fenced_commit_drops_its_buffer_and_resumes_after_the_lakes_offset() {
        let (_cluster, brokers) = cluster(1);
        let dir = tempfile::tempdir().unwrap();
        let lake = local_lake(&dir);
        let runtime = Runtime::new().unwrap();

        produce(&brokers, 0, "acme", 0..10);
        let collector = Running::start(&runtime, options(&brokers, &lake));
        wait_for(&runtime, &lake, &[0], 9, &[&collector]);

        // Another owner of partition 0 records offsets 10..=14 as committed.
        runtime.block_on(async {
            let mut other = LakeWriter::for_collector(&lake, DedupWindow::default())
                .await
                .unwrap();
            let app_id = kafka_app_id(GROUP, TOPIC, 0);
            let nothing = EventAssembler::new(&Config::default(), Arc::new(SystemClock))
                .take()
                .unwrap();
            let offsets = OffsetCommit {
                expected: vec![(app_id.clone(), Some(9))],
                txns: vec![Transaction::new(app_id, 14)],
                abort_before_commit: false,
            };
            other.append_with_offsets(nothing, &offsets).await.unwrap();
        });
        produce(&brokers, 0, "acme", 10..20);
        wait_for(&runtime, &lake, &[0], 19, &[&collector]);
        let summary = collector.stop(&runtime).unwrap();

        assert_eq!(
            summary.accepted,
            10 + 5,
            "events 10..=14, which the lake records as another owner's, were committed again"
        );
    }

    /// Partitions change hands twice (a second collector joins, then the first
    /// leaves): between them the two collectors commit every event exactly once.
    #[test]
    fn partitions_change_hands_without_loss_or_double_commit() {
        let (_cluster, brokers) = cluster(2);
        let dir = tempfile::tempdir().unwrap();
        let lake = local_lake(&dir);
        let runtime = Runtime::new().unwrap();
        let both = [0, 1];
        let produce_both = |events: Range<usize>| {
            for partition in both {
                produce(&brokers, partition, "acme", events.clone());
            }
        };

        produce_both(0..20);
        let first = Running::start(&runtime, options(&brokers, &lake));
        wait_for(&runtime, &lake, &both, 19, &[&first]);

        // The second collector's join revokes the first one's partitions.
        let second = Running::start(&runtime, options(&brokers, &lake));
        for chunk in (20..40).step_by(4) {
            produce_both(chunk..chunk + 4);
            std::thread::sleep(Duration::from_millis(200));
        }
        wait_for(&runtime, &lake, &both, 39, &[&first, &second]);

        // The first leaves: the second is assigned both partitions.
        let first = first.stop(&runtime).unwrap();
        produce_both(40..60);
        wait_for(&runtime, &lake, &both, 59, &[&second]);
        let second = second.stop(&runtime).unwrap();

        assert!(
            second.accepted > 0,
            "the second collector never got a partition"
        );
        assert_eq!(first.accepted + second.accepted, 2 * 60);
        assert_eq!(first.duplicates + second.duplicates, 0);
    }

    /// A lake that cannot be written (a file where its directory should be)
    /// stops the collector with an error rather than consuming anything.
    #[test]
    fn an_unwritable_lake_is_an_error() {
        let (_cluster, brokers) = cluster(1);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("lake"), b"not a directory").unwrap();
        let lake = local_lake(&dir);
        let runtime = Runtime::new().unwrap();
        produce(&brokers, 0, "acme", 0..3);

        let result = runtime.block_on(async {
            let cancel = CancellationToken::new();
            let collector = tokio::spawn(run_collector(options(&brokers, &lake), cancel.clone()));
            tokio::time::timeout(PATIENCE, collector).await
        });
        assert!(result.unwrap().unwrap().is_err());
    }
}
