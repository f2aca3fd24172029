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
//!
//! One file per job: [`collector`] the loop, [`buffers`] what it holds,
//! [`flush`] the flush in flight, [`context`] the rebalances and librdkafka's
//! reports, [`consumer_config`] the settings allot gives librdkafka.

use std::sync::Arc;
use std::time::Duration;

use allot_lake::compact::{BackgroundCompaction, CompactOptions, run_background_compaction};
use allot_lake::dedup::DedupWindow;
use allot_schemas::clock::Clock;
use allot_schemas::config::Config;
use allot_schemas::layout::LakeLocation;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::error::IngestError;
use crate::summary::IngestSummary;
use crate::writer::LakeWriter;

mod buffers;
mod collector;
mod consumer_config;
mod context;
mod flush;

use collector::Collector;

pub use consumer_config::{
    FETCH_QUEUE_BACKOFF_MS, QUEUED_MAX_MESSAGES_KBYTES, STATISTICS_INTERVAL_MS,
};

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

#[cfg(test)]
mod tests {
    //! The collector's loop against librdkafka's mock cluster and a local lake:
    //! what it commits, from which offsets it resumes, how it survives a failed
    //! flush, a fenced commit and partitions changing hands, and how it stops.

    use std::ops::Range;
    use std::time::Instant;

    use allot_lake::txns::AppOffset;
    use allot_schemas::clock::SystemClock;
    use allot_schemas::config::HumanDuration;
    use allot_schemas::layout::kafka_app_id;
    use rdkafka::ClientConfig;
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use tokio::runtime::Runtime;
    use tokio::task::JoinHandle;

    use crate::assemble::EventAssembler;
    use crate::writer::OffsetCommit;

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
                records: vec![AppOffset::new(app_id, 14)],
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
